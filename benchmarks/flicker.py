"""Presence flicker with and without held presence (gem_ros.gem.hold), on generated sequences.

    .venv/bin/python benchmarks/flicker.py [--frames 300] [--sequences 4] [--seed 7]

Each sequence is a camera on a fixed textured background (gem_ros.eval.scenes) with three
coloured shapes that enter, move and leave on their own schedules, and per-frame noise
(sensor noise, a brightness change, the object's colour jittered). Every frame runs the
shipped scene CLIP (`gem_ros/eval/weights`, which knows colour words) with all seven colour
queries: three come and go, four are never there. Per query and sequence it counts the
found/absent flips per 100 frames, the frames whose decision is wrong, and the delay from an
object's entry or exit to the first frame that decides it, for the per-frame decision
(confidence >= presence_threshold) and for held presence (the node's default hold settings).
Objects are small (the radii of `gem-ros eval scenes --radii 0.04 0.08`), so that confidences
sit near the threshold; nothing here was tuned on the result.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gem_ros.cpu_name import cpu_model  # noqa: E402
from gem_ros.eval.scenes import COLOURS, SHAPES, _background, draw_shape_mask  # noqa: E402
from gem_ros.gem.hold import PresenceHold, judge_threshold  # noqa: E402
from gem_ros.settings import HoldSettings  # noqa: E402

WEIGHTS = REPO / 'gem_ros' / 'eval' / 'weights'
SIZE = 224


def sequence(rng: np.random.Generator, frames: int):
    """Frames (RGB uint8) and, per colour, whether it is in each frame."""
    background = _background(rng, SIZE, SIZE)
    colours = list(COLOURS)
    present = rng.choice(len(colours), 3, replace=False)
    movers = []
    for index in present:
        start = int(rng.integers(0, frames // 2))
        stop = int(rng.integers(start + frames // 6, frames + frames // 4))
        radius = rng.uniform(0.04, 0.08) * SIZE
        position = rng.uniform(radius + 2, SIZE - radius - 2, 2)
        velocity = rng.normal(0, 0.6, 2)
        movers.append(
            (colours[index], SHAPES[int(rng.integers(len(SHAPES)))], start, stop, radius,
             position, velocity, rng.uniform(0, 2 * math.pi))
        )  # fmt: skip
    truth = {c: np.zeros(frames, bool) for c in colours}
    images = []
    for t in range(frames):
        image = background.copy() * rng.uniform(0.9, 1.1)
        for colour, shape, start, stop, radius, p0, v, angle in movers:
            if not start <= t < stop:
                continue
            centre = p0 + v * (t - start)
            # bounce off the borders, so a mover stays in view while it is there
            span = SIZE - 2 * radius - 4
            centre = radius + 2 + np.abs(((centre - radius - 2) + span) % (2 * span) - span)
            mask = draw_shape_mask(shape, SIZE, *centre, radius, angle + 0.02 * t)
            rgb = np.array(COLOURS[colour], np.float32) + rng.uniform(-20, 20, 3)
            image[mask] = rgb
            truth[colour][t] = True
        image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        images.append(image)
    return images, truth


def flips(decisions) -> int:
    return int(np.count_nonzero(np.diff(np.asarray(decisions, int))))


def delays(decisions, truth) -> list[int]:
    """Frames from each change of the truth to the first frame deciding the new state."""
    out = []
    changes = np.flatnonzero(np.diff(truth.astype(int))) + 1
    for at in changes:
        later = np.flatnonzero(np.asarray(decisions[at:]) == truth[at])
        out.append(int(later[0]) if len(later) else len(truth) - at)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--frames', type=int, default=300)
    ap.add_argument('--sequences', type=int, default=4)
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument(
        '--rules',
        nargs='*',
        default=['0.1,3,3', '0.2,5,3', '0.25,8,3', '0.3,8,4'],
        help='further hold settings to compare: margin,window,lost_frames each',
    )
    args = ap.parse_args()
    import torch

    import gem_ros.gem as gem

    torch.set_num_threads(1)
    model = gem.load_model(
        str(WEIGHTS / 'scene-clip-s16.json'), str(WEIGHTS / 'scene-clip-s16.pt'), device='cpu'
    )
    threshold = 0.5
    default = HoldSettings()
    rules = {'held (node defaults)': default.rule(threshold)}
    for text in args.rules:
        margin, window, lost = text.split(',')
        settings = HoldSettings(True, float(margin), int(window), int(lost))
        if settings != default:
            rules[f'held, margin {margin} window {window} lost {lost}'] = settings.rule(threshold)
    queries = list(COLOURS)
    rng = np.random.default_rng(args.seed)
    # The model runs once per frame (judged at no threshold, as with held presence:
    # judge_threshold); each decision rule then reads the same detections.
    recorded = []
    for _ in range(args.sequences):
        images, truth = sequence(rng, args.frames)
        frames = [
            model.locate(
                image,
                queries,
                input_size=SIZE,
                presence_threshold=judge_threshold(default.rule(threshold), threshold),
            )
            for image in images
        ]
        recorded.append((frames, truth))
    kinds = {'per frame': None, **rules}
    flip_rates = {k: [] for k in kinds}
    late = {k: [] for k in kinds}
    wrong = dict.fromkeys(kinds, 0)
    hold_seconds, total = 0.0, 0
    for frames, truth in recorded:
        total += args.frames * len(queries)
        for kind, rule in kinds.items():
            decided = {q: [] for q in queries}
            hold = PresenceHold()
            for dets in frames:
                if rule is None:
                    for d in dets:
                        decided[d.query].append(d.confidence >= threshold)
                    continue
                dets = copy.deepcopy(dets)
                started = time.perf_counter()
                hold.update(dets, rule)
                hold_seconds += time.perf_counter() - started
                for d in dets:
                    decided[d.query].append(d.found)
            for q in queries:
                flip_rates[kind].append(100 * flips(decided[q]) / args.frames)
                late[kind] += delays(decided[q], truth[q])
                wrong[kind] += int(np.count_nonzero(np.asarray(decided[q]) != truth[q]))
    print(
        f'CPU: {cpu_model()}; {args.sequences} sequences of '
        f'{args.frames} frames, {len(queries)} queries each, seed {args.seed}; '
        f'{len(late["per frame"])} entries and exits'
    )
    print('| decision | flips per query per 100 frames (mean / max) | flips vs per frame | '
          'wrong frames | entry/exit delay, frames (median / 90th pct / max) |')  # fmt: skip
    print('|---|---|---|---|---|')
    base = statistics.mean(flip_rates['per frame'])
    for kind in kinds:
        mean = statistics.mean(flip_rates[kind])
        print(
            f'| {kind} | {mean:.2f} / {max(flip_rates[kind]):.1f} | '
            f'{base / max(mean, 1e-9):.1f}x fewer | {100 * wrong[kind] / total:.1f} % | '
            f'{statistics.median(late[kind]):.0f} / '
            f'{np.percentile(late[kind], 90):.0f} / {max(late[kind])} |'
        )
    print(f'held presence costs {1e6 * hold_seconds / (total * len(rules)):.1f} us per query '
          'and frame')  # fmt: skip


if __name__ == '__main__':
    main()
