"""Start, serve, stop, N times: does every gem_node and every client exit by itself?

    .venv/bin/python benchmarks/stop_cycles.py [--cycles 200] [--bound 15]

Each cycle starts gem_node on the tiny model and a client in a process of its own (a
participant of its own, as a robot's other nodes are), both over Fast DDS with the
recommended transports (LARGE_DATA?sockets_size=8MB). The client gets one frame served,
then both are stopped: SIGINT and SIGTERM alternate for the node, and the client stops
before the node in two cycles of four, after it in the other two. A process that has not
exited `--bound` seconds after its stop is killed and counted: each is a failure.
Fast DDS 2.14.5's teardown deadlock (eProsima/Fast-DDS#6066) shows as a process that
leaves through gem_ros's bounded teardown ('the middleware teardown hung' in its log),
counted apart: it exited, with its normal status, about TEARDOWN_BOUND_S late. A client
participant that never discovers the node is counted apart too (DISCOVERY_S below); the
cycle's stops still happen and are counted.

`--client` runs the client side (used by the cycles; not for people).
"""

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'test')]

from ros_helpers import LARGE_DATA_TRANSPORTS, TINY_MODEL, NodeProcess, source_env  # noqa: E402

HUNG = 'the middleware teardown hung'
# The client's lines that say how its cycle went (one of the last two ends the wait).
NOT_DISCOVERED = 'DISCOVERY the first participant did not discover the node'
REDISCOVERED = 'DISCOVERY a second participant discovered the node'
SERVED = 'READY served'
UNSERVED = 'READY not served'
# On Jazzy (Fast DDS 2.14.5, LARGE_DATA) a fresh client participant has, rarely, never
# matched the node started beside it (in the 1st, 3rd and 10th cycle of a run, in CI and
# here; not in 80 cycles run alone here; not understood: docs/deployment.md). A cycle's
# subject is the stops, so the client then tries a second participant of its own and says
# whether it found the node: a stuck client participant, or a node nobody discovers.
DISCOVERY_S = 20.0


def client_main() -> int:
    """One frame served by the node, then, at 'stop' on stdin, a bounded teardown."""
    import rclpy

    from ros_helpers import RosClient, close_ros, close_shared_context, image_msg, random_rgb

    clients, second, served = [RosClient()], None, True
    try:
        clients[0].wait_matched(timeout=DISCOVERY_S)
    except AssertionError as error:
        print(f'{NOT_DISCOVERED}: {error}', flush=True)
        second = rclpy.Context()
        rclpy.init(args=[], context=second)
        clients.append(RosClient(context=second))
        try:
            clients[1].wait_matched(timeout=DISCOVERY_S)
            print(REDISCOVERED, flush=True)
        except AssertionError as again:
            print(f'DISCOVERY nor did a second participant: {again}', flush=True)
            served = False
    if served:
        clients[-1].publish_and_wait(image_msg(random_rgb(48, 64), 'rgb8'), timeout=60)
    print(SERVED if served else UNSERVED, flush=True)
    sys.stdin.readline()
    for client in clients:  # each executor thread ends before its participant goes
        client.close()
    if second is not None:
        close_ros('the second participant', second, status=0)
    close_shared_context(status=0)
    return 0


