"""A deadline that ends the process even while a thread holding the GIL is blocked in C.

Fast DDS's teardown can deadlock inside `destroy_node` or a context shutdown
(eProsima/Fast-DDS#6066). rclpy makes those calls holding the GIL, so no Python thread, timer
or signal handler runs again in that process: a watchdog written in Python never fires
(pytest-timeout's methods included). What still runs is native code. At the deadline:

1. faulthandler's C watchdog writes every thread's Python stack (what hung, and where);
2. a POSIX timer (timer_create, SIGEV_THREAD) runs `puts(message)`, `fflush(NULL)`, then
   `_exit(status)` in threads that glibc starts: no Python, no GIL.

So a stop that was clean still leaves with its normal status, and a hung test run ends with
its stacks. Where timer_create cannot be reached (not glibc), faulthandler's own exit is the
fallback, with status 1. No ROS here: the node, the tools and the test suite all use it.
"""

import ctypes
import ctypes.util
import faulthandler
import sys
import threading
import time

SIGEV_THREAD = 2
CLOCK_MONOTONIC = 1
STEP_S = 0.05  # message, then flush, then exit: each in its own timer, in that order


class _Sigevent(ctypes.Structure):
    """struct sigevent of Linux (64 bytes): sigval, signo, notify, then the thread fields."""

    _fields_ = [
        ('sigev_value', ctypes.c_void_p),
        ('sigev_signo', ctypes.c_int),
        ('sigev_notify', ctypes.c_int),
        ('sigev_notify_function', ctypes.c_void_p),
        ('sigev_notify_attributes', ctypes.c_void_p),
        ('_pad', ctypes.c_int * 8),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [('it_interval', _Timespec), ('it_value', _Timespec)]


def _libc():
    """libc with timer_create (in librt before glibc 2.34), or None."""
    for name in (None, ctypes.util.find_library('rt')):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            lib.timer_create  # noqa: B018 - look-up only
            return lib
        except (OSError, AttributeError):
            continue
    return None


_LIBC = _libc() if sys.platform.startswith('linux') else None
# faulthandler has one timer per process: it is kept armed for the earliest live deadline
# that wants stacks (a teardown's inside a test's), and moved back when that one ends.
_live: list = []
_lock = threading.Lock()
_report_fd = None  # where the stacks and the line go; None: stderr and stdout


def report_to(fd) -> None:
    """Send the stacks and the line to file descriptor `fd` (pytest's terminal: the test's
    own stdout and stderr are captured to files that nobody reads once the process ends)."""
    global _report_fd
    _report_fd = fd


def _address(name: str) -> int:
    return ctypes.cast(getattr(_LIBC, name), ctypes.c_void_p).value


def _rearm_stacks() -> None:
    """Point faulthandler's timer at the earliest live deadline (under _lock)."""
    faulthandler.cancel_dump_traceback_later()
    if _live:
        first = min(_live, key=lambda d: d.at)
        left = max(first.at - time.monotonic() - STEP_S, 0.01)
        stacks_to = sys.stderr if _report_fd is None else _report_fd
        faulthandler.dump_traceback_later(left, exit=first.native is False, file=stacks_to)


class Deadline:
    """Unless cancelled within `seconds`: the stacks of all threads, then `message` on
    stdout, then the process ends with `status`. A context manager (cancelled on exit)."""

    def __init__(self, seconds: float, message: str, status: int = 0, stacks: bool = True):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._timers: list = []
        self._keep = []  # buffers the native threads read: alive until cancelled
        sys.stdout.flush()
        sys.stderr.flush()
        # Without a native timer, faulthandler's own exit (status 1) ends the process.
        self.native = _LIBC is not None and self._arm(message, status)
        if stacks or not self.native:
            with _lock:
                _live.append(self)
                _rearm_stacks()

    def _arm(self, message: str, status: int) -> bool:
        text = ctypes.create_string_buffer(message.encode('utf-8', 'replace'))
        self._keep.append(text)
        steps = ()
        if _report_fd is not None and _report_fd != 1:
            # close(1), then dup(fd) takes the lowest free descriptor, 1: puts() reaches fd.
            steps = (('close', 1), ('dup', _report_fd))
        steps += (
            ('puts', ctypes.cast(text, ctypes.c_void_p).value),
            ('fflush', None),  # NULL: every stdio stream
            ('_exit', status & 0xFF),
        )
        for i, (function, argument) in enumerate(steps):
            event = _Sigevent(
                sigev_value=argument,
                sigev_notify=SIGEV_THREAD,
                sigev_notify_function=_address(function),
            )
            timer = ctypes.c_void_p()
            if _LIBC.timer_create(CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)):
                self.cancel()
                return False
            self._timers.append(timer)
            when = self.seconds + i * STEP_S
            spec = _Itimerspec(it_value=_Timespec(int(when), int((when % 1) * 1e9)))
            if _LIBC.timer_settime(timer, 0, ctypes.byref(spec), None):
                self.cancel()
                return False
        return True

    def cancel(self) -> None:
        for timer in self._timers:
            _LIBC.timer_delete(timer)
        self._timers.clear()
        with _lock:
            if self in _live:
                _live.remove(self)
                _rearm_stacks()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()
