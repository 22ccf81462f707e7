"""The managed gem_node (gem_lifecycle_node) driven from another process through the real
lifecycle_msgs services (~/change_state, ~/get_state), over Fast DDS: what each state
processes and answers, and the memory that cleanup gives back."""

import time

import pytest
from lifecycle_msgs.srv import ChangeState

from gem_ros.srv import Locate, SetQueries

from hostile_inputs import read_kib
from ros_helpers import (
    TINY_MODEL,
    NodeProcess,
    RosClient,
    header,
    image_msg,
    random_rgb,
    send_a_frame_in_flight,
)

pytestmark = pytest.mark.timeout(300)
RGB = random_rgb(96, 128, seed=3)


@pytest.fixture(scope='module')
def client():
    client = RosClient()
    yield client
    client.close()


def wait_image_subscription(client, wanted: bool, timeout: float = 30.0) -> None:
    """Until the graph shows /gem subscribed to /image (wanted) or not: an inactive node
    takes no frames at all, which a window without results could not tell from a lost one."""
    deadline = time.monotonic() + timeout
    subscribed = None
    while time.monotonic() < deadline:
        try:
            topics = {t for t, _ in client.node.get_subscriber_names_and_types_by_node('gem', '/')}
        except Exception:  # noqa: BLE001 - not in the graph yet (NodeNameNonExistentError)
            topics = None
        if topics is not None:
            subscribed = '/image' in topics
            if subscribed == wanted:
                return
        time.sleep(0.05)
    raise AssertionError(f'/gem subscribed to /image: {subscribed}, wanted {wanted}')


def test_managed_node_states(client, tmp_path):
    node = NodeProcess(
        tmp_path / 'node.log', *TINY_MODEL, 'autostart:=false', 'input_size:=96', managed=True
    )
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        assert client.lifecycle() == 'unconfigured'
        assert 'loading model' not in node.log()  # no model until configured
        # Queries work in every state.
        answer = client.call(client.set_queries_client, SetQueries.Request(queries=['red']))
        assert answer.success, answer.message
        locate = client.node.create_client(Locate, '/gem/locate')
        reply = client.call(locate, Locate.Request(query='red', timeout=10.0), 5.0)
        assert not reply.found and 'the node is unconfigured' in reply.message, reply.message

        assert client.lifecycle('configure') == 'inactive'
        assert 'loaded model' in node.log()
        msg = image_msg(RGB, 'rgb8')
        wait_image_subscription(client, False)
        reply = client.call(locate, Locate.Request(query='red', timeout=10.0), 5.0)
        assert 'the node is inactive' in reply.message, reply.message

        assert client.lifecycle('activate') == 'active'
        wait_image_subscription(client, True)
        client.wait_matched()
        msg.header = header()
        assert client.publish_and_wait(msg).results[0].query == 'red'

        assert client.lifecycle('deactivate') == 'inactive'
        wait_image_subscription(client, False)
        assert client.lifecycle('activate') == 'active'  # the model was kept: no reload
        assert node.log().count('loaded model') == 1
        client.wait_matched()
        msg.header = header()
        client.publish_and_wait(msg)

        assert client.lifecycle('deactivate') == 'inactive'
        assert client.lifecycle('cleanup') == 'unconfigured'
        assert 'model released' in node.log()
        # Parameters work while unconfigured, and load nothing until configure.
        assert client.set_parameters(method='clip').successful
        time.sleep(1.0)
        assert node.log().count('loading model') == 1
        assert client.lifecycle('configure') == 'inactive'
        node.wait_for_log("method clip")
        assert client.lifecycle('shutdown') == 'finalized'
        assert node.proc.poll() is None  # finalized, still answering until stopped
        assert node.stop() == 0
    finally:
        node.stop()


def test_configure_failure_leaves_it_unconfigured_with_the_reason(client, tmp_path):
    bad = tmp_path / 'corrupt.pt'
    bad.write_bytes(b'not a checkpoint')
    node = NodeProcess(
        tmp_path / 'node.log',
        TINY_MODEL[0],
        f'pretrained:={bad}',
        *TINY_MODEL[2:],
        'autostart:=false',
        managed=True,
    )
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        with pytest.raises(AssertionError, match='transition configure failed'):
            client.lifecycle('configure')
        assert client.lifecycle() == 'unconfigured'
        node.wait_for_log('configure failed, staying unconfigured: could not load')
        # Fixed parameters, then it configures.
        assert client.set_parameters(pretrained=TINY_MODEL[1].split(':=')[1]).successful
        assert client.lifecycle('configure') == 'inactive'
    finally:
        node.stop()


