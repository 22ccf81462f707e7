"""Every ~/change_state request gets an answer, in every state, and none ends the managed
node: what lifecycle managers (nav2's sends transition ids) and scripts may send, over Fast
DDS from this process. Before the fix, transition id 4 (deactivate) sent to an unconfigured
node got no answer and killed it (rclpy's RCLError out of the service callback)."""

import random
import threading

import pytest
from lifecycle_msgs.msg import Transition

from hostile_inputs import read_kib
from ros_helpers import TINY_MODEL, NodeProcess, RosClient, header, image_msg, random_rgb

pytestmark = pytest.mark.timeout(600)
RGB = random_rgb(96, 128, seed=5)
PRIMARY = ('unconfigured', 'inactive', 'active')
# From each primary state, the labels that lead to the next one and back.
FORWARD = {'unconfigured': 'configure', 'inactive': 'activate'}
BACK = {'inactive': 'cleanup', 'active': 'deactivate'}
SHUTDOWN_IDS = {
    Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
    Transition.TRANSITION_INACTIVE_SHUTDOWN,
    Transition.TRANSITION_ACTIVE_SHUTDOWN,
}


@pytest.fixture(scope='module')
def client():
    client = RosClient()
    yield client
    client.close()


def managed_node(tmp_path, *parameters):
    return NodeProcess(
        tmp_path / 'node.log',
        *TINY_MODEL,
        'autostart:=false',
        'input_size:=96',
        'queries:=[red]',
        *parameters,
        managed=True,
    )


def go_to(client, state: str) -> None:
    """From any primary state to `state`, by labels."""
    current = client.lifecycle()
    while current != state:
        if PRIMARY.index(current) < PRIMARY.index(state):
            current = client.lifecycle(FORWARD[current])
        else:
            current = client.lifecycle(BACK[current])


def serves_a_frame(client) -> None:
    client.wait_matched()
    msg = image_msg(RGB, 'rgb8')
    assert client.publish_and_wait(msg).results[0].query == 'red'


class Camera:
    """Publishes a frame every 0.1 s (10 Hz) until stopped."""

    def __init__(self, client):
        self._stop = threading.Event()
        self._client = client
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        msg = image_msg(RGB, 'rgb8')
        while not self._stop.wait(0.1):
            msg.header = header()
            self._client.image_pub.publish(msg)

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def test_every_transition_id_in_every_primary_state_is_answered(client, tmp_path):
    """Ids 0-255 from unconfigured, inactive and active. One that does not exist from the
    state is answered success false, the state stays and the log says why; one that does
    exists is carried out (then undone). The node answers get_state after each."""
    node = managed_node(tmp_path)
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        for state in PRIMARY:
            go_to(client, state)
            available = client.available_transitions()
            assert available, f'no transitions offered from {state}'
            for transition_id in range(256):
                if transition_id in SHUTDOWN_IDS and transition_id in available:
                    continue  # ends the node's life: test_shutdown_from_every_primary_state
                answer = client.change_state(id=transition_id, timeout=60)
                now = client.lifecycle()  # alive and answering
                if transition_id in available:
                    assert answer.success, f'{available[transition_id]} failed from {state}'
                    assert now != state, f'id {transition_id} from {state} changed nothing'
                    go_to(client, state)
                else:
                    assert not answer.success, f'id {transition_id} accepted from {state}'
                    assert now == state, f'refused id {transition_id} moved {state} to {now}'
            assert node.proc.poll() is None, node.log()[-3000:]
        # The repro, its log line, and a loop of it logged once (throttled).
        go_to(client, 'unconfigured')
        before = len(node.log())
        for _ in range(20):
            assert not client.change_state(id=Transition.TRANSITION_DEACTIVATE).success
        line = "change_state refused: no transition id 4 from state 'unconfigured'"
        log = node.log()
        assert line in log, log[-3000:]
        assert log[before:].count(line) < 20, 'refusals of one request are not throttled'
        # Labels and neither: unknown ones are refused too.
        for label in ('activate', 'no such transition', ''):
            assert not client.change_state(label=label).success, label
        assert client.lifecycle() == 'unconfigured'
        go_to(client, 'active')
        serves_a_frame(client)
    finally:
        node.stop()


@pytest.mark.parametrize('state', PRIMARY)
def test_shutdown_from_every_primary_state(client, tmp_path, state):
    """Shutdown by id, as a manager sends it, from each primary state: finalized, still
    answering, then a clean exit."""
    node = managed_node(tmp_path)
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        go_to(client, state)
        shutdown_id = next(i for i in client.available_transitions() if i in SHUTDOWN_IDS)
        assert client.change_state(id=shutdown_id).success
        assert client.lifecycle() == 'finalized'
        node.wait_for_log('finalized: model released')
        for transition_id in (1, 3, 4, shutdown_id):  # nothing is left to do from finalized
            assert not client.change_state(id=transition_id).success
        assert node.proc.poll() is None
        assert node.stop() == 0, node.log()[-3000:]
    finally:
        node.stop()


def test_a_flood_of_random_requests_under_a_streaming_camera(client, tmp_path):
    """200 random requests (ids 0-255, labels valid and not, both, neither; no shutdown,
    which would end the test) while a camera streams at 10 Hz: each is answered, the node
    lives, and a normal bring-up then serves frames."""
    node = managed_node(tmp_path)
    rng = random.Random(23)
    labels = ['configure', 'activate', 'deactivate', 'cleanup', 'bogus', 'ACTIVATE', '']
    camera = None
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        client.lifecycle()
        camera = Camera(client)
        answered = 0
        while answered < 200:
            transition_id = rng.randrange(256)
            label = rng.choice(labels) if rng.random() < 0.5 else ''
            if transition_id in SHUTDOWN_IDS:
                continue
            client.change_state(id=transition_id, label=label, timeout=60)  # asserts an answer
            answered += 1
        assert node.proc.poll() is None, node.log()[-3000:]
        assert client.lifecycle() in PRIMARY
        go_to(client, 'active')
        serves_a_frame(client)
    finally:
        if camera is not None:
            camera.stop()
        node.stop()


def test_twenty_bring_up_and_tear_down_cycles_keep_memory_flat(client, tmp_path):
    """configure -> activate -> deactivate -> cleanup 20 times under a 10 Hz camera, serving
    a frame in each: the RSS after the last cleanup is within 150 MB of that after the
    first."""
    node = managed_node(tmp_path)
    camera = None
    rss = []
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        client.lifecycle()
        camera = Camera(client)
        for _ in range(20):
            for label in ('configure', 'activate'):
                client.lifecycle(label)
            serves_a_frame(client)
            for label in ('deactivate', 'cleanup'):
                client.lifecycle(label)
            rss.append(read_kib(node.proc.pid, 'VmRSS') / 1024)
        print('RSS after each cleanup (MiB):', ', '.join(f'{r:.0f}' for r in rss))
        assert rss[-1] - rss[0] < 150, rss
    finally:
        if camera is not None:
            camera.stop()
        node.stop()
