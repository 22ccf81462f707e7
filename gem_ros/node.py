"""gem_node: GEM open-vocabulary localisation on camera images.

Threads: the executor thread runs the callbacks (images, queries, service, parameters) and
only hands frames over; a worker thread converts and runs the newest frame through the model;
a loader thread builds models, so a model (re)load never blocks queries or the current model.
"""
import threading
import time

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

import gem_ros.gem as gem
from gem_ros.depth_input import DepthInput
from gem_ros.depth_parameters import DEPTH_PARAMETERS
from gem_ros.image_conversion import (compressed_msg_to_rgb, image_msg_to_rgb,
                                      mask_to_image_msg, rgb_to_image_msg)
from gem_ros.latest_slot import LatestSlot
from gem_ros.markers import QueryMarkers
from gem_ros.msg import GemResult, QueryResult
from gem_ros.node_parameters import MODEL_PARAMETERS, PARAMETERS, check_value
from gem_ros.overlay import draw_overlay
from gem_ros.srv import SetQueries

DECLARED_PARAMETERS = PARAMETERS + DEPTH_PARAMETERS
IMAGE_QOS = {
    'sensor_data': QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.BEST_EFFORT),
    'reliable': QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE),
}
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# A transient-local subscription does not match volatile publishers (the default of most
# tools), so `queries` is also heard through a best-effort volatile one, which matches all.
ANY_PUBLISHER_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                               reliability=ReliabilityPolicy.BEST_EFFORT)
ERROR_LOG_PERIOD_S = 5.0
STATS_PERIOD_S = 30.0
POLL_S = 0.5  # how often idle threads look at the stop flag


