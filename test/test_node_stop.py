"""gem_node stops cleanly on SIGINT and SIGTERM (issue 9): idle, while a frame is processed,
while a model loads, and on two signals in a row. Exit code 0, no traceback, and the node's
log says what it did: which frame was in flight and that it was finished, or that a load was
left. How fast it stops is measured by benchmarks/stop_times.py and stop_cycles.py; the
only bound here is EXIT_BOUND_S, which guards "it exits" (a hang would otherwise hold the
test until its timeout)."""

import signal

import pytest

from ros_helpers import (
    TINY_MODEL,
    NodeProcess,
    RosClient,
    frame_words,
    in_order,
    send_a_frame_in_flight,
)

pytestmark = pytest.mark.timeout(240)
EXIT_BOUND_S = 60.0  # generous: a stop takes 1-2 s plus the frame in flight
VIT = ('model:=ViT-B-16', 'pretrained:=none', 'device:=cpu')  # seconds a frame on a CPU
SIGNALS = {
    'sigint': (signal.SIGINT,),
    'sigterm': (signal.SIGTERM,),
    'sigint-twice': (signal.SIGINT, signal.SIGINT),
    'sigterm-then-sigint': (signal.SIGTERM, signal.SIGINT),
}


@pytest.fixture(scope='module')
def client():
    ros = RosClient()
    yield ros
    ros.close()


def check_clean(node, code):
    log = node.log()
    assert code == 0, log[-3000:]
    assert 'Traceback' not in log and 'KeyboardInterrupt' not in log, log[-3000:]
    assert 'stopped in' in log and 'the middleware teardown hung' not in log, log[-3000:]


@pytest.mark.parametrize('signals', SIGNALS.values(), ids=SIGNALS.keys())
def test_idle_node_stops_at_once(tmp_path, signals):
    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, 'queries:=[red]')
    node.wait_for_log('loaded model')
    code, _ = node.interrupt(*signals, timeout=EXIT_BOUND_S)
    check_clean(node, code)
    in_order(node.log(), 'stopping: idle', 'threads stopped in', 'stopped in')


@pytest.mark.parametrize('signals', SIGNALS.values(), ids=SIGNALS.keys())
def test_node_stops_after_the_frame_in_flight(tmp_path, client, signals):
    node = NodeProcess(tmp_path / 'node.log', *VIT, 'queries:=[red]', 'publish_overlay:=false')
    try:
        node.wait_for_log('loaded model', timeout=120)
        client.wait_matched()
        msg = send_a_frame_in_flight(client)
        code, _ = node.interrupt(*signals, timeout=EXIT_BOUND_S)
    finally:
        node.stop()
    check_clean(node, code)
    frame = frame_words(msg)
    if len(signals) == 1:
        ending = (f'the frame in flight ({frame}) was finished', 'threads stopped in')
    else:  # a second signal while stopping: the frame is not waited for
        ending = (f'the frame in flight ({frame}) was left unfinished', 'left unfinished)')
    in_order(
        node.log(), f'stopping: finishing the frame in flight ({frame})', *ending, 'stopped in'
    )


@pytest.mark.parametrize('signals', SIGNALS.values(), ids=SIGNALS.keys())
def test_node_stops_while_a_model_loads(tmp_path, signals):
    node = NodeProcess(tmp_path / 'node.log', *VIT, 'queries:=[red]')
    node.wait_for_log("loading model 'ViT-B-16'", timeout=60)
    code, _ = node.interrupt(*signals, timeout=EXIT_BOUND_S)
    check_clean(node, code)
    assert "loaded model 'ViT-B-16'" not in node.log()  # it stopped mid-load
    in_order(node.log(), 'stopping: idle', '(a load or frame in flight left unfinished)')
