"""What the map of dense features (gem_ros/feature_map.py) costs on this machine: one frame's
lift and fusion against the model's own time for that frame, an ask at 10k, 100k and 1M
voxels, and the memory per voxel. Median of several runs, in one process.

    .venv/bin/python benchmarks/map_cost.py [--runs 5]

The frame: 640x480 with depth (a wall with noise), ViT-B-16 at input 448 (a 28x37 patch grid,
512-wide features, random weights: timing does not depend on them); the model's time is its
`features` forward on that frame. An ask: the query's presence in the views, its heat over
every voxel a view with it saw (here one view saw them all), and the grouping of the hot ones
(one thing of 500 voxels among random ones).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code
from gem_ros.cpu_name import cpu_model  # noqa: E402
from gem_ros.feature_map import FeatureMap, apply_pose, invert_pose, lift_patches  # noqa: E402
from gem_ros.queries import parse_queries  # noqa: E402
from gem_ros.settings import DEFAULT_BACKGROUND_PROMPTS  # noqa: E402

K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
POSE = ((1.0, 2.0, 0.5), (0.0, 0.0, 0.3826834, 0.9238795))


def _median_s(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def frame_cost(runs: int) -> tuple[float, float]:
    """(model seconds, lift + clear + fuse seconds) for one 640x480 frame."""
    import torch

    import gem_ros.gem as gem

    model = gem.load_model('ViT-B-16', 'none', device='cpu')
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pixels = model.preprocess(rgb)
    model.features(pixels)  # warm-up
    model_s = _median_s(lambda: model.features(pixels), runs)
    tokens = model.features(pixels)[0][0].float().numpy()
    depth = (3.0 + 0.01 * rng.standard_normal((480, 640))).astype(np.float32)
    fmap = FeatureMap(voxel_size=0.05)
    torch.set_num_threads(1)  # fusion runs beside the model: one core

    def fuse():
        points, features, colours = lift_patches(tokens, depth, K, rgb)
        fmap.clear_seen(invert_pose(POSE), depth, K)
        fmap.fuse(apply_pose(points, POSE), features, colours, 0.0, 'front')

    fuse()
    return model_s, _median_s(fuse, runs)


def ask_cost(voxels: int, runs: int, dim: int = 512) -> float:
    rng = np.random.default_rng(1)
    fmap = FeatureMap(voxel_size=0.05, max_voxels=voxels)
    side = int(np.ceil(voxels ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing='ij'), -1).reshape(-1, 3)
    points = (grid[:voxels] + 0.5) * 0.05
    features = rng.standard_normal((voxels, dim)).astype(np.float32)
    text = features[0] / np.linalg.norm(features[0])
    features[:500] = text + 0.1 * features[:500] / np.sqrt(dim)  # one thing: 500 voxels
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    # One view that saw them all and has the query (the ask's whole path runs).
    fmap.fuse(points, features, np.zeros((voxels, 3), np.uint8), 0.0, 'front', text)
    # As many background prompts as the node's default (each is a text the heat compares).
    backgrounds = rng.standard_normal((len(parse_queries(DEFAULT_BACKGROUND_PROMPTS)), dim))
    backgrounds = backgrounds.astype(np.float32)
    backgrounds /= np.linalg.norm(backgrounds, axis=1, keepdims=True)
    places = fmap.ask(text, backgrounds, 100.0)
    assert places and places[0].voxels >= 400, places  # the thing, found
    return _median_s(lambda: fmap.ask(text, backgrounds, 100.0), runs)


def full_map_fuse_cost(runs: int, voxels: int = 100_000, fresh: int = 1200, dim: int = 512):
    """One frame's fusion into a map already at its budget: `fresh` new voxels (a 640x480
    frame at 448 has 1200 patches), the same number of the oldest evicted."""
    rng = np.random.default_rng(0)
    fmap = FeatureMap(voxel_size=0.05, max_voxels=voxels)

    def frame():
        points = rng.uniform(0, 40, (fresh, 3))
        features = rng.standard_normal((fresh, dim)).astype(np.float32)
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        return points, features, np.zeros((fresh, 3), np.uint8)

    stamp = 0.0
    while len(fmap) < voxels:
        stamp += 1
        fmap.fuse(*frame(), stamp, 'a')
    frames = [frame() for _ in range(max(runs, 5) * 3)]

    def one():
        nonlocal stamp
        stamp += 1
        fmap.fuse(*frames[int(stamp) % len(frames)], stamp, 'a')

    return _median_s(one, max(runs, 5) * 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    args = ap.parse_args()
    print(f'CPU: {cpu_model()}; median of {args.runs} runs')
    model_s, fuse_s = frame_cost(args.runs)
    print(
        f'one 640x480 frame: model {model_s * 1e3:.0f} ms, lift + clear + fuse '
        f'{fuse_s * 1e3:.1f} ms ({fuse_s / model_s:.1%} of the model)'
    )
    for voxels in (10_000, 100_000, 1_000_000):
        print(f'ask at {voxels:>9,} voxels: {ask_cost(voxels, args.runs) * 1e3:.1f} ms', flush=True)
    print(
        f'a frame into a full map of 100,000 voxels: {full_map_fuse_cost(args.runs) * 1e3:.1f} ms'
    )
    print(f'memory per voxel (512-wide features): {FeatureMap.bytes_per_voxel(512)} bytes')
    return 0


if __name__ == '__main__':
    sys.exit(main())
