"""The memory of sightings on a generated sequence with known geometry: how far remembered
places are from the things, how many seen things are remembered, how many places are false,
and what TF lookups and memory updates cost per frame.

    .venv/bin/python benchmarks/memory.py [--sequences 3] [--frames 120] [--seed 3]

Each sequence: a room with five coloured balls at known map positions (2 to 3.5 m from its
centre, 0.6 to 1.4 m high, radius 0.08 to 0.15 m), and a camera 1 m high that turns once
around on a small circle, its optical frame published as TF at 50 Hz (a tf2_ros.Buffer;
frames at 15 Hz fall between the samples, so lookups interpolate). Colour and depth are
rendered from the same scene: textured walls 4 m away (gem_ros.eval.scenes' background), balls
drawn far to near, depth with 1 cm noise. Every frame runs the shipped scene CLIP with all
seven colour queries (five there, two never), held presence as the node's defaults, each found
query's 3D point from the depth (gem_ros.geometry.peak_to_point, the node's), and
gem_ros.memory.observe with the node's default memory settings: the node's own code from the
peak on; only DDS is left out.

Per ball: the remembered place of its colour nearest to its surface (error: the distance to
the surface, cm, since a peak's point lies on the surface seen) when within 0.3 m; recall =
balls seen (their centre in view in some frame) with such a place; false places = places
farther than 0.3 m from the ball of their colour (the two absent colours' places included).
Three sources of peaks on the same sequences: the rendering itself (the visible pixel nearest
the ball's centre: what TF, depth and the memory add alone), and the scene CLIP plain and with
the successors' sliding windows.
Nothing here was tuned on the result.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gem_ros.cpu_name import cpu_model  # noqa: E402
from gem_ros.eval.scenes import COLOURS, _background  # noqa: E402
from gem_ros.gem.hold import PresenceHold, judge_threshold  # noqa: E402
from gem_ros.geometry import peak_to_point  # noqa: E402
from gem_ros.memory import CONFIRMED, SightingMemory, observe  # noqa: E402
from gem_ros.ros.parameters import PARAMETERS_BY_NAME  # noqa: E402
from gem_ros.settings import HoldSettings  # noqa: E402

WEIGHTS = REPO / 'gem_ros' / 'eval' / 'weights'
WIDTH, HEIGHT, FOCAL = 320, 240, 260.0
K = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]])
WALL = 4.0
FRAME_HZ, TF_HZ = 15.0, 50.0
HIT_M = 0.3
MIN_PIXELS = 30  # the oracle's smallest visible ball


def default(name):
    return PARAMETERS_BY_NAME[name].default


def camera_pose(t: float, period: float):
    """Map <- optical frame at time t: position on a 0.3 m circle, facing outwards as it
    turns (yaw = the angle on the circle); (R [3x3], c [3])."""
    yaw = 2 * math.pi * t / period
    c = np.array([0.3 * math.cos(yaw), 0.3 * math.sin(yaw), 1.0])
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return np.stack([right, down, forward], axis=1), c  # columns: optical x, y, z in the map


def quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """xyzw of a rotation matrix (Shepperd's method)."""
    trace = np.trace(R)
    if trace > 0:
        s = 2 * math.sqrt(trace + 1)
        return ((R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4)
    i = int(np.argmax(np.diag(R)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2 * math.sqrt(1 + R[i, i] - R[j, j] - R[k, k])
    q = [0.0, 0.0, 0.0, 0.0]
    q[i], q[j], q[k] = s / 4, (R[j, i] + R[i, j]) / s, (R[k, i] + R[i, k]) / s
    q[3] = (R[k, j] - R[j, k]) / s
    return tuple(q)


def world(rng: np.random.Generator):
    """Five balls of distinct colours: (colour, centre [3], radius), around the room."""
    colours = rng.choice(list(COLOURS), 5, replace=False)
    angles = np.sort(rng.uniform(0, 2 * math.pi, 5))
    balls = []
    for colour, angle in zip(colours, angles):
        distance = rng.uniform(1.5, 2.5)
        centre = np.array([distance * math.cos(angle), distance * math.sin(angle), 0])
        centre[2] = rng.uniform(0.6, 1.4)
        balls.append((str(colour), centre, rng.uniform(0.15, 0.25)))
    return balls


def render(balls, R, c, background, rng):
    """Colour (uint8) and depth (m) of the view, the balls whose centre is in view, and per
    ball in view its visible pixels and its centre's pixel."""
    rgb = background.copy()
    depth = np.full((HEIGHT, WIDTH), WALL)
    label = np.full((HEIGHT, WIDTH), -1)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    in_view, centres = [], {}
    cam = [(colour, R.T @ (centre - c), radius) for colour, centre, radius in balls]
    for index, (colour, p, radius) in sorted(enumerate(cam), key=lambda b: -b[1][1][2]):
        if p[2] <= radius:
            continue
        cu, cv = FOCAL * p[0] / p[2] + K[0, 2], FOCAL * p[1] / p[2] + K[1, 2]
        r_px = FOCAL * radius / p[2]
        disc = (u - cu) ** 2 + (v - cv) ** 2 <= r_px**2
        if not disc.any():
            continue
        rgb[disc] = np.array(COLOURS[colour], np.float32) + rng.uniform(-15, 15, 3)
        # The ball's front surface: nearer at its centre.
        rho2 = ((u - cu) ** 2 + (v - cv) ** 2)[disc] / r_px**2
        depth[disc] = p[2] - radius * np.sqrt(np.clip(1 - rho2, 0, 1))
        label[disc] = index
        if 0 <= cu < WIDTH and 0 <= cv < HEIGHT:
            in_view.append(colour)
            centres[colour] = (index, cu, cv)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    depth = depth + rng.normal(0, 0.01, depth.shape)
    visible = {colour: (label == index, cu, cv) for colour, (index, cu, cv) in centres.items()}
    return rgb, depth, in_view, visible


def oracle(queries, visible):
    """Detections from the rendering itself: a ball whose centre is in view and that shows
    MIN_PIXELS or more is found, its peak the visible pixel nearest its centre's."""
    from gem_ros.gem.postprocess import Detection

    dets = []
    for query in queries:
        mask, cu, cv = visible.get(query, (np.zeros((HEIGHT, WIDTH), bool), 0.0, 0.0))
        rows, cols = np.nonzero(mask)
        found = rows.size >= MIN_PIXELS
        nearest = int(np.argmin((cols - cu) ** 2 + (rows - cv) ** 2)) if found else 0
        peak = (int(cols[nearest]), int(rows[nearest])) if found else (0, 0)
        dets.append(Detection(query, 1.0, *peak, (0, 0, 0, 0), int(rows.size), mask, found=found))
    return dets


def tf_buffer(period: float):
    """The camera's TF over a sequence, sampled at TF_HZ, in a tf2_ros.Buffer."""
    import tf2_ros
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped

    buffer = tf2_ros.Buffer()
    for j in range(int(period * TF_HZ) + 2):
        t = j / TF_HZ
        R, c = camera_pose(t, period)
        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = 'map', 'camera_optical'
        msg.header.stamp = Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)) % 1_000_000_000)
        msg.transform.translation.x, msg.transform.translation.y = c[0], c[1]
        msg.transform.translation.z = c[2]
        q = msg.transform.rotation
        q.x, q.y, q.z, q.w = quaternion(R)
        buffer.set_transform(msg, 'benchmark')
    return buffer


def pose_at(buffer, t: float):
    """Map <- optical at time t, looked up (interpolated) in the buffer: (xyz, xyzw)."""
    from builtin_interfaces.msg import Time
    from rclpy.time import Time as RclTime

    stamp = Time(sec=int(t), nanosec=int(round((t % 1) * 1e9)) % 1_000_000_000)
    tf = buffer.lookup_transform('map', 'camera_optical', RclTime.from_msg(stamp)).transform
    return (
        (tf.translation.x, tf.translation.y, tf.translation.z),
        (tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w),
    )


def scene_model():
    """The shipped scene CLIP on the CPU, one torch thread (the figures' setting)."""
    import torch

    import gem_ros.gem as gem

    torch.set_num_threads(1)
    return gem.load_model(
        str(WEIGHTS / 'scene-clip-s16.json'), str(WEIGHTS / 'scene-clip-s16.pt'), device='cpu'
    )


def run_sequence(model, rng, frames: int, queries, threshold, rule, timings, pipeline):
    balls = world(rng)
    background = _background(rng, WIDTH, WIDTH)[:HEIGHT]  # the square the figures were made with
    period = frames / FRAME_HZ
    buffer = tf_buffer(period)
    memory = SightingMemory(
        'map',
        default('memory_radius'),
        default('memory_ttl_s'),
        default('memory_max_places_per_query'),
        default('memory_max_places'),
        default('memory_miss_frames'),
    )
    hold = PresenceHold()
    seen = set()
    for k in range(frames):
        t = (k + 0.5) / FRAME_HZ  # between two TF samples
        R, c = camera_pose(t, period)
        rgb, depth, in_view, visible = render(balls, R, c, background, rng)
        seen.update(in_view)
        started = time.perf_counter()
        if model is None:
            dets = oracle(queries, visible)
        else:
            dets = model.locate(
                rgb, queries, presence_threshold=judge_threshold(rule, threshold), **pipeline
            )
            hold.update(dets, rule)
        timings['model'].append(time.perf_counter() - started)
        points = []
        for d in dets:
            point = None
            if d.found:
                point, _ = peak_to_point(depth, (d.peak_x, d.peak_y), d.mask, K, (WIDTH, HEIGHT))
            points.append(point)
        started = time.perf_counter()
        pose = pose_at(buffer, t)
        timings['tf'].append(time.perf_counter() - started)
        started = time.perf_counter()
        observe(memory, 'camera', t, dets, points, pose, (depth, K))
        timings['memory'].append(time.perf_counter() - started)
    return balls, seen, memory


def surface_distance(position, centre, radius) -> float:
    """How far a remembered point is from the ball's surface (a peak's point lies on the
    surface the camera sees, not at the centre)."""
    return abs(float(np.linalg.norm(np.asarray(position) - centre)) - radius)


DETECTORS = {
    'rendering (oracle peaks)': None,
    'scene CLIP, 224 px': dict(input_size=224),
    'scene CLIP, 336 px + slide 224': dict(input_size=336, slide=224, slide_stride=112),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--sequences', type=int, default=3)
    ap.add_argument('--frames', type=int, default=120)
    ap.add_argument('--seed', type=int, default=3)
    args = ap.parse_args()
    model = scene_model()
    threshold = 0.5
    rule = HoldSettings().rule(threshold)
    queries = list(COLOURS)
    print(
        f'CPU: {cpu_model()}, 1 torch thread; '
        f'{args.sequences} sequences of {args.frames} frames ({WIDTH}x{HEIGHT}), 7 queries '
        f'(5 balls), seed {args.seed}'
    )
    print(
        '| peaks from | balls seen | remembered (recall) | error median / 90th pct (cm) | '
        'places | false places | confirmed places (3+ sightings) | false confirmed | '
        '~/recall right (best place on the ball) | ~/recall seen for an absent colour | '
        'TF lookup per frame (us) | memory update per frame (us) |'
    )
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for name, pipeline in DETECTORS.items():
        rng = np.random.default_rng(args.seed)  # the same sequences for each
        timings = {'model': [], 'tf': [], 'memory': []}
        errors, seen_count, remembered, false_places, places = [], 0, 0, 0, 0
        confirmed, false_confirmed, best_right, absent_seen, absent = 0, 0, 0, 0, 0
        for _ in range(args.sequences):
            balls, seen, memory = run_sequence(
                model if pipeline is not None else None,
                rng, args.frames, queries, threshold, rule, timings, pipeline,
            )  # fmt: skip
            truth = {colour: (centre, radius) for colour, centre, radius in balls}
            for colour in set(queries) - set(truth):
                absent += 1
                absent_seen += bool(memory.places(colour))
            for place in memory.all_places():
                places += 1
                ball = truth.get(place.query)
                false = ball is None or surface_distance(place.position, *ball) > HIT_M
                false_places += false
                if place.sightings >= CONFIRMED:
                    confirmed += 1
                    false_confirmed += false
            for colour, centre, radius in balls:
                if colour not in seen:
                    continue
                seen_count += 1
                near = [surface_distance(p.position, centre, radius) for p in memory.places(colour)]
                hits = [d for d in near if d <= HIT_M]
                best_right += bool(near) and near[0] <= HIT_M  # places() is best first
                if hits:
                    remembered += 1
                    errors.append(100 * min(hits))
        error = (
            f'{statistics.median(errors):.1f} / {np.percentile(errors, 90):.1f}' if errors else '-'
        )
        tf_us, memory_us = (1e6 * statistics.median(timings[k]) for k in ('tf', 'memory'))
        print(
            f'| {name} | {seen_count} | {remembered} ({100 * remembered / max(seen_count, 1):.0f}'
            f' %) | {error} | {places} | {false_places} | {confirmed} | {false_confirmed} | '
            f'{best_right} of {seen_count} | {absent_seen} of {absent} | '
            f'{tf_us:.0f} | {memory_us:.0f} |',
            flush=True,
        )
    print(f'(model per frame, last row: median {1e3 * statistics.median(timings["model"]):.0f} ms)')


if __name__ == '__main__':
    main()
