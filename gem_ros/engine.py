"""The running GEM model behind the node, with no ROS: a small facade over its parts.

    engine = Engine(log, convert=to_rgb, publish=on_result, on_load_failed=put_back)
    engine.request_model(ModelSettings(...))     # loads on the loader thread
    engine.set_queries(['red mug', 'person'])    # checked with the tokenizer, milliseconds
    engine.offer(frame)                          # newest frame wins; the stages run it
    engine.close()

The parts, one job each:
- query_book.py: the active queries (shared, or a camera's own) and the questions waiting
  ("is there a red mug?", the node's ~/locate), which the next frame runs alongside the
  active queries (each query's outputs are its own) and answers through their callbacks;
- model_slot.py: the model in use, and the loader thread that builds the next one (text
  embeddings, a graph backend's graphs) while the old one serves;
- frame_processor.py: what one frame goes through (conversion, the model, held presence,
  publishing, answers), with no threads;
- stages.py: the three stage threads (convert -> inference -> publish) with their bounded
  hand-overs, the rate gate and the in-flight tracking.

Threads, and what each may wait on: the caller's thread (the node's executor) never waits on
the model (queries are checked with the tokenizer and swapped in under locks held only for
assignments; frames and load requests go into one-item slots); the stage threads wait on
each other's slots; the loader thread on nothing the others hold.

Offline (`gem-ros bag`, where every frame counts and there is no camera to keep up with):
`Engine(..., threads=False)`, then `load_now(settings)` and `process(frame)` on the caller's
thread: the same conversion, budget, model call and checks as the node's frames. A managed
node gives its model back (`unload`: memory returned to the OS and the GPU) and loads it
again on demand (`wait_for_model`).
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from typing import Callable, Optional

import gem_ros.gem as gem
from gem_ros.frame_processor import FrameProcessor
from gem_ros.model_slot import ModelSlot
from gem_ros.query_book import Ask, QueryBook
from gem_ros.run_settings import RunSettings
from gem_ros.settings import ModelSettings
from gem_ros.stages import Stages
from gem_ros.threads import ThrottledLog

STOP_WAIT_S = 0.5  # at stop, how long a model load (which cannot be interrupted) is waited for
UNLOAD_WAIT_S = 30.0  # at unload, how long the frame in flight is waited for


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
        measure: Optional[Callable] = None,
        consume: Optional[Callable] = None,
    ):
        """convert(frame, max_image_pixels) -> RGB uint8 array, ValueError for a bad frame;
        publish(result): a frame's FrameResult (gem_ros/frame_result.py), its `published`
        detections the active queries'; measure(result) -> its FrameGeometry or None, once per
        frame before publish and the answers read it; consume(result): every frame's result
        after its publish, published or not (the memory, the map of dense features);
        on_load_failed(settings): a requested model could not be loaded (worker or loader
        thread: hand it to your own thread if it needs one); local_weights_hint: how the
        caller's users pass a local weights file, for the missing-weights message;
        threads: False for offline use, with load_now and process on the caller's thread."""
        self._log = log
        self._queries = QueryBook()  # the active queries and the questions waiting
        self.settings = RunSettings()
        self._stop = threading.Event()
        # What a frame goes through (the offline process() runs it whole), the stage threads
        # that carry it, and the model it runs on, with its loader thread.
        self._processor = FrameProcessor(
            log, convert, publish, self._queries, self._done, (measure, consume)
        )
        self._stages = Stages(
            log, self._processor, self._queries, lambda: self.settings,
            lambda: self._slot.model, self._stop,
        )  # fmt: skip
        self._slot = ModelSlot(
            log, load, on_load_failed, local_weights_hint, self._queries,
            self._processor.shapes_served, self._stop, threads,
        )  # fmt: skip
        self._processor.slot = self._slot
        if threads:
            self._stages.start()

    # --- state ----------------------------------------------------------------------------
    @property
    def queries(self) -> list[str]:
        """The shared queries."""
        return self._queries.shared

    def queries_of(self, camera: str) -> list[str]:
        """The queries frames of `camera` are run with: its own, or the shared ones."""
        return self._queries.of(camera)

    def has_own_queries(self, camera: str) -> bool:
        return self._queries.has_own(camera)

    @property
    def loaded(self) -> Optional[ModelSettings]:
        return self._slot.loaded

    @property
    def last_load_error(self) -> Optional[tuple[ModelSettings, str]]:
        return self._slot.last_load_error

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one of their camera before a stage took them."""
        return self._stages.dropped

    def dropped_of(self, camera: str) -> int:
        return self._stages.dropped_of(camera)

    @property
    def in_flight(self) -> Optional[list]:
        """The frames taken from the slots and not finished yet (in any stage), or None."""
        return self._stages.in_flight

    def was_finished(self, frames) -> bool:
        """Whether each of these frames (in_flight's) went through its last stage."""
        return self._stages.was_finished(frames)

    def _done(self, frames, finished: bool = True) -> None:
        self._stages.done(frames, finished)

    @property
    def model(self) -> Optional[gem.GemModel]:
        return self._slot.model

    def take_latencies(self) -> list[float]:
        """Inference seconds of the frames processed since the last call."""
        return self._processor.take_latencies()

    @property
    def processed(self) -> int:
        return self._processor.processed

    @property
    def last_result_time(self) -> Optional[float]:
        """time.monotonic() of the last result."""
        return self._processor.last_result_time

    @property
    def want_patch_logits(self) -> bool:
        return self._processor.want_patch_logits

    @want_patch_logits.setter
    def want_patch_logits(self, wanted: bool) -> None:
        """Set by the caller: someone reads the patch grids."""
        self._processor.want_patch_logits = wanted

    @property
    def tokens_wanted(self):
        """tokens_wanted(camera): whether a frame of `camera` should carry its patch tokens
        now (FrameResult.tokens; the map of dense features), with no query active too."""
        return self._processor.tokens_wanted

    @tokens_wanted.setter
    def tokens_wanted(self, wanted) -> None:
        self._processor.tokens_wanted = wanted

    def update_settings(self, settings: RunSettings) -> None:
        self.settings = settings
        self._stages.wake()

    # --- queries --------------------------------------------------------------------------
    def check_queries(self, queries) -> list[str]:
        """Checked queries (QueryError otherwise): with the model's tokenizer once a model is
        loaded (milliseconds; the text tower runs later, on the worker thread)."""
        model = self._slot.model
        return model.check_queries(queries) if model is not None else gem.check_queries(queries)

    def set_queries(self, queries, camera: Optional[str] = None) -> bool:
        """Check and activate `queries` (QueryError, and the active ones kept, otherwise):
        the shared ones, or with `camera` that camera's own (None for queries: the camera
        uses the shared ones again); whether what that camera (or the shared list) runs
        changed."""
        checked = self.check_queries(queries) if queries is not None else None
        return self._queries.set(checked, camera)

    def ask(self, query: str, answer: Callable, camera: Optional[str] = None) -> Ask:
        """Have the next processed frame (of `camera`; None: the best view of any) answer
        `query` (checked: QueryError otherwise) through answer(result, index): the frame's
        FrameResult and the index of the query's detection, called once on the worker thread.
        RuntimeError when MAX_ASKS questions are already waiting."""
        (query,) = self.check_queries([query])  # QueryError for a blank one
        return self._queries.ask(query, answer, camera)

    def withdraw(self, request: Ask) -> bool:
        """Take back a question not answered yet (e.g. its caller timed out); whether it was
        still waiting."""
        return self._queries.withdraw(request)

    # --- frames ---------------------------------------------------------------------------
    def offer(self, frame, camera: str = '') -> Optional[str]:
        """Hand a frame of `camera` to the worker, replacing that camera's frame
        not taken yet; or why it was skipped."""
        wanted = self._processor.tokens_wanted
        if not self._queries.wanted(camera) and not (wanted is not None and wanted(camera)):
            return 'no active queries'
        if self._slot.model is None:
            return 'no model loaded yet'
        self._stages.put(camera, frame)
        return None

    def process(self, frame, camera: str = '') -> Optional[str]:
        """Offline: run one frame through the three stages on this thread (never dropped, no
        rate limit); why it gave no result, or None when it was published."""
        return self._processor.process(frame, camera, self.settings)

    # --- models ---------------------------------------------------------------------------
    def request_model(self, settings: ModelSettings) -> None:
        """Load a model with these settings in the background, unless it is the one in use or
        already being loaded; a request not started yet is replaced."""
        self._slot.request(settings)

    def forget_request(self, settings: ModelSettings) -> bool:
        """After a failed load: whether `settings` was still the newest request (then the same
        settings asked for again are loaded again)."""
        return self._slot.forget_request(settings)

    def load_now(self, settings: ModelSettings) -> Optional[str]:
        """Offline: load on this thread; why it failed, or None."""
        return self._slot.load_now(settings)

    def wait_for_model(
        self, settings: ModelSettings, cancelled: Callable[[], bool] = lambda: False
    ) -> Optional[str]:
        """Request `settings` and wait until they are loaded; why they could not be, or None
        (a managed node's configure, which must answer with the outcome)."""
        return self._slot.wait_for(settings, cancelled)

    def unload(self) -> None:
        """Drop the model (and any load not started) and give its memory back: host memory
        to the OS, cached CUDA blocks to the driver. A frame in flight finishes first (at most
        UNLOAD_WAIT_S); a load in flight is discarded when it ends."""
        self._slot.drop()
        self._stages.clear()
        deadline = time.monotonic() + UNLOAD_WAIT_S
        while self._stages.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        release_memory()

    # --- stop -----------------------------------------------------------------------------
    def close(self, hurry: Optional[threading.Event] = None) -> bool:
        """Stop the threads: the frame in flight is finished (it cannot be interrupted), a
        model load is waited for at most STOP_WAIT_S; `hurry` (e.g. a second signal) ends the
        waiting. Returns whether every thread has ended."""
        self._stop.set()
        self._slot.close()
        hurry = hurry or threading.Event()
        deadline = time.monotonic() + STOP_WAIT_S
        stages_ended = self._stages.close(hurry)
        loader = self._slot.thread
        while loader.is_alive() and not hurry.is_set() and time.monotonic() < deadline:
            loader.join(0.05)
        return stages_ended and not loader.is_alive()


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
