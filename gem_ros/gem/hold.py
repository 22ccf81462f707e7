"""Presence that holds: a query's found/absent decided over a few frames of one camera, not
per frame, so that a thing at the edge of the presence threshold does not flicker.

    hold = PresenceHold()                 # one per camera stream
    hold.update(detections, settings)     # each frame, in order: found, peaks smoothed

Per query: its confidence is smoothed (an exponential moving average over about `window`
frames). An absent query becomes found when the smoothed confidence reaches the presence
threshold plus `margin` on a frame that is itself over the threshold; a found one becomes
absent when it falls under the threshold minus `margin`, or when `lost_frames` frames in a
row are under the threshold itself. While found
its peak is smoothed the same way (restarted when it jumps by more than JUMP of the image's
diagonal: another instance, not the same one moving); lost, its state starts afresh. New
queries start afresh too: the state is per query, dropped when the query list changes.

The model judges such frames with no threshold (`judge_threshold`: every query comes with
its mask and peaks), and the hold marks the ones it holds absent. A query held found through a
frame under the threshold keeps that frame's mask, and its smoothed peak where that lies in
the mask (else the frame's own peak, and the average restarts there): a peak is always on
the mask it is published with. Detection.held says its found/absent is the held decision,
not the frame's alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

JUMP = 0.1  # of the image diagonal: a peak farther than that is a new place, not smoothed


@dataclass(frozen=True)
class HoldRule:
    """The hysteresis of PresenceHold; `threshold` is the presence threshold."""

    threshold: float = 0.5
    margin: float = 0.1
    window: int = 3
    lost_frames: int = 3

    @property
    def upper(self) -> float:
        return min(1.0, self.threshold + self.margin)

    @property
    def lower(self) -> float:
        return max(0.0, self.threshold - self.margin)

    @property
    def alpha(self) -> float:
        """The moving average's weight of the newest frame: 2 / (window + 1)."""
        return 2.0 / (self.window + 1)


def judge_threshold(rule: Optional[HoldRule], threshold: float) -> float:
    """The threshold the model judges a frame with: none (0) when held, as the hold
    decides found itself and a query it holds needs the frame's mask."""
    return threshold if rule is None else 0.0


def ema(previous: Optional[Sequence[float]], new: Sequence[float], alpha: float) -> tuple:
    """The moving average of a point (pixel or 3D): `new` alone when there is none yet."""
    if previous is None:
        return tuple(float(v) for v in new)
    return tuple(alpha * n + (1 - alpha) * p for p, n in zip(previous, new))


@dataclass
class _QueryState:
    confidence: float
    found: bool = False
    misses: int = 0  # frames in a row under the threshold while found
    peak: Optional[tuple] = None  # smoothed (x, y) while found


class PresenceHold:
    """The held presence of one camera's queries (not thread-safe: one thread updates)."""

    def __init__(self):
        self._queries: tuple = ()
        self._states: dict[str, _QueryState] = {}

    def reset(self) -> None:
        self._queries, self._states = (), {}

    def state(self, query: str) -> Optional[_QueryState]:
        return self._states.get(query)

    def update(self, detections: list, rule: HoldRule) -> None:
        """Decide found for each of a frame's detections (in place), in frame order."""
        queries = tuple(d.query for d in detections)
        if queries != self._queries:
            self._queries, self._states = queries, {}
        for det in detections:
            self._update_one(det, rule)

    def _update_one(self, det, rule: HoldRule) -> None:
        s = self._states.get(det.query)
        if s is None:
            s = self._states[det.query] = _QueryState(det.confidence)
        else:
            s.confidence = rule.alpha * det.confidence + (1 - rule.alpha) * s.confidence
        if s.found:
            s.misses = s.misses + 1 if det.confidence < rule.threshold else 0
            if s.confidence < rule.lower or s.misses >= rule.lost_frames:
                s.found, s.misses, s.peak = False, 0, None
        elif s.confidence >= rule.upper and det.confidence >= rule.threshold:
            s.found, s.misses, s.peak = True, 0, None
        det.held = True
        if not s.found:
            if det.found:
                det.mark_absent(det.confidence)
            return
        height, width = det.mask.shape[-2:]
        frame_peak = (det.peak_x, det.peak_y)
        if s.peak is not None and math.dist(s.peak, frame_peak) > JUMP * math.hypot(height, width):
            s.peak = None  # another place: start the average afresh
        s.peak = ema(s.peak, frame_peak, rule.alpha)
        x, y = (int(round(v)) for v in s.peak)
        if det.area and not det.mask[y, x]:  # off this frame's mask: restart on its peak
            s.peak = tuple(float(v) for v in frame_peak)
            x, y = frame_peak
        det.peak_x, det.peak_y = x, y
