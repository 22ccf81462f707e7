"""Several cameras on one gem_node against one node per camera: per-camera result rate,
latency (median, max) and the nodes' peak memory, in one run on one machine.

    .venv/bin/python benchmarks/cameras.py [--seconds 20] [--models tiny vit] [--repo TREE]
    .venv/bin/python benchmarks/cameras.py --forwards   # the CPU's ceiling, no ROS

Each configuration runs for --seconds with every camera publishing 640x480 rgb8 frames as
fast as the node takes them (a new frame on a camera as soon as its previous one has a
result, or after 2 s): 1, 2 and 3 cameras on one node, and 3 cameras on 3 separate nodes
(one camera each), the machine's cores shared among the nodes (torch threads). Latency is
publish -> result received; a camera's rate is its results per second from its first to its
last result in the window. Peak memory is VmHWM summed over
the configuration's node processes. Models: the tiny test model (a fast GPU model's stand-in)
and ViT-B-16 with random weights on the CPU.

--forwards: what the model alone gives on this CPU, however frames are scheduled (ViT-B-16,
random weights, 640x480 frames at 448): one forward at a time on every core (one camera's
node), a batch of three in one forward, and one forward per core side by side (a CPU cycle
of several cameras); seconds per frame, median of 5 rounds. One forward on one thread gives
the ceiling: every core running one such forward with nothing lost to sharing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))
sys.path.insert(0, str(REPO))  # this checkout's gem_ros (the nodes run --repo's)

from gem_ros.cpu_name import cpu_model  # noqa: E402

from hostile_inputs import read_kib  # noqa: E402
from ros_helpers import TINY_MODEL, NodeProcess, RosClient, header, image_msg, random_rgb  # noqa: E402

MODELS = {
    'tiny': TINY_MODEL,
    'vit': ('model:=ViT-B-16', 'pretrained:=none', 'device:=cpu'),
}
NAMES = ('front', 'left', 'right')


class Feed:
    """One camera's publisher and its results; sends the next frame once the last one is
    answered (or after 2 s: a frame lost in transport)."""

    def __init__(self, client, node_name: str, camera: str):
        from sensor_msgs.msg import Image

        from gem_ros.msg import GemResult

        prefix = f'{camera}/' if camera else ''
        self.pub = client.node.create_publisher(
            Image, f'/{node_name}/{prefix}image' if node_name != 'gem' else f'{prefix}image', 5
        )
        self.sent: dict = {}
        self.latencies: list = []
        self.arrivals: list = []  # when each result came (monotonic)
        self.answered = threading.Event()
        out = f'/{node_name}/{prefix}results'
        client.node.create_subscription(GemResult, out, self._on_result, 10)
        self.msg = image_msg(random_rgb(480, 640, seed=len(camera)), 'rgb8')

    def _on_result(self, result):
        stamp = (result.header.stamp.sec, result.header.stamp.nanosec)
        sent = self.sent.pop(stamp, None)
        if sent is not None:
            self.arrivals.append(time.monotonic())
            self.latencies.append(self.arrivals[-1] - sent)
            self.answered.set()

    def run(self, until: float):
        while time.monotonic() < until:
            self.msg.header = header()
            stamp = (self.msg.header.stamp.sec, self.msg.header.stamp.nanosec)
            self.answered.clear()
            self.sent[stamp] = time.monotonic()
            self.pub.publish(self.msg)
            self.answered.wait(2.0)


def rate(arrivals: list, until: float, seconds: float) -> float:
    """Results per second between a camera's first and last result of the window: a few
    results (ViT-B-16 on a CPU: 5-10 a camera in 30 s) counted over the whole window would
    be off by up to one result at each end."""
    inside = [t for t in arrivals if t <= until]
    if len(inside) < 2:  # too slow to tell: what the window saw
        return len(inside) / seconds
    return (len(inside) - 1) / (inside[-1] - inside[0])


def configuration(
    client, model, cameras_per_node: list, seconds: float, logs: Path, repo: Path = REPO
) -> dict:
    """Nodes, each with its cameras; every camera fed for `seconds`."""
    nodes, feeds = [], []
    for n, cameras in enumerate(cameras_per_node):
        name = 'gem' if n == 0 else f'gem{n}'
        args = [*MODELS[model], 'queries:=[red mug, person]']
        if cameras != ['']:
            args.append(f'cameras:=[{", ".join(cameras)}]')
        # Separate nodes: each its own name and image topic.
        remaps = (f'__node:={name}', f'image:=/{name}/image') if name != 'gem' else ()
        log = logs / f'{model}-{len(cameras_per_node)}-{n}.log'
        # The machine's cores shared among the nodes: one node may use them all.
        threads = max(1, (os.cpu_count() or 1) // len(cameras_per_node))
        nodes.append(NodeProcess(log, *args, remaps=remaps, threads=threads, repo=repo))
        feeds += [Feed(client, name, c) for c in cameras]
    try:
        for node in nodes:
            node.wait_for_log('loaded model', timeout=300)
        time.sleep(2.0)  # discovery
        for feed in feeds:  # warm-up: one answered frame each
            feed.run(time.monotonic() + 0.1)
        for feed in feeds:
            feed.latencies.clear()
            feed.arrivals.clear()
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=f.run, args=(until,)) for f in feeds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = sum(read_kib(n.proc.pid, 'VmHWM') for n in nodes) / 1024
    finally:
        for node in nodes:
            node.stop()
    rates = [rate(f.arrivals, until, seconds) for f in feeds]
    every = [x for f in feeds for x in f.latencies]
    return dict(
        rates=rates,
        total=sum(rates),
        median_ms=1e3 * statistics.median(every) if every else float('nan'),
        max_ms=1e3 * max(every) if every else float('nan'),
        peak_mib=peak,
    )


def forwards_table(runs: int = 5) -> None:
    import numpy as np
    import torch

    import gem_ros.gem as gem

    cores = torch.get_num_threads()
    model = gem.load_model('ViT-B-16', 'none', device='cpu', input_size=448)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(3)]
    queries = ['red mug']

    def forward(images, threads: int) -> None:
        torch.set_num_threads(threads)  # the calling thread's own (OpenMP, MKL)
        model.locate_batch(images, queries)

    def side_by_side() -> None:
        helpers = [threading.Thread(target=forward, args=([f], 1)) for f in frames[1:cores]]
        for helper in helpers:
            helper.start()
        forward(frames[:1], 1)
        for helper in helpers:
            helper.join()

    ways = {
        'one forward at a time, 1 thread': (lambda: forward(frames[:1], 1), 1),
        f'one forward at a time, {cores} threads': (lambda: forward(frames[:1], cores), 1),
        f'one forward of a batch of three, {cores} threads': (lambda: forward(frames, cores), 3),
        f'{cores} one-thread forwards side by side': (side_by_side, cores),
    }
    forward(frames[:1], cores)  # warm-up
    print(f'CPU: {cpu_model()}, {os.cpu_count()} cores')
    print('| how frames are run | seconds a frame | frames/s |\n|---|---|---|')
    times: dict = {label: [] for label in ways}
    for _ in range(runs):  # in rounds: a machine whose speed drifts drifts for every way
        for label, (run, count) in ways.items():
            started = time.perf_counter()
            run()
            times[label].append((time.perf_counter() - started) / count)
    for label, seconds in times.items():
        per_frame = statistics.median(seconds)
        print(f'| {label} | {per_frame:.2f} | {1 / per_frame:.2f} |', flush=True)
    # No scheduling of frames beats every core running one-thread forwards with no loss to
    # sharing: the most any number of cameras (or of nodes) can give on this machine.
    ceiling = cores / statistics.median(times['one forward at a time, 1 thread'])
    one_camera = 1 / statistics.median(times[f'one forward at a time, {cores} threads'])
    print(
        f'ceiling: {cores} x one thread = {ceiling:.2f} frames/s, '
        f'{ceiling / one_camera:.2f}x one forward at a time on {cores} threads'
    )


LAYOUTS = {
    '1 camera, 1 node': [['']],
    '2 cameras, 1 node': [list(NAMES[:2])],
    '3 cameras, 1 node': [list(NAMES)],
    '3 cameras, 3 nodes': [[''], [''], ['']],
}


def model_rounds(client, model: str, args, logs: Path) -> None:
    """Every configuration in turn, --rounds times (a machine whose speed drifts drifts for
    every configuration of a round), then three cameras on one node as ratios to one camera's
    node and to three nodes: the median of the rounds' ratios."""
    totals: dict = {label: [] for label in LAYOUTS}
    for round_ in range(1, args.rounds + 1):
        for label, layout in LAYOUTS.items():
            if args.only and not any(o in label for o in args.only):
                continue
            r = configuration(client, model, layout, args.seconds, logs, args.repo)
            totals[label].append(r['total'])
            rates = ', '.join(f'{x:.2f}' for x in r['rates'])
            print(
                f"| {model} | {round_} | {label} | {rates} | {r['total']:.2f} | "
                f"{r['median_ms']:.0f} / {r['max_ms']:.0f} | {r['peak_mib']:.0f} |",
                flush=True,
            )
    three = totals['3 cameras, 1 node']
    for baseline in ('1 camera, 1 node', '3 cameras, 3 nodes'):
        if three and totals[baseline]:
            ratios = [a / b for a, b in zip(three, totals[baseline]) if b > 0]
            print(
                f'{model}: 3 cameras on 1 node = {statistics.median(ratios):.2f}x {baseline} '
                f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})",
                flush=True,
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='every configuration in turn, this many times: the ratios are medians of rounds',
    )
    ap.add_argument('--models', nargs='+', default=['tiny', 'vit'], choices=list(MODELS))
    ap.add_argument(
        '--repo',
        type=Path,
        default=REPO,
        help="the nodes' source tree (an older commit's worktree, for a before/after)",
    )
    ap.add_argument('--only', nargs='+', help='configurations whose label contains one of these')
    ap.add_argument('--forwards', action='store_true', help='the model alone, no ROS (see above)')
    args = ap.parse_args()
    if args.forwards:
        forwards_table()
        return 0
    client = RosClient()
    cpu = cpu_model()
    print(f'CPU: {cpu}, {os.cpu_count()} cores; {args.seconds:g} s per configuration; '
          f'nodes from {args.repo}')  # fmt: skip
    print('| model | round | configuration | results/s per camera | total/s | latency median / '
          'max (ms) | peak RSS (MiB) |')  # fmt: skip
    print('|---|---|---|---|---|---|---|')
    try:
        with tempfile.TemporaryDirectory() as logs:
            for model in args.models:
                model_rounds(client, model, args, Path(logs))
    finally:
        client.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
