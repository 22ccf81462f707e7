"""The node's small thread and logging helpers, in-process."""

import threading
import time

from gem_ros.threads import LatestSlot, ThrottledLog

from ros_helpers import close_ros


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


def test_throttle_is_per_kind_not_per_text_and_per_severity():
    logger = ListLogger()
    log = ThrottledLog(logger, period_s=3600.0)
    for n in range(300):  # 300 frames, each truncated differently: one line
        log('error', 'bad image', f'truncated image data: {n} bytes')
    assert logger.lines == [('error', 'truncated image data: 0 bytes')]
    assert log('error', 'bad compressed image', 'cannot decode')  # another kind: at once
    assert log('warning', 'bad image', 'x')  # another severity: at once


def test_throttle_says_how_many_lines_it_held_back():
    logger = ListLogger()
    now = [100.0]
    log = ThrottledLog(logger, period_s=0.2, clock=lambda: now[0])
    for _ in range(4):
        log('error', 'frame', 'boom')
    now[0] += 0.19  # still within the period: held back
    assert not log('error', 'frame', 'boom')
    now[0] += 0.02
    assert log('error', 'frame', 'boom')
    assert logger.lines == [
        ('error', 'boom'),
        ('error', 'boom (4 more like it in the last 0.2 s not logged)'),
    ]


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


def test_spin_ends_when_the_context_is_shut_down_behind_its_back():
    """rclpy's signal thread shuts the context down at the C level (rcl_shutdown, no Python
    on_shutdown callbacks), after it has triggered the executor's guard condition. An
    executor that already woke and went back to wait is woken by nothing: a plain
    executor.spin() then sleeps until its next timer (CI: 30 s to stop after SIGTERM)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from gem_ros.ros.guards import SHUTDOWN_POLL_S, spin_until_shutdown

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('spin_test', context=context)
    node.create_timer(3600.0, lambda: None)  # the only other wake-up is an hour away
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    returned = []  # stays empty if spin_until_shutdown raises

    def spin():
        spin_until_shutdown(executor, ThrottledLog(ListLogger(), 5.0))
        returned.append(True)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    time.sleep(3 * SHUTDOWN_POLL_S)  # the executor is waiting
    assert spinner.is_alive()
    with context.handle:
        context.handle.shutdown()  # what the signal thread does, minus the guard trigger
    spinner.join(timeout=30 * SHUTDOWN_POLL_S)
    try:
        assert not spinner.is_alive(), 'the executor did not notice the shutdown'
        assert returned, 'spin_until_shutdown raised instead of returning'
    finally:
        executor.shutdown(timeout_sec=0)
        close_ros('spin test', context, node)


def test_spin_ends_when_the_context_is_shut_down_between_its_check_and_the_wait():
    """CI (Jazzy, SIGTERM): the signal thread shut the context down just after the loop saw
    it up; spin_once then made its timeout timer on a dead context, RCLError came out of
    main and the node exited 1 after a clean stop. A context that shuts itself down right
    after answering ok() puts the signal exactly in that window, every time."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from gem_ros.ros.guards import spin_until_shutdown

    class ShutDownAfterCheck(rclpy.Context):
        armed = False

        def ok(self):
            up = super().ok()
            if up and self.armed:
                self.armed = False
                with self.handle:
                    self.handle.shutdown()  # what the signal thread does, in the window
            return up

    context = ShutDownAfterCheck()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('spin_window_test', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        context.armed = True
        spin_until_shutdown(executor, ThrottledLog(ListLogger(), 5.0))  # returns, no raise
        assert not context.ok()
    finally:
        executor.shutdown(timeout_sec=0)
        close_ros('spin test', context, node)


def test_one_callbacks_error_is_logged_and_the_node_goes_on_serving():
    """rclpy re-raises a callback's exception from spin_once (Jazzy: RCLError out of the
    lifecycle's change_state callback ended the node). The loop logs where it came from and
    keeps running callbacks; only the context's shutdown ends it."""
    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from gem_ros.ros.guards import spin_until_shutdown

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('spin_error_test', context=context)
    calls = []
    served = threading.Event()

    def callback():
        calls.append(len(calls))
        if len(calls) <= 2:
            raise RCLError('planted: transition is not registered')
        if len(calls) == 3:
            raise ValueError('planted: a bug in a callback')
        served.set()

    node.create_timer(0.01, callback)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    logger = ListLogger()
    ended = []
    spinner = threading.Thread(
        target=lambda: ended.append(spin_until_shutdown(executor, ThrottledLog(logger, 60.0))),
        daemon=True,
    )
    spinner.start()
    try:
        assert served.wait(30.0), f'the loop stopped serving after {len(calls)} calls'
        assert spinner.is_alive() and not ended, 'the loop ended while the context was up'
        errors = [text for level, text in logger.lines if level == 'error']
        # One line per kind: the second RCLError is held back by the throttle.
        assert len(errors) == 2, logger.lines
        assert 'RCLError: planted' in errors[0] and 'in callback' in errors[0], errors
        assert 'ValueError: planted' in errors[1], errors
        with context.handle:
            context.handle.shutdown()
        spinner.join(30.0)
        assert not spinner.is_alive() and ended == [None], 'the shutdown did not end the loop'
    finally:
        executor.shutdown(timeout_sec=0)
        close_ros('spin test', context, node)


def test_locate_timeout_rules_of_the_service_definition():
    """Locate.srv: 'Seconds to wait for that frame; 0 (or not finite) = 5, at most 60.'"""
    from gem_ros.ros.locate_service import locate_timeout

    assert locate_timeout(0.0) == 5.0 and locate_timeout(-3.0) == 5.0
    assert locate_timeout(float('nan')) == 5.0 and locate_timeout(float('inf')) == 5.0
    assert locate_timeout(0.5) == 0.5 and locate_timeout(60.0) == 60.0
    assert locate_timeout(1000.0) == 60.0


def test_rate_gate_passes_at_most_the_max_rate_and_zero_means_every_time():
    """overlay_max_rate_hz and heatmaps_max_rate_hz: the node's gates for its optional
    outputs, on an injected clock."""
    from gem_ros.threads import RateGate

    now = [10.0]
    gate = RateGate(clock=lambda: now[0])
    assert gate.due(2.0)  # the first frame passes
    now[0] += 0.49
    assert not gate.due(2.0)  # within 1/2 s of the last pass
    now[0] += 0.02
    assert gate.due(2.0)
    assert gate.due(0.0) and gate.due(0.0)  # 0: no limit
    now[0] += 0.15
    assert not gate.due(5.0) and gate.due(10.0)  # a rate change applies at once
