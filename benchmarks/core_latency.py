"""Latency of one GEM frame against a plain open_clip forward of the same model and input.

    python benchmarks/core_latency.py                      # ViT-B-16, 448x448, CPU
    python benchmarks/core_latency.py --device cuda --precision fp16 --repeats 50
    python benchmarks/core_latency.py --method all --queries 1     # every method's cost

Random weights (timing does not depend on them). Runs are interleaved (baseline, then each
query count, round after round) so drift of a shared machine hits all alike; each figure is
the median over rounds, and the ratio is to the plain forward measured in the same process.
Presence: a whole `locate` frame (image in, detections out) with presence 'image' against the
same with presence 'off'; the ratio is what the presence decision costs a frame.
Text: encoding --text-queries new queries (cache emptied each round; what a query change
costs), as a ratio to open_clip's encode_text of the same tokenized prompts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout's code
import gem_ros.gem as gem  # noqa: E402
from gem_ros.gem.text import TextEmbeddingCache  # noqa: E402


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--queries", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument(
        "--method", nargs="+", default=["gem"], choices=(*gem.METHODS, "all"), help="one or more"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--text-queries", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    methods = gem.METHODS if "all" in args.method else list(dict.fromkeys(args.method))
    models = {
        method: gem.load_model(
            args.model,
            "none",
            method=method,
            device=args.device,
            precision=args.precision,
            input_size=args.size,
        )
        for method in methods
    }
    model = models[methods[0]]  # presence and text are measured on the first
    plain = open_clip.create_model(
        args.model, pretrained=None, device=model.device, force_image_size=args.size
    ).eval()
    pixels = torch.randn(1, 3, args.size, args.size, device=model.device)
    words = ["red mug", "person", "chair", "table", "dog", "cat", "laptop", "bottle"]
    query_sets = {n: [f"{words[i % len(words)]} {i}" for i in range(n)] for n in args.queries}
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    @torch.inference_mode()
    def baseline():
        with model.autocast():
            plain.encode_image(pixels)

    tokenizer = open_clip.get_tokenizer(args.model)
    text_queries = [f"{words[i % len(words)]} {i}" for i in range(args.text_queries)]
    prompts = [model.templates[0].format(q) for q in text_queries]

    @torch.inference_mode()
    def text_baseline():
        with model.autocast():
            plain.encode_text(tokenizer(prompts).to(model.device))

    def text_ours():  # a query change: a cache that holds none of them yet
        fresh = TextEmbeddingCache(model.clip.encode_text, tokenizer, 77, model.device)
        with torch.inference_mode(), model.autocast():
            fresh(text_queries, model.templates)

    runs = {"open_clip encode_image": baseline}
    for method, m in models.items():
        for n, qs in query_sets.items():
            runs[f"{method} heatmaps, {n} quer{'y' if n == 1 else 'ies'}"] = lambda qs=qs, m=m: (
                m.heatmaps(pixels, qs)
            )
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), np.uint8)
    presence_runs = {}
    for n, qs in query_sets.items():
        for rule in ("off", "image"):
            presence_runs[(n, rule)] = (
                f"locate, {n} quer{'y' if n == 1 else 'ies'}, presence {rule}"
            )
            runs[presence_runs[(n, rule)]] = lambda qs=qs, rule=rule: model.locate(
                image, qs, presence_rule=rule
            )
    text_runs = {
        "open_clip encode_text": text_baseline,
        f"gem_ros encode_text, {args.text_queries} new queries": text_ours,
    }
    runs.update(text_runs)
    for fn in runs.values():  # warm-up: kernels, allocator, text cache
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(_timed(fn, sync))

    base = statistics.median(times["open_clip encode_image"])
    text_base = statistics.median(times["open_clip encode_text"])
    one = statistics.median(next(v for k, v in times.items() if k != "open_clip encode_image"))
    print(
        f"{args.model} {args.size}x{args.size} {model.device} {args.precision}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'run':34s} {'ms':>9s} {'x plain':>8s} {'x 1st':>7s}")
    for name, ts in times.items():
        if name in text_runs or name in presence_runs.values():
            continue
        med = statistics.median(ts)
        print(f"{name:34s} {med * 1e3:9.1f} {med / base:8.3f} {med / one:7.3f}")
    print(f"\n{'presence cost per frame':34s} {'x off':>8s}")
    for n in query_sets:
        on, off = (statistics.median(times[presence_runs[(n, r)]]) for r in ("image", "off"))
        print(f"{f'{n} quer' + ('y' if n == 1 else 'ies'):34s} {on / off:8.3f}")
    print(f"\n{'text, ' + str(args.text_queries) + ' prompts':34s} {'ms':>9s} {'x open_clip':>11s}")
    for name in text_runs:
        med = statistics.median(times[name])
        print(f"{name:34s} {med * 1e3:9.1f} {med / text_base:11.3f}")


if __name__ == "__main__":
    main()
