"""gem_node: GEM open-vocabulary localisation on camera images.

Threads, and what each may wait on:
- the executor thread runs every callback (images, queries, services, parameters). It never
  waits on the model: it checks queries (characters, count, tokens: milliseconds), swaps them
  in under a lock that is only ever held for assignments, and hands frames over;
- a worker thread converts and runs the newest frame through the model (text embeddings of
  new queries are computed there, once, before the frame that first uses them);
- a loader thread builds models; the old model serves until the new one is ready.
Work done for the executor by the other threads (putting parameters back after a failed
load) is queued and run by the executor through a guard condition.
"""
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
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
from gem_ros.markers import QueryMarkers
from gem_ros.msg import GemResult, QueryResult
from gem_ros.node_parameters import (MODEL_PARAMETERS, PARAMETERS, check_input_budget,
                                     check_value)
from gem_ros.overlay import draw_overlay
from gem_ros.srv import SetQueries
from gem_ros.threads import LatestSlot, ThrottledLog, cut

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
# Requests kept until answered: the default depth of 10 loses calls from a burst of clients.
SERVICE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL,
                         reliability=ReliabilityPolicy.RELIABLE)
ERROR_LOG_PERIOD_S = 5.0
QUERY_LOG_PERIOD_S = 1.0  # rejected queries: people and scripts, not sensors, send them
IDLE_LOG_PERIOD_S = 30.0  # 'frames skipped because ...' lines
STATS_PERIOD_S = 30.0
POLL_S = 0.5  # how often idle threads look at the stop flag
STOP_WAIT_S = 0.5  # at stop, how long a model load (which cannot be interrupted) is waited for


@dataclass(frozen=True)
class FrameSettings:
    """The parameters a frame is processed with, read once per change (one snapshot, so a
    frame never mixes values of two parameter changes)."""
    mask_threshold: float
    input_size: int
    max_input_pixels: int
    max_image_pixels: int
    max_rate_hz: float
    publish_overlay: bool
    overlay_max_rate_hz: float


def model_config(values: dict) -> dict:
    """load_model's arguments from the model parameters' values."""
    return dict(model=values['model'], pretrained=values['pretrained'] or None,
                method=values['method'], depth=values['gem_depth'],
                ss_attn_iter=values['ss_attn_iter'],
                ss_attn_temp=values['ss_attn_temp'] or None,  # 0 = adaptive
                device=values['device'], precision=values['precision'],
                prompt_template=values['prompt_template'])


def queries_from_parameter(value) -> list[str]:
    """The queries parameter's value (a string split on ',' and ';', or a string array) as a
    query list; QueryError for a non-empty string that holds no query (e.g. ';;;'), which
    would otherwise clear the queries by accident."""
    if isinstance(value, str):
        queries = gem.parse_queries(value)
        if value.strip() and not queries:
            raise gem.QueryError(f'no queries in {cut(value, 60)!r} (to clear them, set '
                                 "queries to '' or [])")
        return gem.check_queries(queries)
    return gem.check_queries([q for q in value or () if q.strip()])


