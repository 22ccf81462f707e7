"""`gem-ros bag` against `gem-ros locate` on the same frames: frames per second of each; with
--ray, a set of bags on a local Ray instance against one bag serially.

    python benchmarks/bag.py                    # ViT-B-16 random weights, 640x480, 20 frames
    python benchmarks/bag.py --frames 40 --input-size 448
    python benchmarks/bag.py --ray --frames 10  # 1 bag serially; 4 bags on Ray, 1 and 2 workers

Both commands run as users run them (subprocesses), over the same frames: a bag of rgb8
images and the same images as PNG files. Each runs with all frames and with one, and the
difference gives the time per frame without start-up (imports, model load); the median of
--rounds such pairs is printed, and bag's rate as a ratio to locate's.

With --ray: `gem-ros bag` over a set (OUT/<name> per bag) of 1 bag serially, and of --bags
bags with --ray (a local Ray instance, started and stopped by each run) and 1 and 2 workers,
each --frames long. The run's own summary (OUT/summary.json) gives Ray's start-up on its own
and the rest: the actors' start (imports, model load) and the labelling. Frames/s is the set's
frames over that rest; the median of --rounds runs is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))
from test_bag import write_bag  # noqa: E402  (the tests' bag writer)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def summary(command: list[str], out: Path) -> dict:
    """Run a set of bags to `out`; its OUT/summary.json. One torch thread, as a Ray actor of
    1 CPU has (Ray sets OMP_NUM_THREADS to its CPUs): the serial run the same, per CPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [*command, "-o", str(out)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def ray_main(args, gem: list[str], model: list[str]) -> None:
    runs = {"1 bag, serial": (1, []), **{
        f"{args.bags} bags, --ray, {n} worker{'s' if n > 1 else ''}": (
            args.bags, ["--ray", "--workers", str(n)]
        )
        for n in (1, 2)
    }}  # fmt: skip
    measured = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bags = [
            write_bag(tmp / "in" / f"bag{k}", args.frames, size=(480, 640))
            for k in range(args.bags)
        ]
        one = tmp / "one.txt"  # a list of one bag: a set, with its summary, run serially
        one.write_text(f"{bags[0]}\n")
        for r in range(args.rounds):
            for k, (name, (count, flags)) in enumerate(runs.items()):
                out = tmp / f"out{r}_{k}"
                inputs = [one] if count == 1 else bags
                command = [*gem, "bag", *map(str, inputs), "-q", "red mug", *model]
                measured[name].append(summary([*command, *flags], out))
    print(
        f"{args.model} at {args.input_size}, 640x480 frames, bags of {args.frames} frames, "
        f"median of {args.rounds} runs; 1 torch thread per process (a Ray actor's 1 CPU)"
    )
    print("| run | frames | Ray start-up s | rest s | frames/s |\n|---|---|---|---|---|")
    for name, found in measured.items():
        startup = statistics.median(s.get("ray_startup_seconds", 0.0) for s in found)
        rest = statistics.median(s["seconds"] - s.get("ray_startup_seconds", 0.0) for s in found)
        rate = statistics.median(
            s["frames"] / (s["seconds"] - s.get("ray_startup_seconds", 0.0)) for s in found
        )
        ray_start = f"{startup:.1f}" if "ray" in name else "-"
        print(f"| {name} | {found[0]['frames']} | {ray_start} | {rest:.1f} | {rate:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--input-size", default="224")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ray", action="store_true", help="a set of bags on a local Ray instead")
    ap.add_argument("--bags", type=int, default=4, help="bags in the --ray runs")
    args = ap.parse_args()
    model = ["--model", args.model, "--pretrained", "none", "--device", "cpu"]
    model += ["--input-size", args.input_size]
    gem = [sys.executable, "-m", "gem_ros.cli"]
    if args.ray:
        ray_main(args, gem, model)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        images = []
        for i in range(args.frames):
            path = tmp / f"frame_{i:04d}.png"
            PILImage.fromarray(rng.integers(0, 255, (480, 640, 3), np.uint8)).save(path)
            images.append(str(path))
        bags = {n: write_bag(tmp / f"bag{n}", n, size=(480, 640)) for n in (1, args.frames)}
        per_frame = {"bag": [], "locate": []}
        for r in range(args.rounds):
            for n in (1, args.frames):
                out = tmp / f"out{r}_{n}"
                bag = timed([*gem, "bag", str(bags[n]), "-q", "red mug", "-o", f"{out}b", *model])
                loc = timed(
                    [
                        *gem,
                        "locate",
                        *images[:n],
                        "-q",
                        "red mug",
                        "-o",
                        f"{out}l",
                        "--quiet",
                        *model,
                    ]
                )
                if n == 1:
                    one = (bag, loc)
                else:
                    per_frame["bag"].append((bag - one[0]) / (n - 1))
                    per_frame["locate"].append((loc - one[1]) / (n - 1))
    bag, loc = (statistics.median(per_frame[k]) for k in ("bag", "locate"))
    print(
        f"{args.model} at {args.input_size}, 640x480 frames, {args.frames} frames, "
        f"median of {args.rounds} rounds"
    )
    print("| command | s/frame | frames/s |\n|---|---|---|")
    print(f"| gem-ros locate (PNG files) | {loc:.3f} | {1 / loc:.2f} |")
    print(f"| gem-ros bag (rgb8 bag) | {bag:.3f} | {1 / bag:.2f} ({loc / bag:.2f}x locate) |")


if __name__ == "__main__":
    main()
