"""A one-slot hand-over between threads where only the newest item matters.

The executor thread puts camera frames (or model load requests); a worker thread takes them.
A put replaces an item not taken yet, so a slow consumer never builds a backlog; the
replaced items are counted.
"""
import threading


class LatestSlot:
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
