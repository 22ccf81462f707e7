"""`~/locate`: "where is it?" answered by the next processed frame (of one camera, or the
best view of every camera), with its 3D point in the frame asked for (depth, then TF).

The service awaits its answer (a coroutine in a reentrant group: the executor, which runs the
images and the timers that answer it, is never blocked); the engine's worker thread builds
the response from the frame and hands it to the executor.
"""

from __future__ import annotations

import math
import time

from geometry_msgs.msg import Point
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future
from std_msgs.msg import Header

import gem_ros.gem as gem
from gem_ros.ros.guards import answered
from gem_ros.ros.qos import SERVICE_QOS
from gem_ros.ros.queries_interface import QUERY_LOG_PERIOD_S
from gem_ros.ros.transforms import Transforms, TransformUnavailable, tf2_missing
from gem_ros.srv import Locate
from gem_ros.threads import cut

LOCATE_TIMEOUT_S = 5.0  # ~/locate's wait for a frame when the request gives none
MAX_LOCATE_TIMEOUT_S = 60.0


def locate_timeout(requested: float) -> float:
    """~/locate's wait for a frame: 0, negative or not finite means LOCATE_TIMEOUT_S (5 s),
    and at most MAX_LOCATE_TIMEOUT_S (60 s): a caller cannot hold a request for ever."""
    if not math.isfinite(requested) or requested <= 0:
        return LOCATE_TIMEOUT_S
    return min(requested, MAX_LOCATE_TIMEOUT_S)


class LocateService:
    def __init__(self, node, engine, cameras: dict, log):
        """node: the GemNode (its state, timers, executor mailbox and TF buffer, made here
        on the first call that asks for a frame); cameras: name -> Camera."""
        self._node, self._engine, self._cameras, self._log = node, engine, cameras, log
        # Its own reentrant group: a call awaiting its frame must not hold the default group,
        # which the images, timers and the guard condition that answer it belong to.
        node.create_service(
            Locate,
            '~/locate',
            answered(self._on_locate, log, '~/locate'),
            qos_profile=SERVICE_QOS,
            callback_group=ReentrantCallbackGroup(),
        )

    async def _on_locate(self, request, response):
        """Executor thread; awaits (never blocks) until a frame answers or the timeout."""
        timeout = locate_timeout(request.timeout)
        if not self._node.taking_frames:
            response.message = (
                f'the node is {self._node.lifecycle_state()}: it processes no frames until it is '
                'activated (lifecycle transition activate)'
            )
            return response
        camera = request.camera.strip() or None
        tf_frame = request.frame.strip()
        if tf_frame and self._node.transforms is None:
            missing = tf2_missing()
            if missing:
                response.message = f'cannot give the point in {cut(tf_frame, 40)!r}: {missing}'
                return response
            # Listening from now on: TF's static transforms arrive while the frame is awaited.
            node = self._node
            node.transforms = Transforms(node, node.get_parameter('tf_timeout').value)
        if camera is not None and camera not in self._cameras:
            response.message = (
                f'no camera {cut(camera, 40)!r}: this node has '
                + ', '.join(repr(c.name) for c in self._cameras.values())
                + " (or '' for the best view of every camera)"
            )
            return response
        reply = Future()

        def finish(answer) -> None:  # executor thread only
            if not reply.done():
                reply.set_result(answer)

        def on_frame(result, index: int) -> None:  # worker thread
            answer = self._locate_answer(result, index, tf_frame)
            self._node.call_on_executor(lambda: finish(answer))

        try:
            ask = self._engine.ask(request.query, on_frame, camera)
        except (gem.QueryError, RuntimeError) as exc:
            response.message = cut(f'cannot locate {cut(request.query, 40)!r}: {exc}')
            self._log(
                'error', 'locate refused', f'~/locate: {response.message}', QUERY_LOG_PERIOD_S
            )
            return response
        timer = self._node.create_timer(timeout, lambda: finish(None))
        try:
            answer = await reply
        finally:
            self._node.destroy_timer(timer)
        if answer is None:
            self._engine.withdraw(ask)
            response.message = (
                f'no frame processed within {timeout:g} s: {self._why_no_frame(camera)}'
            )
            return response
        return answer

    def _why_no_frame(self, camera=None) -> str:
        if self._engine.loaded is None:
            return 'no model loaded yet'
        cameras = [c for c in self._cameras.values() if camera is None or c.name == camera]
        heard = [c.last_frame_time for c in cameras if c.last_frame_time is not None]
        if not heard:
            return 'no images received on ' + ', '.join(c.image_topic for c in cameras)
        return f'the last image arrived {time.monotonic() - max(heard):.1f} s ago'

    def _locate_answer(self, result, index: int, tf_frame: str = ''):
        """~/locate's response from detection `index` of a FrameResult (worker thread); its
        point, from the frame's geometry (measured once, with its camera's outputs), in
        `tf_frame` where one is asked for."""
        frame, det, settings = result.frame, result.detections[index], result.settings
        header = frame.msg.header
        response = Locate.Response(
            found=det.found,
            confidence=det.confidence,
            score=det.score,
            header=header,
            peak_x=det.peak_x,
            peak_y=det.peak_y,
            camera=frame.camera.name,
        )
        response.point.header = header
        geometry = result.geometry
        point = geometry.points[index] if geometry is not None and det.found else None
        tf_failed = ''
        if point is not None and tf_frame and tf_frame != header.frame_id:
            try:
                point = geometry.point_in(index, tf_frame)
                # A header of its own: response.header stays the frame's.
                response.point.header = Header(stamp=header.stamp, frame_id=tf_frame)
            except TransformUnavailable as exc:
                point, tf_failed = None, f'; no point: {exc}'
        if point is not None:
            response.has_point = True
            response.point.point = Point(x=point[0], y=point[1], z=point[2])
        response.held = det.held
        if det.held:
            response.message = (
                f"{'found' if det.found else 'not found'} (held over frames; this frame's "
                f'confidence {det.confidence:.2f})'
            )
        else:
            response.message = (
                f'found (confidence {det.confidence:.2f})'
                if det.found
                else f'not found (confidence {det.confidence:.2f} < presence_threshold '
                f'{settings.frame.presence_threshold:g})'
            )
        response.message += tf_failed
        return response