class LogThrottle:
    """Per-message throttling: the same text at most once per period, different texts at once
    (rclpy's throttle is per call site, which would hide a second, different error)."""

    def __init__(self, period_s: float):
        self._period_s = period_s
        self._last: dict[str, float] = {}

    def due(self, text: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(text, -self._period_s) < self._period_s:
            return False
        if len(self._last) > 256:  # bounded: forget texts not seen within a period
            self._last = {t: s for t, s in self._last.items() if now - s < self._period_s}
        self._last[text] = now
        return True


class GemNode(Node):
    def __init__(self):
        super().__init__('gem')
        # Registered before declaring, so start-up values are checked too.
        self.add_on_set_parameters_callback(self._check_parameters)
        for spec in DECLARED_PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_post_set_parameters_callback(self._parameters_changed)

        self._throttle = LogThrottle(ERROR_LOG_PERIOD_S)
        # Guards the (model, queries) pair and every call into a model: encoding queries and
        # inference never run at once, and a frame always sees queries its model has encoded.
        self._lock = threading.Lock()
        self._model = None
        # Checked when declared; encoded once a model is loaded.
        self._queries: list[str] = gem.check_queries(
            self._queries_from_parameter(self.get_parameter('queries').value))
        self._frames = LatestSlot()
        self._model_requests = LatestSlot()
        self._stop = threading.Event()
        self._processed = 0
        self._reported = (0, 0)  # (processed, dropped) at the last stats report
        self._last_overlay = 0.0
        self._recent_query_msgs: list[tuple] = []

        self._results_pub = self.create_publisher(GemResult, '~/results', 5)
        self._overlay_pub = self.create_publisher(Image, '~/overlay', 1)
        self._active_pub = self.create_publisher(String, '~/active_queries', LATCHED_QOS)
        self.create_service(SetQueries, '~/set_queries', self._on_set_queries)

        self.get_logger().info(f'active queries: {self._describe_queries()}')
        self._publish_active()
        # Volatile publishers do not match the latched subscription but reach the other one:
        # no warning about that.
        quiet = SubscriptionEventCallbacks(incompatible_qos=lambda _: None)
        self.create_subscription(String, 'queries', self._on_queries_msg, LATCHED_QOS,
                                 event_callbacks=quiet)
        self.create_subscription(String, 'queries', self._on_queries_msg, ANY_PUBLISHER_QOS)

        image_qos = IMAGE_QOS[self.get_parameter('image_qos').value]
        self.create_subscription(Image, 'image', self._on_image, image_qos)
        if self.get_parameter('use_compressed').value:
            # image_transport's naming: follows a remapping of `image`.
            topic = self.resolve_topic_name('image') + '/compressed'
            self.create_subscription(CompressedImage, topic, self._on_compressed, image_qos)
        # 3D points of the peaks from depth + camera_info, shown as rviz markers.
        self._depth = DepthInput(self) if self.get_parameter('use_depth').value else None
        if self._depth is not None:
            self._markers = QueryMarkers()
            self._markers_pub = self.create_publisher(MarkerArray, '~/markers', 5)
        self.create_timer(STATS_PERIOD_S, self._report_stats)

        self._threads = [threading.Thread(target=self._work, name='gem-inference', daemon=True),
                         threading.Thread(target=self._load_models, name='gem-loader',
                                          daemon=True)]
        for thread in self._threads:
            thread.start()
        self._model_requests.put(self._model_config())

    # --- parameters -----------------------------------------------------------------------
    def _check_parameters(self, params) -> SetParametersResult:
        for param in params:
            reason = check_value(param.name, param.value)
            if reason is None and param.name == 'queries':
                try:
                    gem.check_queries(self._queries_from_parameter(param.value))
                except gem.QueryError as exc:
                    reason = f'bad queries: {exc}'
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _parameters_changed(self, params) -> None:
        names = {param.name for param in params}
        if names & MODEL_PARAMETERS:
            self._model_requests.put(self._model_config())
        for param in params:
            if param.name == 'queries':
                self._set_queries(self._queries_from_parameter(param.value),
                                  'the queries parameter')

    def _model_config(self) -> dict:
        value = {name: self.get_parameter(name).value for name in MODEL_PARAMETERS}
        return dict(model=value['model'], pretrained=value['pretrained'] or None,
                    method=value['method'], depth=value['gem_depth'],
                    ss_attn_iter=value['ss_attn_iter'],
                    ss_attn_temp=value['ss_attn_temp'] or None,  # 0 = adaptive
                    device=value['device'], precision=value['precision'],
                    prompt_template=value['prompt_template'])

    @staticmethod
    def _queries_from_parameter(value) -> list[str]:
        if isinstance(value, str):
            return gem.parse_queries(value)
        return [q for q in value or () if q.strip()]

    # --- queries --------------------------------------------------------------------------
    def _on_queries_msg(self, msg: String, info) -> None:
        # A reliable publisher reaches both subscriptions: apply each sample once.
        key = (info['source_timestamp'], msg.data)
        if key in self._recent_query_msgs:
            return
        self._recent_query_msgs = self._recent_query_msgs[-15:] + [key]
        queries = gem.parse_queries(msg.data)
        if not queries:
            self.get_logger().error(
                f"no queries in {msg.data!r} on {self.resolve_topic_name('queries')}; keeping "
                f'the active queries {self._describe_queries()} (to clear them, call '
                '~/set_queries with an empty list)')
            return
        self._set_queries(queries, 'the queries topic')

    def _on_set_queries(self, request, response):
        queries = [q for q in request.queries if q.strip()]
        if request.queries and not queries:
            response.success = False
            response.message = (f'all {len(request.queries)} queries are blank (send an empty '
                                'list to clear them); keeping the active queries '
                                f'{self._describe_queries()}')
            self.get_logger().error(f'~/set_queries: {response.message}')
            return response
        response.success, response.message = self._set_queries(queries, '~/set_queries')
        return response

    def _set_queries(self, queries: list[str], source: str) -> tuple[bool, str]:
        """Check, encode and activate `queries`; on error log it and keep the active ones."""
        try:
            queries = gem.check_queries(queries)
            with self._lock:
                if self._model is not None and queries:
                    queries = self._model.set_queries(queries)
                changed = queries != self._queries
                self._queries = queries
        except Exception as exc:  # QueryError, or the model failing to encode them
            reason = exc if isinstance(exc, gem.QueryError) else f'{type(exc).__name__}: {exc}'
            message = (f'rejected queries from {source}: {reason}; keeping the active queries '
                       f'{self._describe_queries()}')
            self.get_logger().error(message)
            return False, message
        message = f'active queries: {self._describe_queries()}'
        if changed:
            self.get_logger().info(f'{message} (from {source})')
            self._publish_active()
        return True, message

    def _describe_queries(self) -> str:
        return f"[{'; '.join(self._queries)}]"

    def _publish_active(self) -> None:
        self._publish(self._active_pub, String(data='; '.join(self._queries)))

    # --- frames ---------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._offer(msg, image_msg_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._offer(msg, compressed_msg_to_rgb)

    def _offer(self, msg, to_rgb) -> None:
        if not self._queries:
            return  # nothing asked: the frame is not even converted
        if self._model is None:
            self._log_throttled('info', 'no model loaded yet: frames are skipped until one is')
            return
        self._frames.put((msg, to_rgb))

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._frames.take(POLL_S)
            if item is None:
                continue
            started = time.monotonic()
            try:
                self._process(*item)
            except Exception as exc:  # the node keeps serving whatever one frame does
                self._log_throttled('error', f'frame failed: {type(exc).__name__}: {exc}')
            max_rate = self.get_parameter('max_rate_hz').value
            if max_rate > 0:
                self._stop.wait(started + 1.0 / max_rate - time.monotonic())

    def _process(self, msg, to_rgb) -> None:
        try:
            rgb = to_rgb(msg)
        except ValueError as exc:
            kind = 'compressed image' if isinstance(msg, CompressedImage) else 'image'
            self._log_throttled('error', f'bad {kind} (frame_id {msg.header.frame_id!r}): {exc}')
            return
        mask_threshold = self.get_parameter('mask_threshold').value
        input_size = self.get_parameter('input_size').value
        with self._lock:
            model, queries = self._model, self._queries
            if model is None or not queries:
                return
            started = time.perf_counter()
            detections = model.locate(rgb, queries, mask_threshold=mask_threshold,
                                      input_size=input_size)
            seconds = time.perf_counter() - started
        self._processed += 1
        header = msg.header
        height, width = rgb.shape[:2]
        points = (self._depth.points_for(header, (width, height), detections)
                  if self._depth is not None else [{}] * len(detections))
        result = GemResult(header=header, inference_seconds=seconds, results=[
            QueryResult(query=d.query, score=d.score, peak_x=d.peak_x, peak_y=d.peak_y,
                        bbox=RegionOfInterest(x_offset=d.bbox[0], y_offset=d.bbox[1],
                                              width=d.bbox[2], height=d.bbox[3]),
                        area=d.area, mask=mask_to_image_msg(d.mask, header), **point)
            for d, point in zip(detections, points)])
        self._publish(self._results_pub, result)
        if self._depth is not None:
            markers = self._markers.build(result)
            if markers.markers:
                self._publish(self._markers_pub, markers)
        if self._overlay_due():
            overlay = draw_overlay(rgb, detections)
            self._publish(self._overlay_pub, rgb_to_image_msg(overlay, header))

    def _overlay_due(self) -> bool:
        if not self.get_parameter('publish_overlay').value:
            return False
        if self._overlay_pub.get_subscription_count() == 0:
            return False  # drawing costs time; nobody would see it
        max_rate = self.get_parameter('overlay_max_rate_hz').value
        now = time.monotonic()
        if max_rate > 0 and now - self._last_overlay < 1.0 / max_rate:
            return False
        self._last_overlay = now
        return True

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        while not self._stop.is_set():
            config = self._model_requests.take(POLL_S)
            if config is not None:
                self._load(config)

    def _load(self, config: dict) -> None:
        what = (f"model {config['model']!r} (pretrained {config['pretrained'] or 'none'}, "
                f"method {config['method']}, device {config['device']}, "
                f"precision {config['precision']})")
        self.get_logger().info(f'loading {what}')
        started = time.monotonic()
        try:
            model = gem.load_model(**config)
        except Exception as exc:  # ModelLoadError, or ValueError for a bad combination
            keeping = ('keeping the previous model' if self._model is not None else
                       'no model loaded: frames are not processed until one loads')
            self.get_logger().error(f'could not load {what}: {exc}; {keeping}')
            return
        with self._lock:
            try:
                if self._queries:
                    model.set_queries(self._queries)
            except Exception as exc:  # QueryError (e.g. a shorter context), or encoding failed
                self.get_logger().error(f'the new {what} rejects the active queries: {exc}; '
                                        'keeping the previous model')
                return
            self._model = model
        self.get_logger().info(f'loaded {what} on {model.device} in '
                               f'{time.monotonic() - started:.1f} s')

    # --- plumbing -------------------------------------------------------------------------
    def _publish(self, publisher, msg) -> None:
        try:
            publisher.publish(msg)
        except RCLError as exc:  # Fast DDS occasionally fails a publish under load
            if self.context.ok():  # else shutting down: a frame in flight has nowhere to go
                self._log_throttled('warning',
                                    f'publishing on {publisher.topic_name} failed: {exc}')

    def _log_throttled(self, level: str, text: str) -> None:
        if self._throttle.due(text):
            getattr(self.get_logger(), level)(text)

    def _report_stats(self) -> None:
        processed, dropped = self._processed, self._frames.replaced
        new_processed, new_dropped = (processed - self._reported[0], dropped - self._reported[1])
        self._reported = (processed, dropped)
        if new_dropped:
            self.get_logger().info(
                f'last {STATS_PERIOD_S:.0f} s: {new_processed} frames processed, {new_dropped} '
                'older frames dropped (only the newest frame is processed)')

    def close(self) -> None:
        self._stop.set()
        self._frames.close()
        self._model_requests.close()
        for thread in self._threads:
            thread.join(timeout=5.0)


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = GemNode()
    except Exception as exc:  # bad start-up parameters: say which, exit without a traceback
        rclpy.logging.get_logger('gem').fatal(f'cannot start: {exc}')
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
