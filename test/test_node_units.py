"""The node's small thread and logging helpers, in-process."""
import threading

from gem_ros.latest_slot import LatestSlot
from gem_ros.node import LogThrottle


def test_slot_hands_over_only_the_newest_item_and_counts_the_rest():
    slot = LatestSlot()
    for frame in range(5):
        slot.put(frame)
    assert slot.take(timeout=1.0) == 4
    assert slot.replaced == 4
    assert slot.take(timeout=0.01) is None  # emptied by the take


def test_slot_take_waits_for_a_put_from_another_thread():
    slot = LatestSlot()
    threading.Timer(0.05, slot.put, args=('frame',)).start()
    assert slot.take(timeout=10.0) == 'frame'
    assert slot.replaced == 0


def test_slot_close_wakes_a_waiting_taker():
    slot = LatestSlot()
    taken = []
    taker = threading.Thread(target=lambda: taken.append(slot.take(timeout=30.0)))
    taker.start()
    slot.close()
    taker.join(timeout=10.0)
    assert not taker.is_alive() and taken == [None]


def test_throttle_holds_back_repeats_but_not_other_texts():
    throttle = LogThrottle(period_s=3600.0)
    assert throttle.due('truncated image data: 10 bytes')
    assert not throttle.due('truncated image data: 10 bytes')
    assert throttle.due("unsupported image encoding 'foo'")


def test_throttle_lets_a_text_through_again_after_its_period():
    throttle = LogThrottle(period_s=0.0)
    assert throttle.due('x') and throttle.due('x')
