"""What differs between the ROS 2 distros gem_ros runs on, in one place.

Jazzy (the LTS) and Kilted are tested in CI; Humble (JetPack 6 on Jetson Orin) is supported by
design: its rclpy 3.3 lacks three things the node uses, and each has a fallback here, chosen
by what rclpy has (never by a distro name). test/test_humble_compat.py reads Humble's sources
and fails when the project uses an rclpy, launch or launch_ros name Humble lacks outside this
module; each fallback is run on the current distro by test/test_compat.py, and
GEM_ROS_HUMBLE_FALLBACKS=1 makes a node use all of them (how the node is tested as Humble runs
it).
"""

import os
import time
import warnings
from collections import deque

from rclpy.node import Node

FORCE_FALLBACKS = os.environ.get('GEM_ROS_HUMBLE_FALLBACKS') == '1'

try:  # Iron and newer
    if FORCE_FALLBACKS:
        raise ImportError('GEM_ROS_HUMBLE_FALLBACKS=1')
    from rclpy.event_handler import SubscriptionEventCallbacks

    EVENT_HANDLER_MODULE = True
except ImportError:  # Humble: the same class in its older module (a shim in Iron and newer)
    with warnings.catch_warnings():  # the shim's deprecation warning
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', UserWarning)
        from rclpy.qos_event import SubscriptionEventCallbacks
    EVENT_HANDLER_MODULE = False

__all__ = ['CompatNode', 'SampleFilter', 'SubscriptionEventCallbacks', 'subscribe_with_stamp']

# Iron and newer run post-set parameter callbacks after a change is applied.
NATIVE_POST_SET = hasattr(Node, 'add_post_set_parameters_callback') and not FORCE_FALLBACKS


def _executor_passes_message_info() -> bool:
    """Iron and newer pass a MessageInfo to subscription callbacks that take two arguments;
    Humble's executor passes the message only."""
    from rclpy.subscription import Subscription

    return hasattr(Subscription, 'CallbackType')


MESSAGE_INFO = _executor_passes_message_info() and not FORCE_FALLBACKS


class HumblePostSetParameters:
    """`add_post_set_parameters_callback` where rclpy lacks it (Humble): every parameter
    change there, by set_parameters or the parameter services, goes through
    `_set_parameters_atomically`, which runs the on-set callbacks and then applies the values;
    the post-set callbacks run right after it succeeded, on the same thread, as on Jazzy."""

    def add_post_set_parameters_callback(self, callback) -> None:
        if not hasattr(self, '_gem_post_set_callbacks'):
            self._gem_post_set_callbacks = []
        self._gem_post_set_callbacks.append(callback)

    def _set_parameters_atomically(self, parameter_list, *args, **kwargs):
        result = super()._set_parameters_atomically(parameter_list, *args, **kwargs)
        if result.successful:
            for callback in getattr(self, '_gem_post_set_callbacks', ()):
                callback(parameter_list)
        return result


# The base of gem_ros's nodes: rclpy's Node, with post-set parameter callbacks on Humble too.
CompatNode = Node if NATIVE_POST_SET else type('CompatNode', (HumblePostSetParameters, Node), {})


def subscribe_with_stamp(node, msg_type, topic, callback, qos, message_info=None, **kwargs):
    """A subscription whose callback gets (msg, source_stamp_ns): the publisher's source
    timestamp where the executor passes MessageInfo, None where it does not (Humble)."""
    if MESSAGE_INFO if message_info is None else message_info:

        def with_info(msg, info):
            callback(msg, info['source_timestamp'])

        return node.create_subscription(msg_type, topic, with_info, qos, **kwargs)

    def without_info(msg):
        callback(msg, None)

    return node.create_subscription(msg_type, topic, without_info, qos, **kwargs)


class SampleFilter:
    """Tells a sample heard a second time (one publisher reaching two subscriptions of one
    topic) from a new one. With source timestamps a sample is (stamp, data); without them
    (Humble) the same data again within `window_s` counts as the same sample."""

    def __init__(self, keep: int = 16, window_s: float = 1.0, clock=time.monotonic):
        self._seen: deque = deque(maxlen=keep)
        self._window_s = window_s
        self._clock = clock  # seconds; tests pass their own

    def repeat(self, data, stamp_ns) -> bool:
        """Whether this sample was seen already; remembers it otherwise."""
        now = self._clock()
        for seen_stamp, seen_data, seen_at in self._seen:
            if seen_data != data:
                continue
            if stamp_ns is not None and seen_stamp == stamp_ns:
                return True
            if stamp_ns is None and now - seen_at < self._window_s:
                return True
        self._seen.append((stamp_ns, data, now))
        return False


def fallbacks_in_use() -> list[str]:
    """What this rclpy lacks and gem_ros stands in for (empty on Jazzy and newer)."""
    used = []
    if not EVENT_HANDLER_MODULE:
        used.append('SubscriptionEventCallbacks from rclpy.qos_event')
    if not NATIVE_POST_SET:
        used.append('post-set parameter callbacks')
    if not MESSAGE_INFO:
        used.append('queries de-duplicated without source timestamps')
    return used
