"""What the frames are asked, with no ROS: the active queries (shared by every camera, or a
camera's own) and the one-off questions waiting for a frame.

    book.set(['red mug', 'person'])           # the shared queries (checked by the caller)
    book.set(['mug handle'], 'wrist')         # the wrist camera's own; None: shared again
    book.of('wrist')                          # what a wrist frame runs
    request = book.ask('fire extinguisher', answer, camera=None)
    asks, extra = book.take_asks({'wrist': [...], 'head': [...]})   # for one cycle's frames

One lock, held only to read or assign: a camera callback never waits on a model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

import gem_ros.gem as gem

MAX_ASKS = 64  # one-off questions waiting for a frame; more are refused at once


@dataclass(eq=False)
class Ask:
    """A one-off query answered by the next processed frame of `camera` (None: of any
    camera, the best view among the frames of that cycle): answer(result, index) is called on
    the worker thread, once, with the FrameResult and the index of the query's detection."""

    query: str
    answer: Callable
    camera: Optional[str] = None


class QueryBook:
    def __init__(self):
        self._lock = threading.Lock()
        self._shared: list[str] = []  # every camera without queries of its own
        self._own: dict[str, list[str]] = {}  # camera -> its own queries
        self._asks: list[Ask] = []

    @property
    def shared(self) -> list[str]:
        return self._shared

    def of(self, camera: str) -> list[str]:
        """The queries frames of `camera` are run with: its own, or the shared ones."""
        with self._lock:
            return self._own.get(camera, self._shared)

    def has_own(self, camera: str) -> bool:
        with self._lock:
            return camera in self._own

    def snapshot(self) -> tuple[list[str], dict[str, list[str]]]:
        """(shared, {camera: own}) at one moment."""
        with self._lock:
            return self._shared, dict(self._own)

    def all_lists(self) -> list[list[str]]:
        """The shared queries and each camera's own."""
        with self._lock:
            return [self._shared, *self._own.values()]

    def if_unchanged(self, lists: list[list[str]], action: Callable[[], None]) -> bool:
        """Run `action` (under the lock) if all_lists() is still `lists`; whether it ran."""
        with self._lock:
            if [self._shared, *self._own.values()] != lists:
                return False
            action()
            return True

    def set(self, checked: Optional[list[str]], camera: Optional[str] = None) -> bool:
        """Activate checked queries: the shared ones, or with `camera` that camera's own (None
        for queries: the camera uses the shared ones again); whether what that camera (or
        the shared list) runs changed."""
        with self._lock:
            if camera is None:
                changed = checked != self._shared
                self._shared = checked
            elif checked is None:
                own = self._own.pop(camera, None)
                changed = own is not None and own != self._shared
            else:
                changed = checked != self._own.get(camera, self._shared)
                self._own[camera] = checked
        return changed

    def wanted(self, camera: str) -> bool:
        """Whether a frame of `camera` has anything to run: active queries or a question."""
        with self._lock:
            return bool(self._own.get(camera, self._shared) or self._asks)

    # --- questions ------------------------------------------------------------------------
    def ask(self, query: str, answer: Callable, camera: Optional[str] = None) -> Ask:
        """A question (checked by the caller); RuntimeError when MAX_ASKS already wait."""
        request = Ask(query, answer, camera)
        with self._lock:
            if len(self._asks) >= MAX_ASKS:
                raise RuntimeError(f'{MAX_ASKS} questions are already waiting for a frame')
            self._asks.append(request)
        return request

    def withdraw(self, request: Ask) -> bool:
        """Take back a question not answered yet; whether it was still waiting."""
        with self._lock:
            if request in self._asks:
                self._asks.remove(request)
                return True
        return False

    def any_camera_asked(self) -> bool:
        """Whether a question for the best view of any camera waits."""
        with self._lock:
            return any(request.camera is None for request in self._asks)

    def take_asks(self, active: dict) -> tuple[list[Ask], dict]:
        """The waiting questions the frames of these cameras ({camera: its active queries})
        answer, and the queries they add to each camera's, within MAX_QUERIES per frame; the
        rest wait for a later frame."""
        taken, extra = [], {camera: [] for camera in active}
        with self._lock:
            for request in list(self._asks):
                cameras = [s for s in active if request.camera in (None, s)]
                new = [s for s in cameras if request.query not in active[s] + extra[s]]
                if not cameras or any(
                    len(active[s]) + len(extra[s]) >= gem.MAX_QUERIES for s in new
                ):
                    continue
                for s in new:
                    extra[s].append(request.query)
                taken.append(request)
                self._asks.remove(request)
        return taken, extra

    def put_back(self, asks: list[Ask]) -> None:
        """Questions a frame did not answer (failed, or another camera's): first in line."""
        with self._lock:
            self._asks[:0] = asks