class GemNode(Node):
    def __init__(self):
        super().__init__('gem')
        self._log = ThrottledLog(self.get_logger(), ERROR_LOG_PERIOD_S)
        # Guards _model, _queries and _loaded; held only to read or assign them, never while
        # a model runs, so no callback waits for a frame or a load.
        self._lock = threading.Lock()
        self._model = None
        self._loaded = None  # model parameter values of the model in use
        self._requested = None  # model parameter values of the newest load request
        self._syncing_queries = False

        # Registered before declaring, so start-up values are checked too.
        self._declaring = True
        self.add_on_set_parameters_callback(self._check_parameters)
        for spec in DECLARED_PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._declaring = False
        self._check_startup()  # what one parameter alone cannot tell: raises ValueError
        self.add_post_set_parameters_callback(self._parameters_changed)
        self._settings = self._read_frame_settings()
        self._queries: list[str] = queries_from_parameter(self.get_parameter('queries').value)

        self._frames = LatestSlot()
        self._model_requests = LatestSlot()
        self._stop = threading.Event()
        self._wake = threading.Event()  # rate-limit waits end early on a parameter change
        self._executor_jobs: deque = deque()
        self._jobs_guard = self.create_guard_condition(self._run_executor_jobs)
        self._processed = 0
        self._reported = (0, 0)  # (processed, dropped) at the last stats report
        self._last_overlay = 0.0
        self._reduced_sizes: set = set()
        self._recent_query_msgs: list[tuple] = []

        self._results_pub = self.create_publisher(GemResult, '~/results', 5)
        self._overlay_pub = self.create_publisher(Image, '~/overlay', 1)
        self._active_pub = self.create_publisher(String, '~/active_queries', LATCHED_QOS)
        self.create_service(SetQueries, '~/set_queries', self._on_set_queries,
                            qos_profile=SERVICE_QOS)

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

        self._worker = threading.Thread(target=self._work, name='gem-inference', daemon=True)
        self._loader = threading.Thread(target=self._load_models, name='gem-loader', daemon=True)
        self._worker.start()
        self._loader.start()
        self._request_model()

    # --- parameters -----------------------------------------------------------------------
    def _values(self, params=()) -> dict:
        """Every declared parameter's value, with `params` (being set) taking precedence."""
        values = {spec.name: self.get_parameter(spec.name).value
                  for spec in DECLARED_PARAMETERS if self.has_parameter(spec.name)}
        values.update((p.name, p.value) for p in params)
        return values

    def _check_parameters(self, params) -> SetParametersResult:
        for param in params:
            reason = check_value(param.name, param.value)
            if reason is None and param.name == 'queries':
                try:
                    self._check_queries(queries_from_parameter(param.value))
                except gem.QueryError as exc:
                    reason = f'bad queries: {exc}'
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        if self._declaring:
            return SetParametersResult(successful=True)  # _check_startup checks the rest
        names = {param.name for param in params}
        values = self._values(params)
        reason = None
        if names & {'input_size', 'max_input_pixels'}:
            reason = check_input_budget(values['input_size'], values['max_input_pixels'])
        if reason is None and names & {'model', 'pretrained', 'device'}:
            reason = self._check_source(values)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    @staticmethod
    def _check_source(values: dict):
        """Why model/pretrained/device cannot load (known without loading), or None."""
        try:
            gem.check_source(values['model'], values['pretrained'], values['device'])
        except (gem.ModelLoadError, ValueError) as exc:
            return str(exc)
        return None

    def _check_startup(self) -> None:
        values = self._values()
        reason = (check_input_budget(values['input_size'], values['max_input_pixels'])
                  or self._check_source(values))
        if reason:
            raise ValueError(reason)

    def _parameters_changed(self, params) -> None:
        names = {param.name for param in params}
        self._settings = self._read_frame_settings()
        self._wake.set()
        if names & MODEL_PARAMETERS:
            self._request_model()
        if 'queries' in names and not self._syncing_queries:
            value = next(p.value for p in params if p.name == 'queries')
            self._set_queries(queries_from_parameter(value), 'the queries parameter',
                              sync_parameter=False)

    def _read_frame_settings(self) -> FrameSettings:
        return FrameSettings(**{name: self.get_parameter(name).value
                                for name in FrameSettings.__dataclass_fields__})

    def _request_model(self) -> None:
        values = {name: self.get_parameter(name).value for name in MODEL_PARAMETERS}
        if values == self._requested:
            return
        self._requested = values
        with self._lock:
            in_use = values == self._loaded
        if in_use:  # e.g. put back after a failed load: nothing to load
            self._model_requests.take(0)
            return
        self._model_requests.put(values)

    # --- queries --------------------------------------------------------------------------
    def _check_queries(self, queries: list[str]) -> list[str]:
        """Checked queries: with the model's tokenizer when a model is loaded (milliseconds;
        the text tower runs later, on the worker thread)."""
        with self._lock:
            model = self._model
        return model.check_queries(queries) if model is not None else gem.check_queries(queries)

    def _on_queries_msg(self, msg: String, info) -> None:
        # A reliable publisher reaches both subscriptions: apply each sample once.
        key = (info['source_timestamp'], msg.data)
        if key in self._recent_query_msgs:
            return
        self._recent_query_msgs = self._recent_query_msgs[-15:] + [key]
        queries = gem.parse_queries(msg.data)
        if not queries:
            self._log('error', f'no queries in {msg.data[:40]!r}',
                      f"no queries in {cut(msg.data, 60)!r} on {self.resolve_topic_name('queries')};"
                      f' keeping the active queries {self._describe_queries()} (to clear them, '
                      'call ~/set_queries with an empty list)', QUERY_LOG_PERIOD_S)
            return
        self._set_queries(queries, 'the queries topic')

    def _on_set_queries(self, request, response):
        queries = [q for q in request.queries if q.strip()]
        if request.queries and not queries:
            response.success = False
            response.message = (f'all {len(request.queries)} queries are blank (send an empty '
                                'list to clear them); keeping the active queries '
                                f'{self._describe_queries()}')
            self._log('error', 'set_queries blank', f'~/set_queries: {response.message}',
                      QUERY_LOG_PERIOD_S)
            return response
        response.success, response.message = self._set_queries(queries, '~/set_queries')
        return response

    def _set_queries(self, queries: list[str], source: str,
                     sync_parameter: bool = True) -> tuple[bool, str]:
        """Check and activate `queries` (on the executor thread; no model call); on error log
        it and keep the active ones. The queries parameter is set to match."""
        try:
            queries = self._check_queries(queries)
        except gem.QueryError as exc:
            message = (f'rejected queries from {source}: {exc}; keeping the active queries '
                       f'{self._describe_queries()}')
            self._log('error', f'queries from {source}: {error_kind(exc)}', message,
                      QUERY_LOG_PERIOD_S)
            return False, cut(message)
        with self._lock:
            changed = queries != self._queries
            self._queries = queries
        message = f'active queries: {self._describe_queries()}'
        if changed:
            self._log.now('info', cut(f'{message} (from {source})'))
            self._publish_active()
            if sync_parameter:
                self._sync_queries_parameter()
        return True, cut(message)

    def _sync_queries_parameter(self) -> None:
        """Make the queries parameter show the active queries (executor thread only)."""
        self._syncing_queries = True
        try:
            self.set_parameters([Parameter('queries', Parameter.Type.STRING_ARRAY,
                                           list(self._queries))])
        finally:
            self._syncing_queries = False

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
        with self._lock:
            queries, model = self._queries, self._model
        if not queries:  # nothing asked: the frame is not even converted
            self._log('info', 'idle', 'no active queries: frames are skipped until queries are '
                      'set (queries topic, ~/set_queries or the queries parameter)',
                      IDLE_LOG_PERIOD_S)
        elif model is None:
            self._log('info', 'idle', 'no model loaded yet: frames are skipped until one is',
                      IDLE_LOG_PERIOD_S)
        else:
            self._frames.put((msg, to_rgb))

    def _work(self) -> None:
        last_start = -1e9
        while not self._stop.is_set():
            try:
                if not self._rate_allows(last_start):
                    continue
                item = self._frames.take(POLL_S)
                if item is None:
                    continue
                last_start = time.monotonic()
                self._process(*item)
            except Exception as exc:  # the node keeps serving whatever one frame does
                self._log('error', 'frame', f'frame failed: {type(exc).__name__}: {exc}')

    def _rate_allows(self, last_start: float) -> bool:
        """False after waiting (at most POLL_S, less when a parameter changes) while
        max_rate_hz holds the next frame back; True when a frame may start."""
        rate = self._settings.max_rate_hz
        wait = last_start + 1.0 / rate - time.monotonic() if rate > 0 else 0.0
        if wait <= 0:
            return True
        self._wake.wait(min(wait, POLL_S))
        self._wake.clear()
        return False

    def _process(self, msg, to_rgb) -> None:
        settings = self._settings
        kind = 'compressed image' if isinstance(msg, CompressedImage) else 'image'
        try:
            rgb = to_rgb(msg, settings.max_image_pixels)
        except ValueError as exc:
            self._log('error', f'bad {kind}: {error_kind(exc)}',
                      f'bad {kind} (frame_id {cut(msg.header.frame_id, 40)!r}): {exc}')
            return
        with self._lock:
            model, queries = self._model, self._queries
        if model is None or not queries:
            return
        height, width = rgb.shape[:2]
        try:
            shape = model.input_shape(height, width, settings.input_size,
                                      settings.max_input_pixels)
        except gem.InputBudgetError as exc:
            self._log('error', 'input budget', f'{kind} refused: {exc}')
            return
        self._report_reduced_input(model, (height, width), shape, settings)
        started = time.perf_counter()
        detections = model.locate(rgb, queries, mask_threshold=settings.mask_threshold,
                                  input_size=settings.input_size,
                                  max_input_pixels=settings.max_input_pixels)
        seconds = time.perf_counter() - started
        if not all(map(_finite, (d.score for d in detections))):
            self._log('error', 'non-finite', 'the model gave non-finite similarities (NaN or '
                      'inf; e.g. fp16 overflow): frame not published')
            return
        self._processed += 1
        header = msg.header
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
        if self._overlay_due(settings):
            overlay = draw_overlay(rgb, detections)
            self._publish(self._overlay_pub, rgb_to_image_msg(overlay, header))

    def _report_reduced_input(self, model, size, shape, settings: FrameSettings) -> None:
        """Say once per frame size (and budget) when the budget, not input_size, sets the
        model input."""
        wanted = model.input_shape(*size, settings.input_size, sys.maxsize)
        key = (size, settings.input_size, settings.max_input_pixels)
        if shape != wanted and key not in self._reduced_sizes and len(self._reduced_sizes) < 64:
            self._reduced_sizes.add(key)
            self._log.now('warning', (
                f'frames of {size[1]}x{size[0]} are fed to the model at {shape[1]}x{shape[0]}, '
                f'not {wanted[1]}x{wanted[0]} (input_size {settings.input_size}): that would '
                f'exceed max_input_pixels {settings.max_input_pixels}'))

    def _overlay_due(self, settings: FrameSettings) -> bool:
        if not settings.publish_overlay:
            return False
        if self._overlay_pub.get_subscription_count() == 0:
            return False  # drawing costs time; nobody would see it
        max_rate = settings.overlay_max_rate_hz
        now = time.monotonic()
        if max_rate > 0 and now - self._last_overlay < 1.0 / max_rate:
            return False
        self._last_overlay = now
        return True

    # --- models ---------------------------------------------------------------------------
    def _load_models(self) -> None:
        while not self._stop.is_set():
            values = self._model_requests.take(POLL_S)
            if values is None:
                continue
            try:
                self._load(values)
            except Exception as exc:  # the loader must outlive any one load
                self._log('error', 'load', f'loading failed: {type(exc).__name__}: {exc}')

    def _load(self, values: dict) -> None:
        config = model_config(values)
        what = (f"model {config['model']!r} (pretrained {config['pretrained'] or 'none'}, "
                f"method {config['method']}, device {config['device']}, "
                f"precision {config['precision']})")
        self._log.now('info', f'loading {what}')
        started = time.monotonic()
        try:
            model = gem.load_model(**config)
            with self._lock:
                queries = self._queries
            model.prepare_queries(queries)  # text tower here, not on the first frame
        except Exception as exc:  # ModelLoadError, QueryError (e.g. a shorter context), ...
            self._log.now('error', f'could not load {what}: {exc}')
            self._call_on_executor(lambda: self._after_failed_load(values))
            return
        if self._stop.is_set():
            return
        if values != self._requested:  # the parameters changed while it loaded
            self._log.now('info', f'not using the {what}: the parameters changed while it '
                                  'loaded')
            return
        with self._lock:
            try:
                model.check_queries(self._queries)  # they may have changed meanwhile
            except gem.QueryError as exc:
                self._log.now('error', f'the new {what} rejects the active queries: {exc}')
                self._call_on_executor(lambda: self._after_failed_load(values))
                return
            self._model, self._loaded = model, values
        self._log.now('info', f'loaded {what} on {model.device} in '
                              f'{time.monotonic() - started:.1f} s')

    def _after_failed_load(self, values: dict) -> None:
        """Executor thread: put the model parameters back to those of the model in use, so
        they show what the node runs (unless newer values are already being loaded)."""
        with self._lock:
            loaded = self._loaded
        if values != self._requested:
            return  # superseded by a newer request
        self._requested = None  # the same values set again are tried again
        if loaded is None:
            self._log.now('error', 'no model loaded: frames are not processed until one loads')
            return
        changed = [Parameter(name, value=loaded[name]) for name in sorted(loaded)
                   if self.get_parameter(name).value != loaded[name]]
        self._log.now('warning', 'keeping the previous model; parameters set back to it: ' +
                      ', '.join(f'{p.name}={p.value!r}' for p in changed))
        results = self.set_parameters(changed)
        for param, result in zip(changed, results):
            if not result.successful:
                self._log.now('error', f'could not set {param.name} back: {result.reason}')

    def _call_on_executor(self, job) -> None:
        self._executor_jobs.append(job)
        self._jobs_guard.trigger()

    def _run_executor_jobs(self) -> None:
        while self._executor_jobs:
            job = self._executor_jobs.popleft()
            try:
                job()
            except Exception as exc:  # one failing job must not stop the executor
                self._log('error', 'executor job', f'{type(exc).__name__}: {exc}')

    # --- plumbing -------------------------------------------------------------------------
    def _publish(self, publisher, msg) -> None:
        try:
            publisher.publish(msg)
        except RCLError as exc:  # Fast DDS occasionally fails a publish under load
            if self.context.ok():  # else shutting down: a frame in flight has nowhere to go
                self._log('warning', 'publish',
                          f'publishing on {publisher.topic_name} failed: {exc}')

    def _report_stats(self) -> None:
        processed, dropped = self._processed, self._frames.replaced
        new_processed, new_dropped = (processed - self._reported[0], dropped - self._reported[1])
        self._reported = (processed, dropped)
        if new_dropped:
            self._log.now('info', f'last {STATS_PERIOD_S:.0f} s: {new_processed} frames '
                          f'processed, {new_dropped} older frames dropped (only the newest '
                          'frame is processed)')

    def close(self, hurry: threading.Event = None) -> bool:
        """Stop the threads: the frame in flight is finished (it cannot be interrupted), a
        model load is waited for at most STOP_WAIT_S. `hurry` (a second signal) ends the
        waiting. Returns whether every thread has ended."""
        self._stop.set()
        self._wake.set()
        self._frames.close()
        self._model_requests.close()
        hurry = hurry or threading.Event()
        deadline = time.monotonic() + STOP_WAIT_S
        while self._worker.is_alive() and not hurry.is_set():
            self._worker.join(0.05)
        while self._loader.is_alive() and not hurry.is_set() and time.monotonic() < deadline:
            self._loader.join(0.05)
        return not (self._worker.is_alive() or self._loader.is_alive())


