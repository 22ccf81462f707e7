"""The running GEM model behind the node, with no ROS: its threads, its queries, its settings.

    engine = Engine(log, convert=to_rgb, publish=on_detections, on_load_failed=put_back)
    engine.request_model(ModelSettings(...))     # loads on the loader thread
    engine.set_queries(['red mug', 'person'])    # checked with the tokenizer, milliseconds
    engine.offer(frame)                          # newest frame wins; the worker runs it
    engine.close()

Threads, and what each may wait on:
- the caller's thread (the node's executor) never waits on the model: queries are checked
  with the tokenizer and swapped in under a lock that is only held for assignments, and
  frames and load requests go into one-item slots;
- three stage threads carry the frames, so that the model runs frame k+1 while frame k
  is published: `convert` takes the newest frame of every stream (camera) that has one and
  converts it (`convert`: decoding); `inference` runs the model on the newest converted
  frame of each stream, one forward per input shape (text embeddings of new queries are
  computed there, before the frame that first uses them); `publish` hands each frame's
  detections on (`publish`) and answers the questions. Hand-overs are bounded: one slot per
  stream before conversion and before inference (newest wins, counted as dropped), one
  batch of results before publishing (the model waits for the publisher);
- the loader thread builds models, and a graph backend's graphs and engines for the input
  shapes the running model served; the old model serves until the new one is ready. A
  shape first seen later builds on a thread of the backend's own while the torch path
  serves it (gem_ros/gem/backends.py).

One-off questions ("is there a red mug?", the node's ~/locate) are `ask`ed: the next frame
the worker processes runs their queries alongside the active ones (each query's outputs are
its own: min-max per query, presence against the background prompts only, so the active
queries' results do not change) and answers each through its callback.

Offline (`gem-ros bag`, where every frame counts and there is no camera to keep up with):
`Engine(..., threads=False)`, then `load_now(settings)` and `process(frame)` on the caller's
thread: the same conversion, budget, model call and checks as the node's frames.

A managed node gives its model back (`unload`: memory returned to the OS and the GPU) and
loads it again on demand (`wait_for_model`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import gem_ros.gem as gem
from gem_ros.gem.hold import HoldRule, PresenceHold, judge_threshold
from gem_ros.settings import FrameSettings, ModelSettings
from gem_ros.threads import LatestSlot, LatestSlots, ThrottledLog

POLL_S = 0.5  # how often idle threads look at the stop flag
MAX_ASKS = 64  # one-off questions waiting for a frame; more are refused at once
STOP_WAIT_S = 0.5  # at stop, how long a model load (which cannot be interrupted) is waited for
UNLOAD_WAIT_S = 30.0  # at unload, how long the frame in flight is waited for
SHAPES_PREPARED = 2  # recent input shapes a new graph model is built for before it serves
LATENCIES_KEPT = 1000  # inference times kept until read (diagnostics read them each second)


@dataclass(eq=False)
class Ask:
    """A one-off query answered by the next processed frame of `stream` (None: of any
    stream, the best view among the frames of that cycle): answer(frame, rgb, detection,
    run_settings) is called on the worker thread, once."""

    query: str
    answer: Callable
    stream: Optional[str] = None


@dataclass
class _Batch:
    """One forward's results on their way to the publisher."""

    frames: list  # (stream, frame, rgb, detections, active): the first `active` detections
    # are the stream's active queries', the others the questions'
    asks: list
    seconds: float
    settings: 'RunSettings'


@dataclass(frozen=True)
class RunSettings:
    """What the worker reads per frame, replaced as a whole when a setting changes, so a
    frame never mixes values of two changes."""

    frame: FrameSettings = field(default_factory=FrameSettings)
    max_image_pixels: int = 3840 * 2160
    max_rate_hz: float = 0.0  # 0 = unlimited
    # Presence held over each stream's frames (gem_ros.gem.hold); None = each frame decides.
    hold: Optional[HoldRule] = None
    # The caller's own per-frame output settings (the node's: mask format, overlay, depth),
    # carried with the frame to its publish, so one frame never mixes two changes.
    outputs: Any = None


