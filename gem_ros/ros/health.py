"""The node's health: /diagnostics once a second (the node, and each camera when there are
several) and a log line every STATS_PERIOD_S when frames were dropped. It reads the engine's
counters and the cameras'; of the node, only what `NodeState` holds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray

from gem_ros.ros import diagnostics
from gem_ros.ros.camera import publish
from gem_ros.settings import ModelSettings

STATS_PERIOD_S = 30.0


@dataclass(frozen=True)
class NodeState:
    """What the node tells its health each second."""

    taking_frames: bool  # subscribed to the cameras (active)
    model_wanted: bool  # a model is loaded or being loaded (configured)
    lifecycle: str
    model_settings: ModelSettings  # of the parameters (the model wanted)
    frame_timeout_s: float
    min_rate_hz: float


class Health:
    def __init__(self, node, engine, cameras: dict, memory, state: Callable[[], NodeState]):
        """node: for its publisher, timers and name; cameras: name -> Camera; memory: the
        node's memory of sightings (its file's state is reported) or None."""
        self._node, self._engine, self._cameras, self._memory = node, engine, cameras, memory
        self._node_state = state
        self._log = node._log
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._reported = (0, 0)  # (processed, dropped) at the last stats report
        self._diagnosed = (0, 0, 0, time.monotonic())  # frames in, processed, dropped, when
        node.create_timer(STATS_PERIOD_S, self.report_stats)
        node.create_timer(diagnostics.PERIOD_S, self.publish_diagnostics)

    def _frames_in(self) -> int:
        return sum(c.frames_in for c in self._cameras.values())

    def restart_period(self) -> None:
        """Frames start (again): time without frames counts from now."""
        self._diagnosed = (self._frames_in(), *self._diagnosed[1:3], time.monotonic())

    def report_stats(self) -> None:
        processed, dropped = self._engine.processed, self._engine.dropped
        new_processed, new_dropped = (processed - self._reported[0], dropped - self._reported[1])
        self._reported = (processed, dropped)
        if new_dropped:
            self._log.now(
                'info',
                f'last {STATS_PERIOD_S:.0f} s: {new_processed} frames '
                f'processed, {new_dropped} older frames dropped (only the newest '
                'frame is processed)',
            )

    def publish_diagnostics(self) -> None:
        now, state, engine = time.monotonic(), self._node_state(), self._engine
        frames_in, processed, dropped, since = self._diagnosed
        self._diagnosed = (self._frames_in(), engine.processed, engine.dropped, now)
        # Time without frames counts from the last frame, or from when frames were started.
        cameras = list(self._cameras.values())
        heard = [c.last_frame_time for c in cameras if c.last_frame_time is not None]
        last = max(heard) if heard else min(c.started for c in cameras)
        loaded, failed = engine.loaded, engine.last_load_error
        snapshot = diagnostics.Snapshot(
            period_s=max(now - since, 1e-3),
            frames_in=self._frames_in() - frames_in,
            processed=engine.processed - processed,
            dropped=engine.dropped - dropped,
            latencies_s=engine.take_latencies(),
            since_last_frame_s=now - last if state.taking_frames else None,
            result_age_s=None if engine.last_result_time is None else now - engine.last_result_time,
            model_wanted=state.model_wanted,
            model_loaded=loaded is not None,
            load_error=failed[1] if failed is not None and loaded is None else '',
            active=state.taking_frames,
            lifecycle=state.lifecycle,
            frame_timeout_s=state.frame_timeout_s,
            min_rate_hz=state.min_rate_hz,
            degraded=self._memory_problem(),
        )
        device, info = self._model_info(state, loaded)
        node = self._node.get_fully_qualified_name().lstrip('/')
        per_camera = (
            [self._camera_status(c, now, snapshot, node, device, state) for c in cameras]
            if len(cameras) > 1
            else []
        )
        publish(
            self._node,
            self._pub,
            diagnostics.status_message(snapshot, f'{node}: inference', device, info, per_camera),
        )

    def _model_info(self, state: NodeState, loaded) -> tuple[str, dict]:
        settings = loaded or state.model_settings
        model = self._engine.model
        device = str(model.device) if model is not None else settings.device
        info = {
            'model': f'{settings.model} ({settings.pretrained})',
            'method': settings.method,
            'device': device,
            'precision': model.precision if model is not None else settings.precision,
            'backend': settings.backend,
            'queries': '; '.join(self._engine.queries),
            'model state': 'loaded' if loaded else ('loading' if state.model_wanted else 'none'),
            'lifecycle state': state.lifecycle,
        }
        if self._memory is not None:
            info['memory file'] = self._memory.file_state()
        return device, info

    def _memory_problem(self) -> str:
        if self._memory is None or not self._memory.file_problem:
            return ''
        return f'memory_file not kept: {self._memory.file_problem}'

    def _camera_status(self, camera, now, node_snapshot, node: str, device: str, state):
        """One camera's period: its rates, drops, latency and result age, judged as the
        node's are (a silent camera warns)."""
        frames_in, processed, dropped, since = camera.diagnosed
        camera_dropped = self._engine.dropped_of(camera.name)
        camera.diagnosed = (camera.frames_in, camera.processed, camera_dropped, now)
        last = camera.last_frame_time or camera.started
        snapshot = dataclasses.replace(
            node_snapshot,
            period_s=max(now - since, 1e-3),
            frames_in=camera.frames_in - frames_in,
            processed=camera.processed - processed,
            dropped=camera_dropped - dropped,
            latencies_s=camera.take_latencies(),
            since_last_frame_s=now - last if state.taking_frames else None,
            result_age_s=(
                None if camera.last_result_time is None else now - camera.last_result_time
            ),
        )
        info = {
            'camera': camera.name,
            'image topic': camera.image_topic,
            'queries': '; '.join(self._engine.queries_of(camera.name))
            + (' (its own)' if self._engine.has_own_queries(camera.name) else ' (shared)'),
        }
        return diagnostics.status(snapshot, f'{node}: camera {camera.name}', device, info)
