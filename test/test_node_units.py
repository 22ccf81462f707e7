"""The node's small thread and logging helpers, in-process."""

import threading
import time

from gem_ros.threads import LatestSlot, ThrottledLog


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


class ListLogger:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(('info', text))

    def warning(self, text):
        self.lines.append(('warning', text))

    def error(self, text):
        self.lines.append(('error', text))


def test_throttle_is_per_kind_not_per_text_and_counts_what_it_held_back():
    logger = ListLogger()
    log = ThrottledLog(logger, period_s=3600.0)
    for n in range(300):  # 300 frames, each truncated differently: one line
        log('error', 'bad image', f'truncated image data: {n} bytes')
    assert logger.lines == [('error', 'truncated image data: 0 bytes')]
    assert log('error', 'bad compressed image', 'cannot decode')  # another kind: at once
    assert log('warning', 'bad image', 'x')  # another severity: at once


def test_throttle_says_how_many_lines_it_held_back():
    logger = ListLogger()
    log = ThrottledLog(logger, period_s=0.2)
    for _ in range(4):
        log('error', 'frame', 'boom')
    time.sleep(0.25)
    log('error', 'frame', 'boom')
    assert logger.lines[-1] == ('error', 'boom (3 more like it in the last 0.2 s not logged)')


def test_long_texts_are_cut():
    logger = ListLogger()
    ThrottledLog(logger, period_s=1.0)('error', 'bad image', 'x' * 10_000)
    text = logger.lines[0][1]
    assert len(text) < 700 and text.endswith('(9400 more chars)')


def test_severities_of_one_throttle_never_raise_with_rclpy_loggers():
    # Issue 8, item 1: rclpy refuses a second severity from one call site; a worker thread
    # logging "no model yet" (info) and then a bad frame (error) through one helper died.
    import rclpy.logging

    log = ThrottledLog(rclpy.logging.get_logger('gem_units'), period_s=0.0)
    for level in ('info', 'error', 'warning', 'info', 'error'):
        assert log(level, 'same kind', f'a {level} line')


def test_a_raising_logger_does_not_raise():
    class Broken:
        def error(self, text):
            raise RuntimeError('logger gone')

    assert ThrottledLog(Broken(), period_s=0.0)('error', 'frame', 'x')
