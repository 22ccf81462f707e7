"""End-to-end latency of gem_node and its resident memory over many frames.

    .venv/bin/python benchmarks/node_latency.py [--tiny-frames 500] [--vit-frames 20]
    .venv/bin/python benchmarks/node_latency.py --baseline /tmp/before   # a before/after ratio

With --baseline (a worktree of another commit, e.g. `git worktree add /tmp/before HEAD~3`),
the baseline's node and this checkout's run alternately (--rounds each, same client, same
frames), and the table gains this checkout's median latency as a ratio to the baseline's.

For each model the real node runs in its own process (as in the tests, over Fast DDS); this
process publishes one 640x480 rgb8 frame at a time and waits for its GemResult. Latency is
publish -> result received. The node's VmRSS (from /proc) is read after 50 frames and at the
end. Models: the tiny test model, and ViT-B-16 with random weights (no weights download).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))

from ros_helpers import TINY_MODEL, NodeProcess, RosClient, image_msg, random_rgb  # noqa: E402

MODELS = {
    'tiny (test fixture)': TINY_MODEL,
    'ViT-B-16 (random weights)': ('model:=ViT-B-16', 'pretrained:=none', 'device:=cpu'),
}
QUERIES = ('red mug', 'person')
WARM_UP = 3
RSS_EARLY = 50


def vm_rss_mib(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f'no VmRSS for pid {pid}')


def run(
    client: RosClient,
    name: str,
    parameters,
    frames: int,
    log_path: Path,
    threads: int,
    repo: Path = REPO,
) -> dict:
    node = NodeProcess(
        log_path, *parameters, f"queries:=[{', '.join(QUERIES)}]", threads=threads, repo=repo
    )
    try:
        node.wait_for_log('loaded model', timeout=300)
        client.wait_matched()
        pixels = random_rgb(480, 640)
        for _ in range(WARM_UP):
            client.publish_and_wait(image_msg(pixels, 'rgb8'), timeout=120, resend_s=60)
        latencies, inference, rss_early = [], [], None
        for i in range(frames):
            msg = image_msg(pixels, 'rgb8')
            started = time.perf_counter()
            result = client.publish_and_wait(msg, timeout=120, resend_s=60)
            latencies.append(time.perf_counter() - started)
            inference.append(result.inference_seconds)
            client.clear()
            if i + 1 == RSS_EARLY:
                rss_early = vm_rss_mib(node.proc.pid)
        rss_end = vm_rss_mib(node.proc.pid)
    finally:
        node.stop()
    quantiles = statistics.quantiles(latencies, n=10) if len(latencies) > 1 else latencies * 9
    return dict(
        model=name,
        frames=frames,
        latencies=latencies,
        median_ms=1000 * statistics.median(latencies),
        p90_ms=1000 * quantiles[-1],
        inference_ms=1000 * statistics.median(inference),
        rss_early=rss_early,
        rss_end=rss_end,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tiny-frames', type=int, default=500, help='0 skips it')
    parser.add_argument(
        '--vit-frames',
        type=int,
        default=20,
        help='ViT-B-16 takes seconds a frame on a CPU; 0 skips it',
    )
    parser.add_argument('--threads', type=int, default=1, help="the node's OMP_NUM_THREADS")
    parser.add_argument('--baseline', type=Path, help='source tree of the node to compare with')
    parser.add_argument('--rounds', type=int, default=2, help='alternations with --baseline')
    args = parser.parse_args()
    if args.baseline:
        return compare(args)
    frames = dict(zip(MODELS, (args.tiny_frames, args.vit_frames)))
    client = RosClient()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            for i, (name, parameters) in enumerate(MODELS.items()):
                if frames[name]:
                    rows.append(
                        run(
                            client,
                            name,
                            parameters,
                            frames[name],
                            Path(log_dir) / f'node{i}.log',
                            args.threads,
                        )
                    )
    finally:
        client.close()

    def mib(value):
        return f'{value:.0f}' if value is not None else '-'

    print(
        f'640x480 rgb8, queries {list(QUERIES)}, input_size 448, CPU, node with '
        f'OMP_NUM_THREADS={args.threads}'
    )
    print(
        f"| model | frames | median latency (ms) | p90 (ms) | median inference (ms) | "
        f"VmRSS after {RSS_EARLY} (MiB) | VmRSS at end (MiB) |"
    )
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        print(
            f"| {r['model']} | {r['frames']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{r['inference_ms']:.1f} | {mib(r['rss_early'])} | {mib(r['rss_end'])} |"
        )


def compare(args) -> None:
    """Baseline and this checkout alternately; medians over all their frames, and the ratio."""
    frames = dict(zip(MODELS, (args.tiny_frames, args.vit_frames)))
    client = RosClient()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            for name, parameters in MODELS.items():
                if not frames[name]:
                    continue
                latencies = {'baseline': [], 'this checkout': []}
                for r in range(args.rounds):
                    for which, repo in (('baseline', args.baseline), ('this checkout', REPO)):
                        run_ = run(
                            client,
                            name,
                            parameters,
                            frames[name],
                            Path(log_dir) / f'{name[:4]}{r}{which[0]}.log',
                            args.threads,
                            repo,
                        )
                        latencies[which] += run_['latencies']
                base, this = (statistics.median(v) for v in latencies.values())
                rows.append((name, len(latencies['baseline']), 1000 * base, 1000 * this))
    finally:
        client.close()
    print(
        f'640x480 rgb8, queries {list(QUERIES)}, input_size 448, CPU, OMP_NUM_THREADS='
        f'{args.threads}, {args.rounds} alternating rounds; baseline {args.baseline}'
    )
    print('| model | frames each | baseline median (ms) | this checkout median (ms) | ratio |')
    print('|---|---|---|---|---|')
    for name, n, base, this in rows:
        print(f'| {name} | {n} | {base:.1f} | {this:.1f} | {this / base:.3f} |')


if __name__ == '__main__':
    main()