class Client:
    def __init__(self, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        self.proc = subprocess.Popen(
            [sys.executable, __file__, '--client'],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**source_env(), 'GEM_ROS_TEST_TRANSPORTS': LARGE_DATA_TRANSPORTS},
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def wait_ready(self, timeout: float) -> bool:
        """True once served a frame, False when no participant of the client discovered
        the node; a client that fails otherwise (or says nothing in time) raises."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if SERVED in log or UNSERVED in log:
                return SERVED in log
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'client not served:\n{log[-2000:]}')
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.stdin.write(b'stop\n')
        self.proc.stdin.flush()


def wait_exit(proc, started: float, bound: float) -> tuple[float, int | None]:
    """(seconds from `started` to the exit, exit code); code None: killed at the bound."""
    try:
        code = proc.wait(max(bound - (time.monotonic() - started), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        return time.monotonic() - started, None
    return time.monotonic() - started, code


def cycle(index: int, log_dir: Path, bound: float) -> dict:
    """One start/serve/stop cycle: exit seconds, codes and teardown hangs of both sides."""
    node = NodeProcess(
        log_dir / f'node{index}.log',
        *TINY_MODEL,
        'queries:=[red]',
        env={'FASTDDS_BUILTIN_TRANSPORTS': LARGE_DATA_TRANSPORTS},
    )
    client = Client(log_dir / f'client{index}.log')
    signum = signal.SIGINT if index % 2 == 0 else signal.SIGTERM
    client_first = index % 4 < 2
    out = {'signal': signum.name, 'client_first': client_first}
    try:
        node.wait_for_log('loaded model', timeout=120)
        out['served'] = client.wait_ready(120)
        if client_first:
            started = time.monotonic()
            client.stop()
            out['client_s'], out['client_code'] = wait_exit(client.proc, started, bound)
        started = time.monotonic()
        node.proc.send_signal(signum)
        out['node_s'], out['node_code'] = wait_exit(node.proc, started, bound)
        if not client_first:
            started = time.monotonic()
            client.stop()
            out['client_s'], out['client_code'] = wait_exit(client.proc, started, bound)
    finally:
        for proc in (node.proc, client.proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        node.stop()
    out['node_hung'] = HUNG in node.log()
    out['client_hung'] = HUNG in client.log()
    out['discovery'] = [line for line in client.log().splitlines() if line.startswith('DISCOVERY')]
    out['logs'] = (node.log()[-1500:], client.log()[-1500:])
    return out


def run_cycles(cycles: int, bound: float, log_dir: Path, report=print) -> list[dict]:
    results = []
    for index in range(cycles):
        results.append(cycle(index, log_dir, bound))
        r = results[-1]
        if (
            r.get('node_code') is None
            or r.get('client_code') is None
            or r['node_hung']
            or r['discovery']
        ):
            report(f'cycle {index}: {r}')
    return results


def summary(results: list[dict], bound: float) -> str:
    lines = []
    for side in ('node', 'client'):
        seconds = sorted(r[f'{side}_s'] for r in results if f'{side}_s' in r)
        killed = sum(r.get(f'{side}_code', None) is None for r in results)
        codes = sorted({r.get(f'{side}_code') for r in results}, key=str)
        hung = sum(r[f'{side}_hung'] for r in results)
        q = (
            statistics.quantiles(seconds, n=20, method='inclusive')
            if len(seconds) > 1
            else seconds * 19
        )
        lines.append(
            f'{side}: {len(seconds)} stops, exit s median {statistics.median(seconds):.2f}, '
            f'p95 {q[-1]:.2f}, max {seconds[-1]:.2f}; not exited within {bound:g} s '
            f'(killed): {killed}; bounded teardown used (Fast DDS hang): {hung}; '
            f'exit codes {codes}'
        )
    missed = [r for r in results if r['discovery']]
    lines.append(
        f'discovery: {len(missed)} of {len(results)} cycles had a client participant that '
        f'did not discover the node in {DISCOVERY_S:g} s; a second one did in '
        f'{sum(REDISCOVERED in r["discovery"] for r in missed)}; '
        f'served: {sum(r.get("served", False) for r in results)}'
    )
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cycles', type=int, default=200)
    parser.add_argument('--bound', type=float, default=15.0, help='s to exit after a stop')
    parser.add_argument('--client', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main()
    import rclpy  # noqa: F401 - Fast DDS's library, for its version

    from gem_ros.ros.teardown import fastdds_version

    print(
        f'Fast DDS {fastdds_version()}, transports {LARGE_DATA_TRANSPORTS}, {args.cycles} cycles',
        flush=True,
    )
    with tempfile.TemporaryDirectory() as log_dir:
        results = run_cycles(args.cycles, args.bound, Path(log_dir))
    print(summary(results, args.bound))
    failed = sum(r.get('node_code') is None or r.get('client_code') is None for r in results)
    return 1 if failed else 0


if __name__ == '__main__':
    raise SystemExit(main())
