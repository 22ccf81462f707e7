"""Approximate-time synchronisation of several stamped topics.

message_filters' ApproximateTimeSynchronizer when it is importable (any ROS install);
otherwise ApproximateTimeSync, a small equivalent (message_filters is not on PyPI). Same
matching: one queue per input, keyed by stamp, holding at most queue_size messages (the
oldest go first); on each arrival, the other inputs' messages within `slop` of it are tried,
closest first, and the first set whose stamps span less than `slop` is passed to the
callback and taken out of the queues. One difference, for a node that only wants the newest
data: queued messages older than a matched set are dropped with it.
"""

import itertools
import threading
from typing import Callable, Sequence

try:
    import message_filters
except ImportError:
    message_filters = None


def stamp_ns(stamp) -> int:
    """A builtin_interfaces/Time in integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class ApproximateTimeSync:
    def __init__(self, inputs: int, queue_size: int, slop: float, callback: Callable[..., None]):
        self._queues: list[dict[int, object]] = [{} for _ in range(inputs)]
        self._queue_size = queue_size
        self._slop_ns = round(slop * 1e9)
        self._callback = callback
        self._lock = threading.Lock()

    def add(self, index: int, msg) -> None:
        stamp = stamp_ns(msg.header.stamp)
        with self._lock:
            queue = self._queues[index]
            queue[stamp] = msg
            while len(queue) > self._queue_size:
                del queue[min(queue)]
            matched = self._match(index, stamp)
            if matched is None:
                return
            msgs = [q[t] for q, t in zip(self._queues, matched)]
            for q, t in zip(self._queues, matched):
                for old in [s for s in q if s <= t]:
                    del q[old]
        self._callback(*msgs)

    def _match(self, index: int, stamp: int):
        """Stamps, one per input, of the set with the new message, or None."""
        candidates = []
        for i, queue in enumerate(self._queues):
            if i == index:
                candidates.append([stamp])
                continue
            near = sorted(
                (s for s in queue if abs(s - stamp) <= self._slop_ns), key=lambda s: abs(s - stamp)
            )
            if not near:
                return None
            candidates.append(near)
        return next(
            (c for c in itertools.product(*candidates) if max(c) - min(c) < self._slop_ns), None
        )


def subscribe_synchronised(
    node,
    inputs: Sequence[tuple[type, str]],
    qos,
    slop: float,
    callback: Callable[..., None],
    queue_size: int = 10,
):
    """Subscribe (msg_type, topic) inputs on `node`; callback(*msgs) gets synchronised sets.
    Keep the returned object alive as long as the subscriptions."""
    if message_filters is not None:
        subscribers = [
            message_filters.Subscriber(node, msg_type, topic, qos_profile=qos)
            for msg_type, topic in inputs
        ]
        sync = message_filters.ApproximateTimeSynchronizer(subscribers, queue_size, slop)
        sync.registerCallback(callback)
        return sync, subscribers
    sync = ApproximateTimeSync(len(inputs), queue_size, slop, callback)
    subscriptions = [
        node.create_subscription(msg_type, topic, lambda msg, i=i: sync.add(i, msg), qos)
        for i, (msg_type, topic) in enumerate(inputs)
    ]
    return sync, subscriptions
