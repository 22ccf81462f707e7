"""`gem-ros bag` against `gem-ros locate` on the same frames: frames per second of each.

    python benchmarks/bag.py                    # ViT-B-16 random weights, 640x480, 20 frames
    python benchmarks/bag.py --frames 40 --input-size 448

Both commands run as users run them (subprocesses), over the same frames: a bag of rgb8
images and the same images as PNG files. Each runs with all frames and with one, and the
difference gives the time per frame without start-up (imports, model load); the median of
--rounds such pairs is printed, and bag's rate as a ratio to locate's.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--input-size", default="224")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model = ["--model", args.model, "--pretrained", "none", "--device", "cpu"]
    model += ["--input-size", args.input_size]
    gem = [sys.executable, "-m", "gem_ros.cli"]
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
