"""What sliding windows and PAMR cost per frame, as a ratio to the plain frame in the same
process, and the process's peak RSS.

    .venv/bin/python benchmarks/refine_cost.py [--sizes 1280x720 1920x1080] [--queries 5]
        [--model tiny|vit|scene] [--runs 3] [--threads 2] [--input-size 448]
        [--slide-input-size 336]

`locate` on a random frame with `presence_rule` off: plain (one forward), `slide 224`,
`refine pamr`, and both; median of --runs after a warm-up, torch on --threads threads.
--slide-input-size feeds the slide rows at another short side (the successors' 336).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gem_ros.cpu_name import cpu_model  # noqa: E402

MODELS = {
    'tiny': tuple(str(REPO / 'test' / 'fixtures' / f'gem-tiny-test.{e}') for e in ('json', 'pt')),
    'vit': ('ViT-B-16', 'none'),
    'scene': tuple(
        str(REPO / 'gem_ros' / 'eval' / 'weights' / f'scene-clip-s16.{e}') for e in ('json', 'pt')
    ),
}
QUERIES = ['cat', 'dog', 'cup', 'table', 'sky', 'chair', 'person', 'bottle']


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--sizes', nargs='+', default=['1280x720', '1920x1080'])
    ap.add_argument('--queries', type=int, default=5)
    ap.add_argument('--model', default='tiny', choices=list(MODELS))
    ap.add_argument('--method', default='sclip')
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--input-size', type=int, default=448)
    ap.add_argument('--slide-input-size', type=int, default=None)
    args = ap.parse_args()
    import torch

    import gem_ros.gem as gem

    torch.set_num_threads(args.threads)
    model = gem.load_model(*MODELS[args.model], method=args.method, device='cpu')
    queries = QUERIES[: args.queries]
    slide = dict(slide=224, input_size=args.slide_input_size or args.input_size)
    settings = {
        'plain': {},
        'slide 224': slide,
        'refine pamr': dict(pamr_steps=10),
        'slide + pamr': dict(slide, pamr_steps=10),
    }
    print(f'CPU: {cpu_model()}, torch {args.threads} threads; '
          f'{args.model} {args.method}, {len(queries)} queries, input {args.input_size} '
          f'(slide rows {slide["input_size"]}), median of {args.runs}')  # fmt: skip
    print('| frame | ' + ' | '.join(settings) + ' |')
    print('|---|' + '---|' * len(settings))
    for size in args.sizes:
        width, height = (int(v) for v in size.split('x'))
        image = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
        times = {}
        for name, extra in settings.items():
            extra = {'input_size': args.input_size, **extra}
            model.locate(image, queries, presence_rule='off', **extra)  # warm
            runs = []
            for _ in range(args.runs):
                started = time.perf_counter()
                model.locate(image, queries, presence_rule='off', **extra)
                runs.append(time.perf_counter() - started)
            times[name] = statistics.median(runs)
        plain = times['plain']
        cells = [f'{1000 * t:.0f} ms ({t / plain:.1f}x)' for t in times.values()]
        print(f'| {width}x{height} | ' + ' | '.join(cells) + ' |')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'peak RSS of this process: {peak:.0f} MiB')


if __name__ == '__main__':
    main()
