"""gem_node: GEM open-vocabulary localisation on camera images.

The node composes ROS parts around one engine (gem_ros.engine: the model, the queries and
the threads that use them, no ROS): the cameras and their frames (camera_frames.py), the
queries' topics and service (queries_interface.py), ~/locate (locate_service.py), the memory
with ~/recall (memory_input.py), the map with ~/ask_map (map_input.py), /diagnostics
(health.py); node_settings.py makes the parameters settings, and process.py runs it.
Callbacks run on the executor thread and never wait on the model; work other threads need
done there (putting parameters back after a failed load, ~/locate's answers) is queued and
run through a guard condition (`call_on_executor`).

`GemNode()` loads its model and takes frames at once; `GemNode(managed=True)` (managed.py,
the lifecycle node) starts with neither, and its transitions call `_want_model`,
`_start_frames`, `_stop_frames` and `_drop_model`. Queries, services, parameters and
/diagnostics work in every state.
"""

import threading
from collections import deque

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

import gem_ros.gem as gem
from gem_ros.engine import Engine
from gem_ros.ros import messages, transports
from gem_ros.ros.camera import publish
from gem_ros.ros.camera_frames import CameraFrames
from gem_ros.ros.compat import CompatNode, fallbacks_in_use
from gem_ros.ros.guards import describe
from gem_ros.ros.health import Health, NodeState
from gem_ros.ros.locate_service import LocateService
from gem_ros.ros.map_input import map_from_parameters
from gem_ros.ros.memory_input import add_recall_service, memory_from_parameters
from gem_ros.ros.node_settings import (
    LOCAL_WEIGHTS,
    check_change,
    check_startup,
    model_settings,
    queries_from_parameter,
    read_run_settings,
)
from gem_ros.ros.parameters import MODEL_PARAMETERS, PARAMETERS
from gem_ros.ros.process import run_node
from gem_ros.ros.qos import IMAGE_QOS
from gem_ros.ros.queries_interface import QueriesInterface
from gem_ros.ros.transforms import Transforms
from gem_ros.settings import ModelSettings
from gem_ros.threads import ThrottledLog

ERROR_LOG_PERIOD_S = 5.0


