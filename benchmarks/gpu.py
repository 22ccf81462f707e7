"""The GPU table: frames per second of GEM (and plain CLIP) on a CUDA GPU, for torch fp32,
torch fp16, onnxruntime (CUDA / TensorRT execution providers) and backend tensorrt fp16, each
with its max |difference| in patch logits from torch fp32, and the ratio to open_clip's plain
fp32 forward measured in the same rounds. ViT-B-16 at 448 and ViT-B-32 at 288, random
weights (speed does not depend on them).

    python benchmarks/gpu.py                  # where a CUDA GPU is; says so and exits 2 if none
    python benchmarks/gpu.py --rounds 20 --method gem

Paths whose package is not installed (onnxruntime, tensorrt) are left out of the table, and
the header says which. One path's model is loaded at a time (all at once was out of memory on
an 8 GB Orin). TensorRT builds its engines before timing, into the real graph cache
(~/.cache/gem_ros/onnx, GEM_ROS_GRAPH_CACHE): minutes once, then read back on every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import run  # noqa: E402  (the same measurement as the CPU table)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gem_ros.gem as gem  # noqa: E402
from gem_ros.gem.backends import onnxruntime_available, tensorrt_available  # noqa: E402

SHAPES = (("ViT-B-16", 448), ("ViT-B-32", 288))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", nargs="+", default=["gem", "clip"], choices=gem.METHODS)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "no CUDA device here: the GPU table needs one (the CPU table: benchmarks/backends.py)"
        )
        return 2
    missing = [
        name
        for name, ok in (
            ("onnxruntime", onnxruntime_available()),
            ("tensorrt", tensorrt_available()),
        )
        if not ok
    ]
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}; not installed: {missing or 'none'}"
    )
    for model_name, size in SHAPES:
        run(model_name, size, "cuda", args.method, args.rounds, keep_cache=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
