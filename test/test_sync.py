"""The approximate-time synchroniser: ours, and message_filters' where it is importable, by
the same tests (the node uses whichever is there)."""

import random

import pytest
from sensor_msgs.msg import CameraInfo, Image

from gem_ros.ros.sync import ApproximateTimeSync, message_filters, stamp_ns


class Ours:
    def __init__(self, inputs, queue_size, slop):
        self.sets = []
        self.sync = ApproximateTimeSync(inputs, queue_size, slop, lambda *m: self.sets.append(m))

    def feed(self, index, msg):
        self.sync.add(index, msg)


class MessageFilters:
    def __init__(self, inputs, queue_size, slop):
        self.sets = []
        self.inputs = [message_filters.SimpleFilter() for _ in range(inputs)]
        sync = message_filters.ApproximateTimeSynchronizer(self.inputs, queue_size, slop)
        sync.registerCallback(lambda *m: self.sets.append(m))
        self.sync = sync

    def feed(self, index, msg):
        self.inputs[index].signalMessage(msg)


@pytest.fixture(
    params=[
        Ours,
        pytest.param(
            MessageFilters,
            marks=pytest.mark.skipif(
                message_filters is None, reason='message_filters is not importable'
            ),
        ),
    ],
    ids=['ours', 'message_filters'],
)
def make(request):
    return request.param


def stamped(kind, t: float):
    msg = kind()
    ns = round(t * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
    msg.header.frame_id = f'{kind.__name__}@{t}'
    return msg


def names(sets):
    return [tuple(m.header.frame_id for m in s) for s in sets]


def test_equal_stamps_pair_whichever_arrives_first(make):
    sync = make(2, 10, 0.05)
    sync.feed(0, stamped(Image, 10.0))
    assert sync.sets == []
    sync.feed(1, stamped(CameraInfo, 10.0))
    sync.feed(1, stamped(CameraInfo, 10.1))
    sync.feed(0, stamped(Image, 10.1))
    assert names(sync.sets) == [
        ('Image@10.0', 'CameraInfo@10.0'),
        ('Image@10.1', 'CameraInfo@10.1'),
    ]


def test_within_slop_pairs_beyond_it_does_not(make):
    sync = make(2, 10, 0.05)
    sync.feed(0, stamped(Image, 1.0))
    sync.feed(1, stamped(CameraInfo, 1.06))  # 60 ms off
    sync.feed(1, stamped(CameraInfo, 1.05))  # exactly the slop: not less than it
    assert sync.sets == []
    sync.feed(1, stamped(CameraInfo, 0.98))  # 20 ms off
    assert names(sync.sets) == [('Image@1.0', 'CameraInfo@0.98')]


def test_the_closest_candidate_is_taken(make):
    sync = make(2, 10, 0.05)
    for t in (2.0, 2.03, 2.06):
        sync.feed(0, stamped(Image, t))
    sync.feed(1, stamped(CameraInfo, 2.035))
    assert names(sync.sets) == [('Image@2.03', 'CameraInfo@2.035')]


def test_three_inputs_need_all_three_within_slop(make):
    sync = make(3, 10, 0.05)
    sync.feed(0, stamped(Image, 5.0))
    sync.feed(1, stamped(Image, 5.01))
    assert sync.sets == []
    sync.feed(2, stamped(CameraInfo, 5.07))  # 70 ms from the first
    assert sync.sets == []
    sync.feed(2, stamped(CameraInfo, 5.03))
    assert names(sync.sets) == [('Image@5.0', 'Image@5.01', 'CameraInfo@5.03')]


def test_matched_messages_are_used_once(make):
    sync = make(2, 10, 0.05)
    sync.feed(0, stamped(Image, 3.0))
    sync.feed(1, stamped(CameraInfo, 3.0))
    sync.feed(1, stamped(CameraInfo, 3.0))  # a repeat finds no image left to pair with
    assert len(sync.sets) == 1


def test_queues_keep_only_the_newest_queue_size_messages(make):
    sync = make(2, 2, 0.05)
    for t in (4.0, 4.1, 4.2):
        sync.feed(0, stamped(Image, t))
    sync.feed(1, stamped(CameraInfo, 4.0))  # its partner was pushed out
    assert sync.sets == []
    sync.feed(1, stamped(CameraInfo, 4.2))
    assert names(sync.sets) == [('Image@4.2', 'CameraInfo@4.2')]


def test_a_jittered_30_hz_stream_pairs_every_frame_once(make):
    rng = random.Random(3)
    sync = make(2, 10, 0.01)
    arrivals = []
    for frame in range(100):
        t = 7.0 + frame / 30
        arrivals += [
            (t + rng.uniform(0, 0.02), 0, stamped(Image, t)),
            (t + rng.uniform(0, 0.02), 1, stamped(CameraInfo, t + 0.002)),
        ]
    for _, index, msg in sorted(arrivals, key=lambda a: a[0]):
        sync.feed(index, msg)
    offsets = [
        stamp_ns(info.header.stamp) - stamp_ns(image.header.stamp) for image, info in sync.sets
    ]
    assert len(offsets) == 100
    assert all(abs(offset - 2_000_000) <= 1 for offset in offsets)
