"""The short run of benchmarks/stop_cycles.py: 12 start/serve/stop cycles of gem_node and a
client process over Fast DDS (SIGINT and SIGTERM alternating, the client stopped before and
after the node). Every process must exit by itself, with status 0: a hang in the
middleware's teardown is bounded (gem_ros/ros/teardown.py) and still exits 0. Nearly every
cycle must have served a frame before its stops: a client participant that never discovered
the node (Fast DDS 2.14.5, rare; stop_cycles.DISCOVERY_S) is reported as a warning with what
discovery had found, and more than MAX_UNSERVED of them fail the test."""

import sys
import warnings

import pytest

from ros_helpers import REPO

sys.path.insert(0, str(REPO / 'benchmarks'))

import stop_cycles  # noqa: E402

# Generous: a stop takes 1-2 s here; the teardown's own bound is 5 s. It guards "exits".
BOUND_S = 30.0
# 8 a run, so 16 per CI run (Jazzy and Kilted), in about 80 s each (a LARGE_DATA cycle takes
# 10 s: its discovery alone 2-4 s, docs/deployment.md); it was 20, then 12, cut for CI's
# 45-minute budget (issue 37). More: python benchmarks/stop_cycles.py --cycles N.
CYCLES = 8
# Stops after traffic are what this proves; a rare discovery failure leaves a cycle whose
# stops are still checked but that served nothing.
MAX_UNSERVED = 2
# Alone, after the parallel part: the cycles of start-up and shutdown on LARGE_DATA, bounded in
# time; a machine loaded by other workers only makes the discovery it counts slower.
pytestmark = pytest.mark.serial


@pytest.mark.timeout(CYCLES * 90)
def test_every_stop_ends_with_an_exit(tmp_path):
    lines = []
    results = stop_cycles.run_cycles(CYCLES, BOUND_S, tmp_path, report=lines.append)
    print(stop_cycles.summary(results, BOUND_S), *lines, sep='\n')
    for r in results:
        if r['discovery']:  # in the run's warnings summary, whether or not the test fails
            text = '; '.join(r['discovery'])[:1500]
            warnings.warn(f"stop cycle ({r['signal']}): {text}", stacklevel=1)
    for r in results:
        node_log, client_log = r['logs']
        what = f"{r['signal']}, client {'first' if r['client_first'] else 'last'}"
        assert r['node_code'] == 0, f'gem_node ({what}): {r["node_code"]}\n{node_log}'
        assert r['client_code'] == 0, f'client ({what}): {r["client_code"]}\n{client_log}'
    unserved = [r for r in results if not r['served']]
    assert len(unserved) <= MAX_UNSERVED, (
        f'{len(unserved)} of {CYCLES} cycles served no frame (no client participant '
        f'discovered the node):\n' + '\n'.join('; '.join(r['discovery']) for r in unserved)
    )