def error_kind(exc: Exception) -> str:
    """What a throttle keys an error by: its first words with numbers masked, so
    'truncated image data: 2294 bytes...' and '...: 17 bytes...' are one kind."""
    return ' '.join(re.sub(r'\d+', '#', str(exc)).split()[:3])


def _finite(x: float) -> bool:
    return x == x and abs(x) != float('inf')


def _on_second_signal(hurry: threading.Event):
    def handler(signum, frame):
        hurry.set()  # already stopping: stop waiting for threads, no KeyboardInterrupt
    return handler


def main(args=None) -> int:
    rclpy.init(args=args)
    hurry = threading.Event()
    try:
        node = GemNode()
    except KeyboardInterrupt:  # ctrl-c during start-up
        rclpy.try_shutdown()
        return 0
    except Exception as exc:  # bad start-up parameters: say which, exit without a traceback
        if not rclpy.ok():  # SIGTERM during start-up
            return 0
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
        # rclpy's handlers turn the first SIGINT/SIGTERM into the end of spin(); a second
        # one while stopping must not raise KeyboardInterrupt out of the clean-up.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_second_signal(hurry))
        finished = node.close(hurry)
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001 - already torn down by the shutdown
            pass
        rclpy.try_shutdown()
        # Python's finalisation puts SIG_DFL back for handled signals: a late second signal
        # would then kill the process with -2 instead of letting it exit 0.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    if not finished:
        # A model load (or, after a second signal, a frame) is still running in C code that
        # cannot be interrupted; interpreter finalisation under it can crash. Leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
