"""The gap in a node's results while it switches to backend onnxruntime with an empty graph
cache (issue 38): the export and the session build must not hold the model that serves.

    .venv/bin/python benchmarks/backend_switch.py [--runs 3] [--repo DIR]

Per run: gem_node (its own process, over Fast DDS; ViT-B-16, random weights, 2 queries, the
machine's cores) in a fresh GEM_ROS_GRAPH_CACHE, fed 640x480 rgb8 frames at 10 Hz (newest
wins: the node runs saturated); after 20 s of warm-up the usual period is the median gap
between results over 20 s; then `backend:=onnxruntime` is set, and the largest gap between two
results from that moment until 15 s after the node says it loaded the new model is the
switch's gap. Its ratio to the usual period is the figure (target: at most 2); the period on
onnxruntime after the switch is printed beside it. `--repo`
measures another source tree (e.g. a worktree of an older commit) for a before/after.
Say which CPU it ran on (printed).
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
sys.path.insert(0, str(REPO))

from gem_ros.cpu_name import cpu_model  # noqa: E402

from ros_helpers import NodeProcess, RosClient, header, image_msg, random_rgb  # noqa: E402

WARM_S, USUAL_S, AFTER_S = 20.0, 20.0, 15.0


def one_run(client, repo: Path, logs: Path, index: int) -> dict:
    from gem_ros.msg import GemResult

    arrivals: list[float] = []
    sub = client.node.create_subscription(
        GemResult, '/gem/results', lambda m: arrivals.append(time.monotonic()), 50
    )
    cache = tempfile.mkdtemp(prefix='gem_ros_switch_cache_')
    node = NodeProcess(
        logs / f'node-{index}.log',
        'model:=ViT-B-16',
        'pretrained:=none',
        'device:=cpu',
        'queries:=[red mug, person]',
        threads=len(os.sched_getaffinity(0)),
        repo=repo,
        env={'GEM_ROS_GRAPH_CACHE': cache},
    )
    stop = threading.Event()
    try:
        node.wait_for_log('loaded model', timeout=300)
        client.wait_matched()
        msg = image_msg(random_rgb(480, 640), 'rgb8')

        def feed():
            while not stop.is_set():
                msg.header = header()
                client.image_pub.publish(msg)
                time.sleep(0.1)

        threading.Thread(target=feed, daemon=True).start()
        time.sleep(WARM_S)
        begin = time.monotonic()
        time.sleep(USUAL_S)
        usual = [b - a for a, b in zip(arrivals, arrivals[1:]) if a >= begin]
        mark = len(node.log())
        switched = time.monotonic()
        result = client.set_parameters(backend='onnxruntime')
        assert result.successful, result.reason
        node.wait_for_log('loaded model', after=mark, timeout=600)
        loaded = time.monotonic()
        time.sleep(AFTER_S)
        times = [switched] + [t for t in arrivals if t > switched]
        gaps = [b - a for a, b in zip(times, times[1:])]
        after = [b - a for a, b in zip(times, times[1:]) if a >= loaded]
        return {
            'usual': statistics.median(usual),
            'after': statistics.median(after) if after else float('nan'),
            'gap': max(gaps),
            'load_s': loaded - switched,
            'results_during': sum(1 for t in arrivals if switched < t <= loaded),
        }
    finally:
        stop.set()
        node.stop()
        client.node.destroy_subscription(sub)
        client.clear()
        for path in Path(cache).glob('*'):
            path.unlink()
        os.rmdir(cache)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--repo', type=Path, default=REPO, help='the source tree whose node runs')
    args = ap.parse_args()
    print(f'CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; node from {args.repo}')
    client = RosClient()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as logs:
            for index in range(args.runs):
                rows.append(one_run(client, args.repo.resolve(), Path(logs), index))
                row = rows[-1]
                print(
                    f'run {index + 1}: usual period {row["usual"]:.2f} s, largest gap '
                    f'{row["gap"]:.2f} s ({row["gap"] / row["usual"]:.2f}x), switch took '
                    f'{row["load_s"]:.0f} s with {row["results_during"]} results meanwhile',
                    flush=True,
                )
    finally:
        client.close()
    print(
        '| run | usual period (s) | largest gap (s) | gap / period | switch (s) | results '
        'meanwhile | period on onnxruntime (s) |'
    )
    print('|---|---|---|---|---|---|---|')
    for i, r in enumerate(rows, 1):
        print(
            f'| {i} | {r["usual"]:.2f} | {r["gap"]:.2f} | {r["gap"] / r["usual"]:.2f} | '
            f'{r["load_s"]:.0f} | {r["results_during"]} | {r["after"]:.2f} |'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