class Engine:
    def __init__(
        self,
        log: ThrottledLog,
        convert: Callable,
        publish: Callable,
        on_load_failed: Callable[[ModelSettings], None] = lambda settings: None,
        load: Callable[..., gem.GemModel] = gem.load_model,
        local_weights_hint: str = gem.ModelLoadError.PYTHON,
        threads: bool = True,
    ):
        """convert(frame, max_image_pixels) -> RGB uint8 array, ValueError for a bad frame;
        publish(frame, rgb, detections, inference_seconds, run_settings);
        on_load_failed(settings): a requested model could not be loaded (worker or loader
        thread: hand it to your own thread if it needs one); local_weights_hint: how the
        caller's users pass a local weights file, for the missing-weights message;
        threads: False for offline use, with load_now and process on the caller's thread."""
        self._weights_hint = local_weights_hint
        self._log = log
        self._convert = convert
        self._publish = publish
        self._on_load_failed = on_load_failed
        self._load_model = load
        # Guards _model, the queries and _loaded; held only to read or assign them.
        self._lock = threading.Lock()
        self._model: Optional[gem.GemModel] = None
        self._loaded: Optional[ModelSettings] = None  # settings of the model in use
        self._requested: Optional[ModelSettings] = None  # of the newest load request
        self._queries: list[str] = []  # shared by every stream without queries of its own
        self._own_queries: dict[str, list[str]] = {}  # stream -> its own queries
        self._asks: list[Ask] = []  # guarded by _lock
        self.settings = RunSettings()
        self._frames = LatestSlots()  # the newest frame of each stream (camera)
        self._model_requests = LatestSlot()
        self._stop = threading.Event()
        self._hurry = threading.Event()  # close without finishing the frames in flight
        self._last_start = -1e9  # when the last frames were taken (max_rate_hz)
        self._wake = threading.Event()  # rate-limit waits end early on a settings change
        self._reduced_sizes: set = set()
        # The model input shapes of recent frames, newest last: a new model's graphs are built
        # for them before it serves (backends onnxruntime and tensorrt). Guarded by _lock:
        # the inference stage writes them, the loader reads them.
        self._served_shapes: OrderedDict = OrderedDict()
        self._threads = threads
        self.want_patch_logits = False  # set by the caller: someone reads the patch grids
        self.processed = 0
        self.last_result_time: Optional[float] = None  # time.monotonic() of the last result
        self._latencies: deque = deque(maxlen=LATENCIES_KEPT)  # seconds, until taken
        self.last_load_error: Optional[tuple[ModelSettings, str]] = None
        # The frame path in three stages, each a thread, so that the model runs frame k+1 while
        # frame k is published: convert (decode) -> inference -> publish. Hand-overs are
        # bounded: converted frames wait in a slot per stream (newest wins, counted as
        # dropped), and one batch of results waits for the publisher (inference waits for it).
        self._converted = LatestSlots()
        self._results = LatestSlot()
        self._results_taken = threading.Event()  # the publisher took the batch waiting
        self._results_taken.set()
        self._holds: dict = {}  # stream -> PresenceHold, touched by the publish stage only
        self._tracked: dict = {}  # id -> frame, from conversion until published or dropped
        self._finished: deque = deque(maxlen=64)  # ids of the frames finished last
        self._busy_stages = 0  # stages working on frames (unload waits for none)
        self._stages = [
            threading.Thread(target=self._run_stage, args=(name, work), name=f'gem-{name}',
                             daemon=True)
            for name, work in (
                ('convert', self._convert_stage),
                ('inference', self._inference_stage),
                ('publish', self._publish_stage),
            )
        ]  # fmt: skip
        self._loader = threading.Thread(target=self._load_models, name='gem-loader', daemon=True)
        if threads:
            for thread in self._stages:
                thread.start()
            self._loader.start()

    # --- state ----------------------------------------------------------------------------
    @property
    def queries(self) -> list[str]:
        """The shared queries."""
        return self._queries

    def queries_of(self, stream: str) -> list[str]:
        """The queries frames of `stream` are run with: its own, or the shared ones."""
        with self._lock:
            return self._own_queries.get(stream, self._queries)

    def has_own_queries(self, stream: str) -> bool:
        with self._lock:
            return stream in self._own_queries

    @property
    def loaded(self) -> Optional[ModelSettings]:
        with self._lock:
            return self._loaded

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one of their stream before the worker took them."""
        return self._frames.total_replaced + self._converted.total_replaced

    def dropped_of(self, stream: str) -> int:
        return self._frames.replaced.get(stream, 0) + self._converted.replaced.get(stream, 0)

    @property
    def in_flight(self) -> Optional[list]:
        """The frames taken from the slots and not finished yet (in any stage), or None."""
        with self._lock:
            return list(self._tracked.values()) or None

    def was_finished(self, frames) -> bool:
        """Whether each of these frames (in_flight's) went through its last stage."""
        with self._lock:
            return all(id(f) in self._finished for f in frames)

    def _track(self, frames) -> None:
        with self._lock:
            self._tracked.update((id(f), f) for f in frames)

    def _done(self, frames, finished: bool = True) -> None:
        with self._lock:
            for f in frames:
                self._tracked.pop(id(f), None)
                if finished:
                    self._finished.append(id(f))

    @property
    def model(self) -> Optional[gem.GemModel]:
        with self._lock:
            return self._model

    def take_latencies(self) -> list[float]:
        """Inference seconds of the frames processed since the last call."""
        out = []
        while self._latencies:
            out.append(self._latencies.popleft())
        return out

    def update_settings(self, settings: RunSettings) -> None:
        self.settings = settings
        self._wake.set()

    # --- queries --------------------------------------------------------------------------
    def check_queries(self, queries) -> list[str]:
        """Checked queries (QueryError otherwise): with the model's tokenizer once a model is
        loaded (milliseconds; the text tower runs later, on the worker thread)."""
        with self._lock:
            model = self._model
        return model.check_queries(queries) if model is not None else gem.check_queries(queries)

    def set_queries(self, queries, stream: Optional[str] = None) -> bool:
        """Check and activate `queries` (QueryError, and the active ones kept, otherwise):
        the shared ones, or with `stream` that stream's own (None for queries: the stream
        uses the shared ones again); whether what that stream (or the shared list) runs
        changed."""
        checked = self.check_queries(queries) if queries is not None else None
        with self._lock:
            if stream is None:
                changed = checked != self._queries
                self._queries = checked
            elif checked is None:
                own = self._own_queries.pop(stream, None)
                changed = own is not None and own != self._queries
            else:
                changed = checked != self._own_queries.get(stream, self._queries)
                self._own_queries[stream] = checked
        return changed

    def _all_queries(self) -> list[list[str]]:
        """The shared queries and each stream's own."""
        with self._lock:
            return [self._queries, *self._own_queries.values()]

    def ask(self, query: str, answer: Callable, stream: Optional[str] = None) -> Ask:
        """Have the next processed frame (of `stream`; None: the best view of any) answer
        `query` (checked: QueryError otherwise) through answer(frame, rgb, detection,
        settings), called once on the worker thread. RuntimeError when MAX_ASKS questions
        are already waiting."""
        (query,) = self.check_queries([query])  # QueryError for a blank one
        request = Ask(query, answer, stream)
        with self._lock:
            if len(self._asks) >= MAX_ASKS:
                raise RuntimeError(f'{MAX_ASKS} questions are already waiting for a frame')
            self._asks.append(request)
        return request

    def withdraw(self, request: Ask) -> bool:
        """Take back a question not answered yet (e.g. its caller timed out); whether it was
        still waiting."""
        with self._lock:
            if request in self._asks:
                self._asks.remove(request)
                return True
        return False

    def _take_asks(self, active: dict) -> tuple[list[Ask], dict]:
        """The waiting questions the frames of these streams ({stream: its active queries})
        answer, and the queries they add to each stream's, within MAX_QUERIES per frame; the
        rest wait for a later frame."""
        taken, extra = [], {stream: [] for stream in active}
        with self._lock:
            for request in list(self._asks):
                streams = [s for s in active if request.stream in (None, s)]
                new = [s for s in streams if request.query not in active[s] + extra[s]]
                if not streams or any(
                    len(active[s]) + len(extra[s]) >= gem.MAX_QUERIES for s in new
                ):
                    continue
                for s in new:
                    extra[s].append(request.query)
                taken.append(request)
                self._asks.remove(request)
        return taken, extra

    # --- frames ---------------------------------------------------------------------------
    def offer(self, frame, stream: str = '') -> Optional[str]:
        """Hand a frame of `stream` (a camera) to the worker, replacing that stream's frame
        not taken yet; or why it was skipped."""
        with self._lock:
            queries = self._own_queries.get(stream, self._queries)
            model, asked = self._model, bool(self._asks)
        if not queries and not asked:
            return 'no active queries'
        if model is None:
            return 'no model loaded yet'
        self._frames.put(stream, frame)
        return None

    def _run_stage(self, name: str, work: Callable[[], bool]) -> None:
        """A stage's loop: work() until the engine stops and the stages before have drained
        (a frame taken is finished, unless close is hurried); every error is logged and the
        stage goes on serving."""
        before = self._stages[: [t.name for t in self._stages].index(f'gem-{name}')]
        output = {'convert': self._converted, 'inference': self._results}.get(name)
        while True:
            try:
                if not work() and self._stop.is_set():
                    if self._hurry.is_set() or not any(t.is_alive() for t in before):
                        break
            except Exception as exc:  # the stage keeps serving whatever one frame does
                self._log('error', 'frame', f'frame failed: {type(exc).__name__}: {exc}')
        if output is not None:
            output.close()  # the next stage takes what is left at once, then ends

    def _convert_stage(self) -> bool:
        if self._stop.is_set():
            return False
        if not self._rate_allows(self._last_start):
            return True
        frames = self._frames.take_all(POLL_S)
        if not frames:
            return False
        self._last_start = time.monotonic()
        self._track([f for _, f in frames])
        settings = self.settings  # the frames' snapshot, to their last stage
        with self._busy_count():
            converted, _ = self._convert_all(frames, settings)
        # One hand-over: the inference stage takes the cycle's frames together (a batch), not
        # the first of them alone as it wakes.
        replaced = self._converted.put_all(
            [(stream, (frame, rgb, settings)) for stream, frame, rgb in converted]
        )
        for frame, _, _ in replaced:  # the model was busy: newest wins
            self._done([frame], finished=False)
        return True

    def _inference_stage(self) -> bool:
        if self._hurry.is_set():
            return False
        items = self._converted.take_all(POLL_S)
        if not items:
            return False
        for settings, ready in by_settings(items):
            for forward in self._forwards(ready):
                self._infer_and_hand_over(forward, settings)
        return True

    def _forwards(self, ready: list) -> list[list]:
        """A cycle's frames as the forwards that run them. A GPU runs a batch in about one
        frame's time: one forward. On a CPU a batch gains nothing (its frames run one after
        the other) and holds every camera's result until the last is done: there each frame
        is handed over alone, published while the next runs (benchmarks/cameras.py). A
        question for any camera keeps the cycle together: the best of its views answers."""
        model = self.model
        if len(ready) < 2 or model is None or model.device.type == 'cuda':
            return [ready]
        with self._lock:
            if any(request.stream is None for request in self._asks):
                return [ready]
        return [[item] for item in ready]

    def _infer_and_hand_over(self, ready: list, settings) -> None:
        try:
            with self._busy_count():
                batch, _ = self._infer(ready, settings)
        except BaseException:
            self._done([frame for _, frame, _ in ready])  # failed: not left in flight
            raise
        if batch is None:
            self._done([frame for _, frame, _ in ready])
            return
        # One batch waits for the publisher; the model goes on once it is taken.
        while not self._results_taken.wait(POLL_S):
            if self._hurry.is_set():
                self._put_back(batch.asks)
                self._done([frame for _, frame, _ in ready], finished=False)
                return
        self._results_taken.clear()
        self._results.put(batch)

    def _publish_stage(self) -> bool:
        if self._hurry.is_set():
            return False
        batch = self._results.take(POLL_S)
        if batch is None:
            return False
        self._results_taken.set()
        try:
            with self._busy_count():
                self._publish_all(batch)
        finally:
            self._done([frame for _, frame, *_ in batch.frames])
        return True

    @contextlib.contextmanager
    def _busy_count(self):
        with self._lock:
            self._busy_stages += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy_stages -= 1

    def _rate_allows(self, last_start: float) -> bool:
        """False after waiting (at most POLL_S, less when the settings change) while
        max_rate_hz holds the next frame back; True when a frame may start."""
        rate = self.settings.max_rate_hz
        wait = last_start + 1.0 / rate - time.monotonic() if rate > 0 else 0.0
        if wait <= 0:
            return True
        self._wake.wait(min(wait, POLL_S))
        self._wake.clear()
        return False

    def process(self, frame, stream: str = '') -> Optional[str]:
        """Offline: run one frame through the three stages on this thread (never dropped, no
        rate limit); why it gave no result, or None when it was published."""
        settings = self.settings
        converted, why = self._convert_all([(stream, frame)], settings)
        if why:
            return why[0]
        batch, why = self._infer(converted, settings)
        if batch is None:
            return why[0]
        return self._publish_all(batch, isolate=False)[0]

    def _convert_all(self, frames: list, settings: 'RunSettings') -> tuple[list, list]:
        """[(stream, frame)] -> ([(stream, frame, rgb)] of those converted, [why not] of the
        others, each logged)."""
        converted, why = [], []
        for stream, frame in frames:
            try:
                converted.append((stream, frame, self._convert(frame, settings.max_image_pixels)))
            except ValueError as exc:
                self._log('error', f'bad frame: {error_kind(exc)}', f'bad frame: {exc}')
                why.append(f'bad frame: {exc}')
                self._done([frame])
            except Exception as exc:  # any other fault costs this frame only, said as one
                self._log('error', 'frame', f'frame failed: {type(exc).__name__}: {exc}')
                why.append(f'frame failed: {exc}')
                self._done([frame])
        return converted, why

    def _infer(self, ready: list, settings: 'RunSettings') -> tuple[Optional['_Batch'], list]:
        """The newest converted frame of each waiting stream, [(stream, frame, rgb)]: checked
        against the budgets and run as one forward per input shape (GemModel.locate_batch);
        (the batch to publish, or None, and why frames gave no result)."""
        with self._lock:
            model, shared, own = self._model, self._queries, dict(self._own_queries)
        if model is None:
            return None, ['no model loaded']
        frame_settings = settings.frame
        runnable, why = [], []
        for stream, frame, rgb in ready:
            height, width = rgb.shape[:2]
            try:
                shape = model.input_shape(
                    height, width, frame_settings.input_size, frame_settings.max_input_pixels
                )
            except gem.InputBudgetError as exc:
                self._log('error', 'input budget', f'frame refused: {exc}')
                why.append(f'frame refused: {exc}')
                self._done([frame])
                continue
            self._report_reduced_input(model, (height, width), shape, frame_settings)
            with self._lock:  # the loader reads them (_prepare_graphs)
                self._served_shapes[shape] = None
                self._served_shapes.move_to_end(shape)
                while len(self._served_shapes) > SHAPES_PREPARED:
                    self._served_shapes.popitem(last=False)
            runnable.append((stream, frame, rgb))
        if not runnable:
            return None, why
        active = {stream: own.get(stream, shared) for stream, _, _ in runnable}
        asks, extra = self._take_asks(active)
        if not asks and not any(active.values()):
            return None, why + ['no active queries'] * len(runnable)
        try:
            started = time.perf_counter()
            arguments = frame_settings.locate_arguments()
            # Held presence decides found itself: the model judges at its lower threshold.
            arguments['presence_threshold'] = judge_threshold(
                settings.hold, arguments['presence_threshold']
            )
            detections = model.locate_batch(
                [rgb for _, _, rgb in runnable],
                [active[stream] + extra[stream] for stream, _, _ in runnable],
                **arguments,
                return_patch_logits=self.want_patch_logits,
                # A CPU gains no speed from a batch, only its activations' memory (ViT-B-16
                # at 448, 3 cameras: 1.19x one camera's peak RSS batched, measured by
                # benchmarks/cameras.py); a GPU runs the batch in about one frame's time.
                max_batch=gem.MAX_BATCH_IMAGES if model.device.type == 'cuda' else 1,
            )
            seconds = time.perf_counter() - started
        except BaseException:
            self._put_back(asks)  # answered by a later frame, or by their timeout
            raise
        frames = [(s, f, rgb, d, len(active[s])) for (s, f, rgb), d in zip(runnable, detections)]
        return _Batch(frames, asks, seconds, settings), why

    def _publish_all(self, batch: '_Batch', isolate: bool = True) -> list[Optional[str]]:
        """Each frame of the batch published (unless its similarities are not finite), then
        the questions answered; per frame, why it was not published, or None. isolate: a
        frame whose publish raises is logged and the others go on (the live pipeline); else
        it raises (offline, where the caller stops its run: a bag's output that cannot be
        written)."""
        why, answered = [], []
        for stream, frame, rgb, detections, active in batch.frames:
            if not all(_finite(d.score) and _finite(d.confidence) for d in detections):
                self._log(
                    'error',
                    'non-finite',
                    'the model gave non-finite similarities (NaN or '
                    'inf; e.g. fp16 overflow): frame not published',
                )
                why.append('non-finite similarities')
                continue
            self._decide_presence(stream, detections, active, batch.settings)
            self.processed += 1
            self._latencies.append(batch.seconds)
            self.last_result_time = time.monotonic()
            # The frame's results stand whatever its publish does: its questions are answered
            # from it, and the cycle's other frames are published.
            answered.append((stream, frame, rgb, detections))
            try:
                if active:
                    self._publish(frame, rgb, detections[:active], batch.seconds, batch.settings)
            except Exception as exc:
                if not isolate:
                    raise
                self._log('error', 'publish', f'publishing a frame of {stream!r} failed: '
                          f'{type(exc).__name__}: {exc}')  # fmt: skip
                why.append(f'publish failed: {exc}')
                continue
            why.append(None)
        self._answer(batch.asks, answered, batch.settings)
        return why

    def _decide_presence(self, stream: str, detections: list, active: int, settings) -> None:
        """With held presence: the stream's active queries decided by its PresenceHold (reset
        when its queries change, gem_ros.gem.hold), the questions' by this frame at the
        presence threshold itself (the model judged them at the lower one)."""
        if settings.hold is None:
            self._holds.pop(stream, None)
            return
        self._holds.setdefault(stream, PresenceHold()).update(detections[:active], settings.hold)
        for det in detections[active:]:
            if det.found and det.confidence < settings.hold.threshold:
                det.mark_absent(det.confidence)

    def _answer(self, asks: list[Ask], answered: list, settings) -> None:
        """Each question by the best view of its stream (or of any): found first, then the
        highest confidence, then the highest score; put back when no frame of its stream
        gave a result."""
        left = []
        for request in asks:
            views = [
                (stream, frame, rgb, next(d for d in dets if d.query == request.query))
                for stream, frame, rgb, dets in answered
                if request.stream is None or request.stream == stream
            ]
            if not views:
                left.append(request)
                continue
            _, frame, rgb, det = max(views, key=lambda v: (v[3].found, v[3].confidence, v[3].score))
            try:
                request.answer(frame, rgb, det, settings)
            except Exception as exc:  # one caller's failure must not cost the others
                self._log('error', 'answer', f'answering {request.query!r}: {exc}')
        if left:
            self._put_back(left)

    def _put_back(self, asks: list[Ask]) -> None:
        with self._lock:
            self._asks[:0] = asks

    def _report_reduced_input(self, model, size, shape, settings: FrameSettings) -> None:
        """Say once per image size (and budget) when the budget, not input_size, sets the
        model input."""
        wanted = model.input_shape(*size, settings.input_size, sys.maxsize)
        key = (size, settings.input_size, settings.max_input_pixels)
        if shape != wanted and key not in self._reduced_sizes and len(self._reduced_sizes) < 64:
            self._reduced_sizes.add(key)
            self._log.now(
                'warning',
                (
                    f'frames of {size[1]}x{size[0]} are fed to the model at {shape[1]}x{shape[0]}, '
                    f'not {wanted[1]}x{wanted[0]} (input_size {settings.input_size}): that would '
                    f'exceed max_input_pixels {settings.max_input_pixels}'
                ),
            )

    # --- models ---------------------------------------------------------------------------
    def request_model(self, settings: ModelSettings) -> None:
        """Load a model with these settings in the background, unless it is the one in use or
        already being loaded; a request not started yet is replaced."""
        if settings == self._requested:
            return
        self._requested = settings
        if settings == self.loaded:  # e.g. put back after a failed load: nothing to load
            self._model_requests.take(0)
            return
        self._model_requests.put(settings)

    def forget_request(self, settings: ModelSettings) -> bool:
        """After a failed load: whether `settings` was still the newest request (then the same
        settings asked for again are loaded again)."""
        if settings != self._requested:
            return False
        self._requested = None
        return True

    def load_now(self, settings: ModelSettings) -> Optional[str]:
        """Offline: load on this thread; why it failed, or None."""
        self._requested = settings
        self._load(settings)
        return None if self.loaded == settings else self._load_error(settings)

    def wait_for_model(
        self, settings: ModelSettings, cancelled: Callable[[], bool] = lambda: False
    ) -> Optional[str]:
        """Request `settings` and wait (polling `cancelled`) until they are loaded; why they
        could not be, or None. For a managed node's configure, which must answer with the
        outcome."""
        self.last_load_error = None
        self.request_model(settings)
        while True:
            # Parameters are answered while it waits: a change of the model's asks for
            # another, which is then the one waited for.
            if self._requested is not None:
                settings = self._requested
            if self.loaded == settings:
                return None
            error = self._load_error(settings)
            if error:
                return error
            if cancelled() or self._stop.is_set():
                return 'stopped while loading'
            time.sleep(0.05)

    def _load_error(self, settings: ModelSettings) -> Optional[str]:
        failed = self.last_load_error
        return failed[1] if failed is not None and failed[0] == settings else None

    def unload(self) -> None:
        """Drop the model (and any load not started) and give its memory back: host memory
        to the OS, cached CUDA blocks to the driver. A frame in flight finishes first (at most
        UNLOAD_WAIT_S); a load in flight is discarded when it ends."""
        with self._lock:
            self._model, self._loaded = None, None
        self._requested = None
        self._model_requests.take(0)
        self._frames.take_all(0)
        deadline = time.monotonic() + UNLOAD_WAIT_S
        while self._busy_stages and time.monotonic() < deadline:
            time.sleep(0.01)
        release_memory()

    def _load_models(self) -> None:
        while not self._stop.is_set():
            settings = self._model_requests.take(POLL_S)
            if settings is None:
                continue
            try:
                self._load(settings)
            except Exception as exc:  # the loader must outlive any one load
                self._log('error', 'load', f'loading failed: {type(exc).__name__}: {exc}')

    def _load(self, settings: ModelSettings) -> None:
        what = describe(settings)
        self._log.now('info', f'loading {what}')
        started = time.monotonic()
        try:
            model = self._load_model(settings)
            for queries in self._all_queries():
                model.prepare_queries(queries)  # the text tower here, not on the first frame
            self._prepare_graphs(model, what)
        except Exception as exc:  # ModelLoadError, QueryError (e.g. a shorter context), ...
            text = exc.told(self._weights_hint) if isinstance(exc, gem.ModelLoadError) else exc
            self._log.now('error', f'could not load {what}: {text}')
            self.last_load_error = (settings, f'could not load {what}: {text}')
            self._on_load_failed(settings)
            return
        if self._stop.is_set():
            return
        if settings != self._requested:  # the settings changed while it loaded
            self._log.now('info', f'not using the {what}: the settings changed while it loaded')
            return
        try:
            self._install(model, settings)
        except gem.QueryError as exc:
            self._log.now('error', f'the new {what} rejects the active queries: {exc}')
            self.last_load_error = (settings, f'the new {what} rejects the active queries')
            self._on_load_failed(settings)
            return
        runs = f' in {model.precision}' if model.precision != settings.precision else ''
        self._log.now(
            'info',
            f'loaded {what} on {model.device}{runs} in {time.monotonic() - started:.1f} s',
        )

    def _install(self, model, settings: ModelSettings) -> None:
        """Make `model` the one in use, once the active queries (which may have changed while
        it loaded) pass its tokenizer; QueryError otherwise. The tokenizer runs outside the
        lock, which offer() and the executor's calls take: they never wait on it."""
        while True:
            lists = self._all_queries()
            for queries in lists:
                model.check_queries(queries)
            with self._lock:
                if [self._queries, *self._own_queries.values()] == lists:  # none changed
                    self._model, self._loaded = model, settings
                    return

    def _prepare_graphs(self, model, what: str) -> None:
        """A graph backend's export and engine build, here on the loader's thread for the
        shapes the running model served (minutes on a Jetson), so that the running model
        serves until the new one is ready. Shapes first seen later build in the background
        on the live path, the torch path serving them meanwhile; offline (threads=False) they
        build on the caller's thread, as nothing else waits."""
        backend = model.backend
        if not hasattr(backend, 'prepare'):
            return
        backend.build_in_background = self._threads
        with self._lock:
            shapes = list(self._served_shapes)
        for shape in shapes:
            self._log.now(
                'info',
                f'{what}: building its {backend.name} graph for {shape[0]}x{shape[1]} inputs '
                '(the running model serves meanwhile)',
            )
            backend.prepare(shape)

    # --- stop -----------------------------------------------------------------------------
    def close(self, hurry: Optional[threading.Event] = None) -> bool:
        """Stop the threads: the frame in flight is finished (it cannot be interrupted), a
        model load is waited for at most STOP_WAIT_S; `hurry` (e.g. a second signal) ends the
        waiting. Returns whether every thread has ended."""
        self._stop.set()
        self._wake.set()
        self._frames.close()
        self._model_requests.close()
        hurry = hurry or threading.Event()
        deadline = time.monotonic() + STOP_WAIT_S
        # The stages drain what they took (the frames in flight), then end; a hurry ends them.
        while any(t.is_alive() for t in self._stages) and not hurry.is_set():
            for thread in self._stages:
                thread.join(0.05)
        if hurry.is_set():
            self._hurry.set()
        while self._loader.is_alive() and not hurry.is_set() and time.monotonic() < deadline:
            self._loader.join(0.05)
        return not (any(t.is_alive() for t in self._stages) or self._loader.is_alive())


def by_settings(items: list) -> list[tuple['RunSettings', list]]:
    """[(stream, (frame, rgb, settings))] -> [(settings, [(stream, frame, rgb)])]: one
    forward per settings value. Frames converted across a settings change keep the settings
    they started with; a snapshot rebuilt with the same values (a query change re-reads
    them all) does not split a cycle in two."""
    groups: list[tuple[RunSettings, list]] = []
    for stream, (frame, rgb, settings) in items:
        group = next((g for s, g in groups if s == settings), None)
        if group is None:
            group = []
            groups.append((settings, group))
        group.append((stream, frame, rgb))
    return groups


def release_memory() -> None:
    """Return freed model memory: collect cycles (a model and its backend refer to each
    other), hand cached CUDA blocks back, and have glibc return free heap pages to the OS
    (its arenas keep them otherwise, and RSS would not fall)."""
    gc.collect()
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if sys.platform.startswith('linux'):
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def describe(settings: ModelSettings) -> str:
    return (
        f'model {settings.model!r} (pretrained {settings.pretrained}, method '
        f'{settings.method}, device {settings.device}, precision {settings.precision}'
        + (f', backend {settings.backend})' if settings.backend != 'torch' else ')')
    )


def error_kind(exc: Exception) -> str:
    """What a throttle keys an error by: its first words with numbers masked, so
    'truncated image data: 2294 bytes...' and '...: 17 bytes...' are one kind."""
    return ' '.join(re.sub(r'\d+', '#', str(exc)).split()[:3])


def _finite(x: float) -> bool:
    return x == x and abs(x) != float('inf')