class GemNode(CompatNode):
    EXECUTOR_THREADS = 1  # every callback on one thread (the managed node adds one)

    def __init__(self, managed: bool = False):
        super().__init__('gem')
        self._log = ThrottledLog(self.get_logger(), ERROR_LOG_PERIOD_S)
        self._model_wanted = False  # a model is loaded or being loaded (configured)
        if fallbacks_in_use():  # Humble's rclpy (or GEM_ROS_HUMBLE_FALLBACKS=1)
            self.get_logger().info(f"rclpy fallbacks: {', '.join(fallbacks_in_use())}")
        self._engine = None
        # Registered before declaring, so start-up values are checked too.
        self._declaring = True
        self.add_on_set_parameters_callback(self._guarded_check_parameters)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._declaring = False
        self._check_startup()  # what one parameter alone cannot tell: raises ValueError
        self.add_post_set_parameters_callback(self._guarded_parameters_changed)

        self._executor_jobs: deque = deque()
        self._jobs_guard = self.create_guard_condition(self._run_executor_jobs)
        self._engine = Engine(
            self._log,
            lambda frame, max_pixels: self.frames.convert(frame, max_pixels),
            lambda result: self.frames.publish(result),
            measure=lambda result: self.frames.measure(result),
            consume=lambda result: self.frames.consume(result),
            on_load_failed=lambda s: self.call_on_executor(lambda: self._after_failed_load(s)),
            local_weights_hint=LOCAL_WEIGHTS,
        )
        self._engine.set_queries(queries_from_parameter(self.get_parameter('queries').value))
        self._read_settings()
        # One TF buffer for every camera, the memory and the map, where a frame is asked for
        # (else made by the first ~/locate that asks for one).
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        self.transforms = None
        if any(value(name) for name in ('target_frame', 'memory_frame', 'map_frame')):
            self.transforms = Transforms(self, value('tf_timeout'))
        self.memory = memory_from_parameters(self, value)
        self.feature_map = map_from_parameters(self, self._engine, value)
        self.frames = CameraFrames(
            self,
            self._engine,
            self.get_parameter('cameras').value,
            self.get_parameter('use_depth').value,
            self._log,
        )
        self._cameras = self.frames.cameras
        if messages.Detection2DArray is None:
            self.get_logger().info(messages.NO_VISION_MSGS)
        self.locate = LocateService(self, self._engine, self._cameras, self._log)
        add_recall_service(self, self.memory, self._log)
        self.queries = QueriesInterface(self, self._engine, list(self._cameras), self._log)
        self._health = Health(self, self._engine, self._cameras, self.memory, self._health_state)
        self._warn_default_transports()
        if not managed:
            self._want_model()
            self._start_frames()

    # --- what runs (the lifecycle's transitions call these) -----------------------------
    def _want_model(self) -> None:
        """Load the model of the parameters (in the background) and keep it up to date."""
        self._model_wanted = True
        self._engine.request_model(self._model_settings())

    def _drop_model(self) -> None:
        """Give the model and its memory back; parameter changes no longer load one."""
        self._model_wanted = False
        self._engine.unload()

    def _start_frames(self) -> None:
        """Subscribe the cameras' (and depth) topics: frames are processed and published."""
        if self.frames.taking:
            return
        self._health.restart_period()
        self.frames.start(
            IMAGE_QOS[self.get_parameter('image_qos').value],
            self.get_parameter('use_compressed').value,
        )

    def _stop_frames(self) -> None:
        """Unsubscribe the cameras' topics; a frame in flight is not published."""
        self.frames.stop()

    @property
    def taking_frames(self) -> bool:
        return self.frames.taking

    def lifecycle_state(self) -> str:
        return 'active'  # the managed node says its own

    # --- parameters -----------------------------------------------------------------------
    def _values(self, params=()) -> dict:
        """Every declared parameter's value, with `params` (being set) taking precedence."""
        values = {
            spec.name: self.get_parameter(spec.name).value
            for spec in PARAMETERS
            if self.has_parameter(spec.name)
        }
        values.update((p.name, p.value) for p in params)
        return values

    # rclpy's parameter services call these; an exception out of them would leave the
    # caller unanswered and end the spin (guards.py), so each answers or logs instead.
    def _guarded_check_parameters(self, params) -> SetParametersResult:
        try:
            return self._check_parameters(params)
        except Exception as exc:  # noqa: BLE001 - refuse the change, keep serving
            if self._declaring:
                raise  # start-up: main says which parameter is bad
            self._log('error', 'parameter check', f'parameter check failed: {describe(exc)}')
            return SetParametersResult(successful=False, reason=f'internal error: {exc}')

    def _guarded_parameters_changed(self, params) -> None:
        try:
            self._parameters_changed(params)
        except Exception as exc:  # noqa: BLE001 - the change is made; say what failed
            self._log('error', 'parameter change', f'applying parameters failed: {describe(exc)}')

    def _check_parameters(self, params) -> SetParametersResult:
        reason = check_change(params, self._values(params), self._declaring, self._check_queries)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _check_startup(self) -> None:
        reason = check_startup(self._values())
        if reason:
            raise ValueError(reason)

    def _parameters_changed(self, params) -> None:
        names = {param.name for param in params}
        self._read_settings()
        if names & set(MODEL_PARAMETERS) and self._model_wanted:
            self._engine.request_model(self._model_settings())
        if 'queries' in names and not self.queries.syncing:
            value = next(p.value for p in params if p.name == 'queries')
            self.queries.set(
                queries_from_parameter(value), 'the queries parameter', sync_parameter=False
            )

    def _model_settings(self) -> ModelSettings:
        return model_settings(lambda name: self.get_parameter(name).value)

    def _read_settings(self) -> None:
        """Per-frame settings, one snapshot per parameter change (never read by name from the
        worker thread)."""
        run, self._diagnostics_limits = read_run_settings(
            lambda name: self.get_parameter(name).value
        )
        self._engine.update_settings(run)

    def _after_failed_load(self, settings: ModelSettings) -> None:
        """Executor thread: put the model parameters back to those of the model in use, so
        they show what the node runs (unless newer settings are already being loaded)."""
        if not self._engine.forget_request(settings) or not self._model_wanted:
            return  # superseded by a newer request, or no model is wanted (unconfigured)
        loaded = self._engine.loaded
        if loaded is None:
            self._log.now('error', 'no model loaded: frames are not processed until one loads')
            return
        changed = [
            Parameter(name, value=getattr(loaded, name))
            for name in MODEL_PARAMETERS
            if self.get_parameter(name).value != getattr(loaded, name)
        ]
        self._log.now(
            'warning',
            'keeping the previous model; parameters set back to it: '
            + ', '.join(f'{p.name}={p.value!r}' for p in changed),
        )
        for param, result in zip(changed, self.set_parameters(changed)):
            if not result.successful:
                self._log.now('error', f'could not set {param.name} back: {result.reason}')

    def call_on_executor(self, job) -> None:
        self._executor_jobs.append(job)
        self._jobs_guard.trigger()

    def _run_executor_jobs(self) -> None:
        while self._executor_jobs:
            job = self._executor_jobs.popleft()
            try:
                job()
            except Exception as exc:  # one failing job must not stop the executor
                self._log('error', 'executor job', f'{type(exc).__name__}: {exc}')

    # --- queries --------------------------------------------------------------------------
    def _check_queries(self, queries: list[str]) -> list[str]:
        if self._engine is None:  # declaring, before the engine exists
            return gem.check_queries(queries)
        return self._engine.check_queries(queries)

    def _warn_default_transports(self) -> None:
        """Frames lost in transport look like a slow or silent node: say why at start-up."""
        problem = transports.transport_problem()
        if problem:
            self.get_logger().warning(f'{problem}. {transports.FIX}.')

    def _publish(self, publisher, msg) -> None:
        publish(self, publisher, msg)

    def _health_state(self) -> NodeState:
        """What /diagnostics reads of the node each second."""
        timeout, min_rate = self._diagnostics_limits
        return NodeState(
            taking_frames=self.taking_frames,
            model_wanted=self._model_wanted,
            lifecycle=self.lifecycle_state(),
            model_settings=self._model_settings(),
            frame_timeout_s=timeout,
            min_rate_hz=min_rate,
        )

    def close(self, hurry: threading.Event = None) -> bool:
        """Stop the engine's threads, saying which frame was in flight and whether it was
        finished (its results are not published once a signal has shut ROS down); whether
        every thread ended (see Engine.close)."""
        log = rclpy.logging.get_logger('gem')
        frames = self._engine.in_flight  # taken from the cameras' slots, in any stage
        what = ', '.join(f.describe() for f in frames or ())
        word = 'frame' if not frames or len(frames) == 1 else 'frames'
        log.info(
            f'stopping: finishing the {word} in flight ({what})' if frames else 'stopping: idle'
        )
        finished = self._engine.close(hurry)
        for kept in (self.memory, self.feature_map):  # after the last frame: all in the files
            if kept is not None:
                kept.close()
        if frames:
            done = self._engine.was_finished(frames)
            published = ' and published' if self.context.ok() else ''
            log.info(
                f'the {word} in flight ({what}) '
                + (f'{"was" if len(frames) == 1 else "were"} finished{published}' if done
                   else f'{"was" if len(frames) == 1 else "were"} left unfinished')
            )  # fmt: skip
        return finished


def main(args=None) -> int:
    return run_node(GemNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