def test_parameters_and_diagnostics_are_answered_while_configure_loads(client, tmp_path):
    """Issue 38: configure waits for the model (minutes for a TensorRT build; here a ViT-L-14
    with random weights, seconds). Meanwhile the node answers get_parameters and publishes
    /diagnostics: the transition holds an executor thread of its own, not the node's."""
    import threading

    statuses = client.diagnostics()
    node = NodeProcess(
        tmp_path / 'node.log',
        'model:=ViT-L-14',
        'pretrained:=none',
        'device:=cpu',
        'queries:=[red]',
        'autostart:=false',
        managed=True,
    )
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        assert client.lifecycle() == 'unconfigured'  # its services are discovered
        assert client.get_parameters('model') == {'model': 'ViT-L-14'}
        configured = []
        transition = threading.Thread(target=lambda: configured.append(client.lifecycle(
            'configure')))  # fmt: skip
        transition.start()
        node.wait_for_log('loading model')
        seen = len(statuses)
        # The node logs 'configured' before the transition's thread is free: an answer
        # that waited for it finds the line already written.
        answer = client.get_parameters('model', 'queries', timeout=60.0)
        answered_while_loading = 'configured: model loaded' not in node.log()
        client.wait_for(lambda: len(statuses) > seen, '/diagnostics', timeout=60.0)
        published_while_loading = 'configured: model loaded' not in node.log()
        transition.join(120.0)
        assert configured == ['inactive'], node.log()
        assert answer == {'model': 'ViT-L-14', 'queries': ['red']}
        assert answered_while_loading, 'get_parameters waited for the configure transition'
        assert published_while_loading, '/diagnostics waited for the configure transition'
    finally:
        node.stop()


def test_autostart_brings_it_to_active(client, tmp_path):
    node = NodeProcess(
        tmp_path / 'node.log', *TINY_MODEL, 'queries:=[red]', 'input_size:=96', managed=True
    )
    try:
        node.wait_for_log('active: processing')
        assert client.lifecycle() == 'active'
        client.wait_matched()
        msg = image_msg(RGB, 'rgb8')
        assert client.publish_and_wait(msg).results[0].query == 'red'
    finally:
        node.stop()


@pytest.mark.timeout(600)
def test_cleanup_gives_the_model_memory_back(client, tmp_path):
    """ViT-B-16 (random weights, fp32: 150 M parameters, 598 MB): the node's RSS after cleanup
    falls by most of that, and configure loads it again."""
    node = NodeProcess(
        tmp_path / 'node.log',
        'model:=ViT-B-16',
        'pretrained:=none',
        'device:=cpu',
        'autostart:=false',
        managed=True,
    )
    model_mib = 149.6e6 * 4 / 2**20
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        idle = read_kib(node.proc.pid, 'VmRSS') / 1024
        assert client.lifecycle('configure', timeout=300) == 'inactive'
        loaded = read_kib(node.proc.pid, 'VmRSS') / 1024
        assert client.lifecycle('cleanup') == 'unconfigured'
        released = read_kib(node.proc.pid, 'VmRSS') / 1024
        print(f'RSS: idle {idle:.0f} MiB, configured {loaded:.0f}, after cleanup {released:.0f}')
        assert loaded - idle > 0.8 * model_mib, (idle, loaded)
        assert loaded - released > 0.6 * model_mib, (idle, loaded, released)
        assert client.lifecycle('configure', timeout=300) == 'inactive'
    finally:
        node.stop()


def test_transitions_that_do_not_exist_from_a_state_are_refused(client, tmp_path):
    node = NodeProcess(tmp_path / 'node.log', *TINY_MODEL, 'autostart:=false', managed=True)
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        client.lifecycle()
        request = ChangeState.Request()
        request.transition.label = 'activate'  # unconfigured: activate is not a transition
        assert not client.call(client._change_state, request).success
        assert client.lifecycle() == 'unconfigured'
    finally:
        node.stop()


def test_a_frame_in_flight_at_deactivate_is_not_published(client, tmp_path):
    """docs/node.md: deactivate stops frames, and the frame in flight is not published. The
    worker finishes it before the next frame, so had it been published, its result would
    come before the next frame's: order, not a window of silence."""
    node = NodeProcess(
        tmp_path / 'node.log',
        'model:=ViT-B-16',
        'pretrained:=none',
        'device:=cpu',
        'queries:=[red]',
        'publish_overlay:=false',
        'autostart:=false',
        managed=True,
    )
    try:
        node.wait_for_log('waiting for a lifecycle manager')
        assert client.lifecycle('configure', timeout=300) == 'inactive'
        assert client.lifecycle('activate') == 'active'
        client.wait_matched()
        in_flight = send_a_frame_in_flight(client)
        assert client.lifecycle('deactivate') == 'inactive'
        assert client.lifecycle('activate') == 'active'
        client.wait_matched()
        after = image_msg(random_rgb(480, 640), 'rgb8')
        client.publish_and_wait(after, timeout=120, resend_s=60)
        assert not [r for r in client.results if r.header == in_flight.header]
    finally:
        node.stop()
