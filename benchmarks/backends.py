"""Each backend and precision against open_clip's plain fp32 forward, in one process (on a
CUDA machine, benchmarks/gpu.py runs the same measurement for the GPU paths).

    python benchmarks/backends.py                         # ViT-B-16 at 448 on the CPU

Random weights (timing does not depend on them). The paths run interleaved, round after round,
so drift of a shared machine hits all alike; each figure is the median over rounds of the
visual side (pixels in, normalised patch tokens and image embedding out), and the ratio is to
open_clip's `encode_image` in fp32 under inference mode measured in the same rounds. `max
diff` is the largest |difference| of patch logits (one query) from the same method in torch
fp32: what a path changes in the answer. Graph export for onnxruntime happens before timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout's code
import gem_ros.gem as gem  # noqa: E402
from gem_ros.cpu_name import cpu_model  # noqa: E402
from gem_ros.gem.backends import onnxruntime_available, tensorrt_available  # noqa: E402
from gem_ros.gem.loading import cpu_bf16  # noqa: E402


def paths(device: str, methods: list[str]) -> list[tuple[str, str, str, str]]:
    """(label, method, backend, precision) of every path this machine can run."""
    out = []
    precisions = ["fp32", "fp16"] if device == "cuda" else ["fp32", "bf16"]
    for method in methods:
        for precision in precisions:
            out.append((f"{method} torch {precision}", method, "torch", precision))
        if onnxruntime_available():
            out.append((f"{method} onnxruntime fp32", method, "onnxruntime", "fp32"))
        if device == "cuda" and tensorrt_available():
            out.append((f"{method} tensorrt fp16", method, "tensorrt", "fp16"))
    return out


def run(
    model_name: str, size: int, device: str, methods: list[str], rounds: int, keep_cache=False
) -> None:
    """keep_cache: graphs and engines in the real cache (benchmarks/gpu.py: an engine build
    takes minutes, once); otherwise a temporary folder, as exported graphs are hundreds of MB
    and the CPU table is rerun at will."""
    if keep_cache:
        _run(model_name, size, device, methods, rounds, None)
        return
    with tempfile.TemporaryDirectory(prefix="gem_ros_bench_graphs_") as cache:
        _run(model_name, size, device, methods, rounds, cache)


def _run(model_name: str, size: int, device: str, methods: list[str], rounds: int, cache):
    """One path loaded at a time (every path's model at once was 8 CLIPs plus engines: out of
    memory on an 8 GB Orin), each timed in rounds interleaved with open_clip's plain forward,
    the yardstick its ratio is taken against."""
    plain = open_clip.create_model(
        model_name, pretrained=None, device=device, force_image_size=size
    ).eval()
    pixels = torch.randn(1, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    # open_clip's own forward in the low precision too: the yardstick of "GEM keeps its
    # speed-up" (GEM low / plain low against GEM fp32 / plain fp32).
    low = torch.float16 if device == "cuda" else torch.bfloat16
    low_name = "fp16" if device == "cuda" else "bf16"

    def plain_fp32():
        plain.encode_image(pixels)

    def plain_low():
        with torch.autocast(device, dtype=low):
            plain.encode_image(pixels)

    with torch.inference_mode():
        plain_fp32()
        plain_low()
    times = {"open_clip fp32": [], f"open_clip {low_name}": []}
    ratios, diffs, reference = {}, {}, {}
    for label, method, backend, precision in paths(device, methods):
        torch.manual_seed(0)  # the same random weights in every path
        model = gem.load_model(
            settings=model_name,
            pretrained="none",
            method=method,
            backend=backend,
            precision=precision,
            device=device,
            graph_cache_dir=cache,
        )
        with torch.inference_mode():
            model.features(pixels, image=True)  # warm-up; graph backends build here
            samples, yardstick = [], []
            for _ in range(rounds):
                yardstick.append(timed(plain_fp32))
                times["open_clip fp32"].append(yardstick[-1])
                times[f"open_clip {low_name}"].append(timed(plain_low))
                samples.append(timed(lambda m=model: m.features(pixels, image=True)))
            logits = model.patch_logits(pixels, ["a red mug"])
        reference.setdefault(method, logits)  # the first path of a method: torch fp32
        diffs[label] = (logits - reference[method]).abs().max().item()
        times[label] = samples
        ratios[label] = statistics.median(s / y for s, y in zip(samples, yardstick))
        del model, logits
        if device == "cuda":
            torch.cuda.empty_cache()
    base = statistics.median(times["open_clip fp32"])
    where = torch.cuda.get_device_name() if device == "cuda" else f"{cpu_model()}"
    amx = cpu_bf16() or "no native bf16"
    print(
        f"\n{model_name} at {size}x{size}, {device} ({where}; {amx}; "
        f"{torch.get_num_threads()} threads), median of {rounds} rounds per path, each "
        "round against open_clip fp32 run just before it"
    )
    print("| path | ms | x open_clip fp32 | frames/s | max diff |\n|---|---|---|---|---|")
    print(f"| open_clip encode_image fp32 | {base * 1e3:.1f} | 1.00 | {1 / base:.1f} | |")
    t_low = statistics.median(times[f"open_clip {low_name}"])
    print(
        f"| open_clip encode_image {low_name} | {t_low * 1e3:.1f} | {t_low / base:.2f} | "
        f"{1 / t_low:.1f} | |"
    )
    for label, ratio in ratios.items():
        t = statistics.median(times[label])
        print(f"| {label} | {t * 1e3:.1f} | {ratio:.2f} | {1 / t:.1f} | {diffs[label]:.1e} |")
    for method in methods:  # each method against open_clip in the same precision
        for name, yardstick in (("fp32", base), (low_name, t_low)):
            label = f"{method} torch {name}"
            if label in times:
                ratio = statistics.median(times[label]) / yardstick
                print(f"{label}: {ratio:.2f}x open_clip encode_image {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--method", nargs="+", default=["gem", "clip"], choices=gem.METHODS)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.model, args.size, "cpu", args.method, args.rounds)


if __name__ == "__main__":
    main()
