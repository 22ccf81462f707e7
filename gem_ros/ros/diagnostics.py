"""The node's status on /diagnostics (diagnostic_msgs/DiagnosticArray), once a second.

One DiagnosticStatus named after the node ('gem: inference'), hardware_id the device, with
what an operator checks first: frames in and processed per second, frames dropped, inference
latency (median and max over the period), the age of the last result, and what runs (model,
method, device, precision, backend, queries, load and lifecycle state).

Levels (`assess`, no ROS): ERROR when the node wants a model and has none (loading, or its
load failed: the message says which); WARN when active and no frame arrived for
`diagnostics_frame_timeout_s`, or frames arrive but fewer than `diagnostics_min_rate_hz` are
processed per second; OK otherwise, an unconfigured or inactive managed node included (it was
asked to be idle).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
PERIOD_S = 1.0


@dataclass
class Snapshot:
    """What the node saw over one period."""

    period_s: float
    frames_in: int
    processed: int
    dropped: int
    latencies_s: list = field(default_factory=list)
    since_last_frame_s: Optional[float] = None  # since the last frame, or since frames started
    result_age_s: Optional[float] = None
    model_wanted: bool = True
    model_loaded: bool = False
    load_error: str = ''
    active: bool = True
    lifecycle: str = 'active'
    frame_timeout_s: float = 5.0
    min_rate_hz: float = 0.0
    # Something the node serves without (memory_file not kept, say): WARN with it, when
    # nothing worse is to be said.
    degraded: str = ''


def assess(s: Snapshot) -> tuple[bytes, str]:
    """(level, message) of a period."""
    if s.model_wanted and not s.model_loaded:
        return ERROR, f'no model loaded: {s.load_error}' if s.load_error else 'no model loaded yet'
    if not s.active:
        return OK, f'{s.lifecycle}: not processing frames'
    if s.since_last_frame_s is not None and s.since_last_frame_s > s.frame_timeout_s:
        return WARN, (
            f'no camera frame for {s.since_last_frame_s:.1f} s (diagnostics_frame_timeout_s '
            f'{s.frame_timeout_s:g})'
        )
    rate = s.processed / s.period_s
    if s.min_rate_hz > 0 and rate < s.min_rate_hz:
        return WARN, f'processing {rate:.2f} frames/s, under the minimum {s.min_rate_hz:g}'
    if s.degraded:
        return WARN, f'processing {rate:.2f} frames/s; {s.degraded}'
    return OK, f'processing {rate:.2f} frames/s'


def status_message(
    s: Snapshot, name: str, hardware_id: str, info: dict[str, str], more=()
) -> DiagnosticArray:
    """The node's status, then `more` (one per camera of a node with several)."""
    return DiagnosticArray(status=[status(s, name, hardware_id, info), *more])


def status(s: Snapshot, name: str, hardware_id: str, info: dict[str, str]) -> DiagnosticStatus:
    level, message = assess(s)
    latencies = s.latencies_s
    values = {
        'input rate (Hz)': f'{s.frames_in / s.period_s:.2f}',
        'processed rate (Hz)': f'{s.processed / s.period_s:.2f}',
        'dropped frames': str(s.dropped),
        'latency median (ms)': f'{statistics.median(latencies) * 1e3:.1f}' if latencies else '',
        'latency max (ms)': f'{max(latencies) * 1e3:.1f}' if latencies else '',
        'result age (s)': '' if s.result_age_s is None else f'{s.result_age_s:.2f}',
        **info,
    }
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
