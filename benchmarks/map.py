"""The map of dense features on benchmarks/memory.py's rendered rooms, driven through with no
query active, then asked every colour: how many present balls it finds and how far from their
surface, how many places are false, how often an absent colour is "not found"; and the memory
of sightings asked the same, which cannot answer (nothing was asked during the drive).

    .venv/bin/python benchmarks/map.py [--sequences 3] [--frames 120] [--seed 3]

The rooms, the camera's turn, its TF at 50 Hz (a tf2_ros.Buffer, looked up between samples),
colour and depth with 1 cm noise are memory.py's, frame for frame. Each frame: the feature
source's patch tokens and image embedding, the pose from TF, and `FeatureMap.take_view` with
the node's defaults (map_voxel_size, map_max_voxels, depth_min/max): the node's own code from
the frame's tokens on, DDS left out. Afterwards each of the seven colours is asked
(`FeatureMap.ask`, the node's background prompts, at most 5 places).

Per ball seen (its centre in view in some frame): found when a place of its colour is within
0.3 m of its surface (error: that distance, cm); false places: places farther than 0.3 m from
the ball of their colour (every place of an absent colour). Sources of features:
- oracle: each patch's token is the scene CLIP's text embedding of what the rendering shows
  there (a ball's colour, else "wall"), with the frame's real image embedding: what depth, TF,
  lifting, fusion and asking give alone;
- the scene CLIP's GEM tokens at 224 px and at 336 px (the whole input: sliding windows do not
  change the tokens the map is given, only the frames' own heatmaps).
Nothing here was tuned on the result.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]

from memory import (  # noqa: E402
    FRAME_HZ,
    HEIGHT,
    HIT_M,
    WIDTH,
    K,
    camera_pose,
    default,
    pose_at,
    render,
    scene_model,
    surface_distance,
    tf_buffer,
    world,
)

from gem_ros.cpu_name import cpu_model  # noqa: E402
from gem_ros.eval.scenes import COLOURS, _background  # noqa: E402
from gem_ros.feature_map import FeatureMap, query_text  # noqa: E402
from gem_ros.geometry import depth_to_metres  # noqa: E402
from gem_ros.settings import DEFAULT_BACKGROUND_PROMPTS  # noqa: E402

SOURCES = {
    'oracle (rendered labels)': {'input_size': 224},
    'scene CLIP, 224 px': {'input_size': 224},
    'scene CLIP, 336 px': {'input_size': 336},
    # The successors' inference: windows of the model's own size over a larger input.
    'scene CLIP, windows of 224 at stride 112 over 448 px': {
        'input_size': 448,
        'slide': 224,
        'slide_stride': 112,
    },
}


def oracle_tokens(tokens, visible, words: dict) -> np.ndarray:
    """Each patch: the text embedding of the rendering's label at its centre ('wall' else)."""
    h, w, _ = tokens.shape
    rows = ((np.arange(h) + 0.5) * HEIGHT / h).astype(int)
    cols = ((np.arange(w) + 0.5) * WIDTH / w).astype(int)
    out = np.broadcast_to(words['wall'], tokens.shape).copy()
    for colour, (mask, _, _) in visible.items():
        out[mask[rows][:, cols]] = words[colour]
    return out


def drive(model, rng, frames: int, source: str, options: dict, words, timings):
    balls = world(rng)
    background = _background(rng, WIDTH, WIDTH)[:HEIGHT]
    period = frames / FRAME_HZ
    buffer = tf_buffer(period)
    fmap = FeatureMap(default('map_voxel_size'), default('map_max_voxels'))
    depth_range = (default('depth_min'), default('depth_max'))
    seen = set()
    for k in range(frames):
        t = (k + 0.5) / FRAME_HZ
        R, c = camera_pose(t, period)
        rgb, depth, in_view, visible = render(balls, R, c, background, rng)
        seen.update(in_view)
        started = time.perf_counter()
        out = [None]
        model.locate_batch([rgb], [[]], tokens_out=out, **options)  # no query
        tokens, embedding = out[0]
        timings['model'].append(time.perf_counter() - started)
        if source.startswith('oracle'):
            tokens = oracle_tokens(tokens, visible, words)
        depth = depth_to_metres(depth.astype(np.float32), '32FC1')  # as the node's depth_view
        started = time.perf_counter()
        fmap.take_view(
            tokens, (depth, K), rgb, pose_at(buffer, t), t, 'camera',
            embedding=embedding, depth_range=depth_range,
        )  # fmt: skip
        timings['fusion'].append(time.perf_counter() - started)
    return balls, seen, fmap


