"""Small thread helpers of the node: a newest-only hand-over slot and a throttled log.

No ROS imports: the log takes any logger with info/warning/error methods (rclpy's, or
Python's logging).
"""

import re
import threading
import time

MAX_LOG_CHARS = 600  # a message field can be megabytes; a log line never is
MAX_KINDS = 256


class LatestSlot:
    """A one-slot hand-over between threads where only the newest item matters.

    The executor thread puts camera frames (or model load requests); a worker thread takes
    them. A put replaces an item not taken yet, so a slow consumer never builds a backlog;
    the replaced items are counted.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.replaced = 0  # items dropped unseen because a newer one arrived

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float):
        """The newest item (emptying the slot), or None after `timeout` s or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class LatestSlots:
    """LatestSlot per key (a camera): a put replaces only its own key's item, and a
    take hands over every waiting item at once, so the next cycle serves each camera's
    newest item, whatever rate the others put at (a 30 Hz camera never starves a 1 Hz one).
    Replaced items are counted per key."""

    def __init__(self):
        self._cond = threading.Condition()
        self._items: dict = {}  # key -> item, in the order the keys first waited
        self._closed = False
        self.replaced: dict = {}  # key -> items dropped unseen because a newer one arrived

    def put(self, key, item):
        """Put `item` as `key`'s newest; the item it replaced, or None."""
        with self._cond:
            replaced = self._items.get(key)
            if key in self._items:
                self.replaced[key] = self.replaced.get(key, 0) + 1
            self._items[key] = item
            self._cond.notify()
            return replaced

    def put_all(self, items) -> list:
        """Put several (key, item) in one hand-over, so that a taker gets all of them or none
        (one cycle's frames stay one batch); the items they replaced."""
        replaced = []
        with self._cond:
            for key, item in items:
                if key in self._items:
                    self.replaced[key] = self.replaced.get(key, 0) + 1
                    replaced.append(self._items[key])
                self._items[key] = item
            self._cond.notify()
        return replaced

    def take_all(self, timeout: float) -> list:
        """[(key, item)] of every waiting key (emptying the slots), oldest waiting first; []
        after `timeout` s or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            items, self._items = list(self._items.items()), {}
            return items

    @property
    def total_replaced(self) -> int:
        with self._cond:
            return sum(self.replaced.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RateGate:
    """At most `rate_hz` passes a second (0: every one): the node's optional outputs
    (overlay, heatmaps) are drawn only as often as their max rate says."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock  # seconds; tests pass their own
        self._last = None

    def due(self, rate_hz: float) -> bool:
        """Whether to pass now; a pass is remembered."""
        now = self._clock()
        if rate_hz > 0 and self._last is not None and now - self._last < 1.0 / rate_hz:
            return False
        self._last = now
        return True


def cut(text: str, limit: int = MAX_LOG_CHARS) -> str:
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text) - limit} more chars)'


class ThrottledLog:
    """Logging for threads that must not die of it, and cannot flood.

    - One line per (severity, kind) per period, whatever the text: 300 frames each truncated
      differently give one error, and the next one says how many were held back.
    - Each severity is logged from its own call site: rclpy refuses a second severity from one
      call site ("Logger severity cannot be changed between calls").
    - Never raises: a failing logger (e.g. during shutdown) loses the line, not the thread.
    """

    def __init__(self, logger, period_s: float, clock=time.monotonic):
        self._logger = logger
        self._period_s = period_s
        self._clock = clock  # seconds; tests pass their own
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def __call__(self, level: str, kind: str, text: str, period_s: float = None) -> bool:
        """Log `text` unless a line of this level and kind went out within the period;
        returns whether it was logged."""
        period = self._period_s if period_s is None else period_s
        key = (level, kind)
        now = self._clock()
        with self._lock:
            if now - self._last.get(key, -period) < period:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            if len(self._last) >= MAX_KINDS:  # bounded: forget kinds quiet for a period
                self._last = {k: t for k, t in self._last.items() if now - t < period}
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            text += f' ({held} more like it in the last {period:g} s not logged)'
        self.now(level, cut(text))
        return True

    def now(self, level: str, text: str) -> None:
        """Log at once, never raising."""
        try:
            if level == 'error':
                self._logger.error(text)
            elif level == 'warning':
                self._logger.warning(text)
            else:
                self._logger.info(text)
        except Exception:  # noqa: BLE001 - logging must not take a thread down
            pass


def error_kind(exc: Exception) -> str:
    """What a throttle keys an error by: its first words with numbers masked, so
    'truncated image data: 2294 bytes...' and '...: 17 bytes...' are one kind."""
    return ' '.join(re.sub(r'\d+', '#', str(exc)).split()[:3])
