"""The Humble fallbacks of gem_ros/ros/compat.py, run on the distro installed here: each one
in-process with real rclpy, and a whole gem_node that uses all of them
(GEM_ROS_HUMBLE_FALLBACKS=1) from another process over Fast DDS."""

import importlib
import subprocess
import sys
import threading
import time
import warnings

import pytest
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from gem_ros.ros import compat

from ros_helpers import (
    REPO,
    TINY_MODEL,
    NodeProcess,
    RosClient,
    image_msg,
    random_rgb,
    shared_context,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ros_context():
    context = shared_context()  # a participant destroyed mid-run can hang (ros_helpers)
    executor = SingleThreadedExecutor(context=context)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield context, executor
    executor.shutdown(timeout_sec=5)
    spinner.join(5)


class HumbleStyleNode(compat.HumblePostSetParameters, Node):
    pass


def test_post_set_fallback_runs_after_a_change_is_applied(ros_context):
    context, executor = ros_context
    node = HumbleStyleNode('compat_params', context=context)
    node.declare_parameter('threshold', 0.5)
    seen = []
    node.add_on_set_parameters_callback(
        lambda params: SetParametersResult(successful=all(p.value <= 1.0 for p in params))
    )
    # Post-set callbacks see the value already applied, as on Jazzy.
    node.add_post_set_parameters_callback(
        lambda params: seen.append((params[0].value, node.get_parameter('threshold').value))
    )
    assert node.set_parameters([Parameter('threshold', value=0.7)])[0].successful
    assert seen == [(0.7, 0.7)]
    assert not node.set_parameters([Parameter('threshold', value=2.0)])[0].successful
    assert seen == [(0.7, 0.7)], 'a refused change must not run post-set callbacks'
    assert node.set_parameters_atomically([Parameter('threshold', value=0.2)]).successful
    assert seen[-1] == (0.2, 0.2)

    # And through the parameter service, from another node: the path `ros2 param set` takes.
    executor.add_node(node)
    caller = rclpy.create_node('compat_caller', context=context)
    executor.add_node(caller)
    client = caller.create_client(SetParameters, '/compat_params/set_parameters')
    assert client.wait_for_service(timeout_sec=10)
    done = threading.Event()
    future = client.call_async(
        SetParameters.Request(parameters=[Parameter('threshold', value=0.9).to_parameter_msg()])
    )
    future.add_done_callback(lambda _: done.set())
    assert done.wait(10)
    assert future.result().results[0].successful
    assert seen[-1] == (0.9, 0.9)
    assert not hasattr(node, '_post_set_parameters_callbacks') or (
        node._post_set_parameters_callbacks == []
    ), 'the fallback must not also register with rclpy (callbacks would run twice)'


def _pub_sub(context, executor, message_info):
    node = rclpy.create_node('compat_stamps', context=context)
    got = []
    received = threading.Event()

    def callback(msg, stamp):
        got.append((msg.data, stamp))
        received.set()

    compat.subscribe_with_stamp(node, String, 'stamped', callback, 10, message_info=message_info)
    publisher = node.create_publisher(String, 'stamped', 10)
    executor.add_node(node)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        publisher.publish(String(data='red mug'))
        received.wait(0.2)
    executor.remove_node(node)
    node.destroy_node()
    assert got, 'nothing received'
    return got[0]


def test_subscriptions_get_the_source_stamp_where_rclpy_passes_message_info(ros_context):
    if not compat._executor_passes_message_info():
        pytest.skip('this rclpy passes no MessageInfo (Humble)')
    data, stamp = _pub_sub(*ros_context, message_info=True)
    assert data == 'red mug' and isinstance(stamp, int) and stamp > 0


def test_subscriptions_work_without_message_info(ros_context):
    data, stamp = _pub_sub(*ros_context, message_info=False)
    assert (data, stamp) == ('red mug', None)


def test_sample_filter_with_and_without_stamps():
    stamped = compat.SampleFilter()
    assert not stamped.repeat('a', 1)
    assert stamped.repeat('a', 1)  # the same sample through the second subscription
    assert not stamped.repeat('a', 2)  # the same text published again: a new sample
    assert not stamped.repeat('b', 1)

    now = [50.0]
    unstamped = compat.SampleFilter(window_s=0.3, clock=lambda: now[0])
    assert not unstamped.repeat('a', None)
    assert not unstamped.repeat('b', None)
    now[0] += 0.29
    assert unstamped.repeat('a', None)  # 'a' heard again through the other subscription
    now[0] += 0.02
    assert not unstamped.repeat('a', None)  # later than the window: published again


def test_the_event_handler_fallback_imports_the_same_class(monkeypatch):
    monkeypatch.setenv('GEM_ROS_HUMBLE_FALLBACKS', '1')
    try:
        forced = importlib.reload(compat)
        assert not forced.EVENT_HANDLER_MODULE and not forced.NATIVE_POST_SET
        assert not forced.MESSAGE_INFO
        assert forced.CompatNode is not Node and issubclass(forced.CompatNode, Node)
        assert len(forced.fallbacks_in_use()) == 3
        with warnings.catch_warnings():  # the Iron+ shim warns that it is deprecated
            warnings.simplefilter('ignore')
            from rclpy.qos_event import SubscriptionEventCallbacks as humble_module_class
        assert forced.SubscriptionEventCallbacks is humble_module_class
        forced.SubscriptionEventCallbacks(incompatible_qos=lambda _: None)
    finally:
        monkeypatch.delenv('GEM_ROS_HUMBLE_FALLBACKS')
        importlib.reload(compat)
    assert compat.fallbacks_in_use() == [], 'this distro should need no fallback'


def test_importing_compat_warns_of_nothing():
    out = subprocess.run(
        [sys.executable, '-W', 'error', '-c', 'import gem_ros.ros.compat'],
        cwd=REPO,
        env={**__import__('os').environ, 'GEM_ROS_HUMBLE_FALLBACKS': '1'},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope='module')
def humble_style_node(tmp_path_factory):
    client = RosClient()
    node = NodeProcess(
        tmp_path_factory.mktemp('humble_style') / 'node.log',
        *TINY_MODEL,
        'queries:=[zebra]',
        'input_size:=96',
        env={'GEM_ROS_HUMBLE_FALLBACKS': '1'},
    )
    try:
        node.wait_for_log('loaded model')
        client.wait_matched()
        yield node, client
    finally:
        node.stop()
        client.close()


def test_a_node_on_the_fallbacks_logs_them(humble_style_node):
    node, _ = humble_style_node
    assert 'rclpy fallbacks: SubscriptionEventCallbacks from rclpy.qos_event' in node.log()


def test_a_node_on_the_fallbacks_takes_queries_from_both_kinds_of_publisher(humble_style_node):
    node, client = humble_style_node
    # A volatile publisher reaches one of the node's two queries subscriptions, a latched one
    # both: either way each change becomes active once. (Without source stamps two changes
    # published within the same instant may arrive out of order through the two
    # subscriptions; people and scripts send queries seconds apart.)
    # Sent until echoed: wait_matched sees this writer matched, but the node's reader may
    # not have matched it yet, and a volatile sample sent before that is gone (seen once in a
    # full run). The same text again changes nothing.
    deadline = time.monotonic() + 30
    while not (client.active and client.active[-1] == 'cat'):
        assert time.monotonic() < deadline, f"no echo of 'cat': {client.active}"
        client.queries_pub.publish(String(data='cat'))
        time.sleep(1.0)
    latched = client.node.create_publisher(
        String,
        'queries',
        QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        ),
    )
    deadline = time.monotonic() + 30
    while latched.get_subscription_count() < 3:  # all three of the node's subscriptions
        assert time.monotonic() < deadline, 'latched queries publisher not matched'
        time.sleep(0.05)
    for text in ('red mug', 'person'):
        latched.publish(String(data=text))
        client.wait_for(lambda t=text: client.active[-1] == t, f'the echo of {text!r}')
    time.sleep(1.0)  # the second subscription's copies arrive and must change nothing
    assert client.active[-2:] == ['red mug', 'person'], client.active
    log = node.log()
    assert log.count('active queries: [red mug]') == 1, log[-2000:]
    assert log.count('active queries: [person]') == 1, log[-2000:]
    msg = image_msg(random_rgb(24, 32), 'rgb8')
    result = client.publish_and_wait(msg)
    assert [r.query for r in result.results] == ['person']


def test_a_node_on_the_fallbacks_applies_parameter_changes(humble_style_node):
    _, client = humble_style_node
    assert client.set_parameters(queries='a; b').successful
    client.wait_for(lambda: client.active[-1] == 'a; b', "the echo of 'a; b'")
    assert client.set_parameters(mask_threshold=0.9).successful
    assert client.get_parameters('mask_threshold') == {'mask_threshold': 0.9}
    # A value the node refuses is refused the same way.
    result = client.set_parameters(mask_threshold=2.0)
    assert not result.successful and 'mask_threshold' in result.reason