def ask_all(model, fmap, timings) -> dict:
    answers = {}
    for colour in COLOURS:
        started = time.perf_counter()
        text, rivals = query_text(model, colour, DEFAULT_BACKGROUND_PROMPTS)
        answers[colour] = fmap.ask(text, rivals, model.logit_scale, 5)
        timings['ask'].append(time.perf_counter() - started)
    return answers


def score(balls, seen, answers, tally) -> None:
    truth = {colour: (centre, radius) for colour, centre, radius in balls}
    for colour, places in answers.items():
        ball = truth.get(colour)
        if ball is None:
            tally['absent'] += 1
            tally['absent not found'] += not places
        tally['places'] += len(places)
        tally['false'] += sum(
            ball is None or surface_distance(p.position, *ball) > HIT_M for p in places
        )
    for colour, centre, radius in balls:
        if colour not in seen:
            continue
        tally['seen'] += 1
        near = [surface_distance(p.position, centre, radius) for p in answers[colour]]
        hits = [d for d in near if d <= HIT_M]
        tally['best right'] += bool(near) and near[0] <= HIT_M
        if hits:
            tally['found'] += 1
            tally['errors'].append(100 * min(hits))


def row(name: str, t: dict, timings: dict) -> str:
    errors = t['errors']
    error = f'{statistics.median(errors):.1f} / {np.percentile(errors, 90):.1f}' if errors else '-'
    model, fusion = (statistics.median(timings[k]) for k in ('model', 'fusion'))
    return (
        f"| {name} | {t['seen']} | {t['found']} ({100 * t['found'] / max(t['seen'], 1):.0f} %) "
        f"| {error} | {t['best right']} of {t['seen']} | {t['places']} | {t['false']} | "
        f"{t['absent not found']} of {t['absent']} | {1e3 * fusion:.1f} ms "
        f"({fusion / model:.0%} of the model's {1e3 * model:.0f} ms) | "
        f"{1e3 * statistics.median(timings['ask']):.0f} ms |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--sequences', type=int, default=3)
    ap.add_argument('--frames', type=int, default=120)
    ap.add_argument('--seed', type=int, default=3)
    ap.add_argument('--only', default='', help='the sources whose name holds this')
    args = ap.parse_args()
    model = scene_model()
    names = ['wall', *COLOURS]
    words = dict(zip(names, model.encode_text(names).numpy()))
    print(
        f'CPU: {cpu_model()}, 1 torch thread; '
        f'{args.sequences} sequences of {args.frames} frames ({WIDTH}x{HEIGHT}), no query '
        f'during the drive, then {len(COLOURS)} colours asked (5 balls), seed {args.seed}'
    )
    print(
        '| features from | balls seen | found within 0.3 m (recall) | error median / 90th pct '
        '(cm) | best place on the ball | places | false places | absent colours "not found" '
        '| fusion per frame | ask |'
    )
    print('|---|---|---|---|---|---|---|---|---|---|')
    for name, options in SOURCES.items():
        if args.only not in name:
            continue
        rng = np.random.default_rng(args.seed)  # the same sequences for each
        timings = {'model': [], 'fusion': [], 'ask': []}
        tally = dict.fromkeys(
            ('seen', 'found', 'best right', 'places', 'false', 'absent', 'absent not found'), 0
        )
        tally['errors'] = []
        for _ in range(args.sequences):
            balls, seen, fmap = drive(model, rng, args.frames, name, options, words, timings)
            score(balls, seen, ask_all(model, fmap, timings), tally)
        print(row(name, tally, timings), flush=True)
    print(
        '| memory of sightings (~/recall), the same drives | no query was active: it holds '
        'nothing, every colour "not found" (benchmarks/memory.py: what it finds when asked '
        'during the drive) |'
    )


if __name__ == '__main__':
    main()
