"""What one frame goes through, with no threads and no ROS: conversion, the model (with the
active queries and the questions it answers), presence held over a camera's frames, and the
hand-over to the caller: each frame's `FrameResult` measured once (the caller's `measure`:
depth, points, TF), then published, then the questions answered from it. The engine's stages
run it step by step on their threads; offline (`gem-ros bag`) `process` runs it whole on the
caller's thread.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import gem_ros.gem as gem
from gem_ros.frame_result import FrameResult
from gem_ros.gem.hold import PresenceHold, judge_threshold
from gem_ros.query_book import Ask
from gem_ros.settings import FrameSettings
from gem_ros.threads import error_kind

if TYPE_CHECKING:
    from gem_ros.run_settings import RunSettings

SHAPES_PREPARED = 2  # recent input shapes a new graph model is built for before it serves
LATENCIES_KEPT = 1000  # inference times kept until read (diagnostics read them each second)


@dataclass
class Batch:
    """One forward's results on their way to the publisher."""

    results: list[FrameResult]  # one per frame, in the forward's order
    asks: list
    settings: 'RunSettings'


class FrameProcessor:
    def __init__(
        self, log, convert: Callable, publish: Callable, queries, done: Callable, hooks=(None, None)
    ):
        """convert(frame, max_image_pixels) -> RGB, ValueError for a bad frame;
        publish(FrameResult); queries: the QueryBook; done(frames): frames that leave the path
        here (refused, failed), for the in-flight tracking; hooks: (measure, consume):
        measure(FrameResult) -> its FrameGeometry or None, consume(FrameResult) after its
        publish (None: none)."""
        self._log, self._convert, self._publish = log, convert, publish
        self._measure, self._consume = hooks
        self._queries, self._done = queries, done
        self.slot = None  # the ModelSlot, set by the engine: the model frames run on
        self.want_patch_logits = False  # set by the caller: someone reads the patch grids
        # Set by the caller: tokens_wanted(camera) says a frame's patch tokens are wanted now
        # (the map of dense features); such frames run with no query active too.
        self.tokens_wanted: Optional[Callable[[str], bool]] = None
        self.processed = 0
        self.last_result_time: Optional[float] = None  # time.monotonic() of the last result
        self._latencies: deque = deque(maxlen=LATENCIES_KEPT)  # seconds, until taken
        self._holds: dict = {}  # camera -> PresenceHold, touched by the publish stage only
        self._reduced_sizes: set = set()
        # The model input shapes of recent frames, newest last: a new model's graphs are built
        # for them before it serves (backends onnxruntime and tensorrt). The inference stage
        # writes them, the loader reads them.
        self._lock = threading.Lock()
        self._served_shapes: OrderedDict = OrderedDict()

    def take_latencies(self) -> list[float]:
        """Inference seconds of the frames processed since the last call."""
        out = []
        while self._latencies:
            out.append(self._latencies.popleft())
        return out

    def process(self, frame, camera: str, settings) -> Optional[str]:
        """Offline: one frame through conversion, inference and publishing on this thread;
        why it gave no result, or None when it was published."""
        converted, why = self.convert_all([(camera, frame)], settings)
        if why:
            return why[0]
        batch, why = self.infer(converted, settings)
        if batch is None:
            return why[0]
        return self.publish_all(batch, isolate=False)[0]

    def convert_all(self, frames: list, settings: 'RunSettings') -> tuple[list, list]:
        """[(camera, frame)] -> ([(camera, frame, rgb)] of those converted, [why not] of the
        others, each logged)."""
        converted, why = [], []
        for camera, frame in frames:
            try:
                converted.append((camera, frame, self._convert(frame, settings.max_image_pixels)))
            except ValueError as exc:
                self._log('error', f'bad frame: {error_kind(exc)}', f'bad frame: {exc}')
                why.append(f'bad frame: {exc}')
                self._done([frame])
            except Exception as exc:  # any other fault costs this frame only, said as one
                self._log('error', 'frame', f'frame failed: {type(exc).__name__}: {exc}')
                why.append(f'frame failed: {exc}')
                self._done([frame])
        return converted, why

    def infer(self, ready: list, settings: 'RunSettings') -> tuple[Optional['Batch'], list]:
        """The newest converted frame of each waiting camera, [(camera, frame, rgb)]: checked
        against the budgets and run as one forward per input shape (GemModel.locate_batch);
        (the batch to publish, or None, and why frames gave no result)."""
        model = self.slot.model
        shared, own = self._queries.snapshot()
        if model is None:
            return None, ['no model loaded']
        frame_settings = settings.frame
        runnable, why = [], []
        for camera, frame, rgb in ready:
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
            runnable.append((camera, frame, rgb))
        if not runnable:
            return None, why
        active = {camera: own.get(camera, shared) for camera, _, _ in runnable}
        wanted = self.tokens_wanted
        tokens = [wanted is not None and wanted(camera) for camera, _, _ in runnable]
        asks, extra = self._queries.take_asks(active)
        if not asks and not any(active.values()) and not any(tokens):
            return None, why + ['no active queries'] * len(runnable)
        tokens_out = [None] * len(runnable) if any(tokens) else None
        try:
            started = time.perf_counter()
            arguments = frame_settings.locate_arguments()
            # Held presence decides found itself: the model judges at its lower threshold.
            arguments['presence_threshold'] = judge_threshold(
                settings.hold, arguments['presence_threshold']
            )
            detections = model.locate_batch(
                [rgb for _, _, rgb in runnable],
                [active[camera] + extra[camera] for camera, _, _ in runnable],
                tokens_out,
                **arguments,
                return_patch_logits=self.want_patch_logits,
                # A CPU gains no speed from a batch, only its activations' memory (ViT-B-16
                # at 448, 3 cameras: 1.19x one camera's peak RSS batched, measured by
                # benchmarks/cameras.py); a GPU runs the batch in about one frame's time.
                max_batch=gem.MAX_BATCH_IMAGES if model.device.type == 'cuda' else 1,
            )
            seconds = time.perf_counter() - started
        except BaseException:
            self._queries.put_back(asks)  # answered by a later frame, or by their timeout
            raise
        results = [
            FrameResult(s, f, rgb, d, len(active[s]), seconds, settings)
            for (s, f, rgb), d in zip(runnable, detections)
        ]
        for result, kept, wanted_here in zip(results, tokens_out or (), tokens):
            result.tokens = kept if wanted_here else None
        return Batch(results, asks, settings), why

    def publish_all(self, batch: 'Batch', isolate: bool = True) -> list[Optional[str]]:
        """Each frame of the batch measured, handed to the consumer (the memory, the map), and
        published (unless its similarities are not finite), then the questions answered; per
        frame, why it was not published, or None. isolate: a frame whose measure or publish
        raises is logged and the others go on (the live pipeline); else it raises (offline,
        where the caller stops its run: a bag's output that cannot be written)."""
        why, answered = [], []
        for result in batch.results:
            detections = result.detections
            if not all(_finite(d.score) and _finite(d.confidence) for d in detections):
                self._log(
                    'error',
                    'non-finite',
                    'the model gave non-finite similarities (NaN or '
                    'inf; e.g. fp16 overflow): frame not published',
                )
                why.append('non-finite similarities')
                continue
            self._decide_presence(result.camera, detections, result.active, batch.settings)
            self.processed += 1
            self._latencies.append(result.seconds)
            self.last_result_time = time.monotonic()
            # The frame's results stand whatever its publish does: its questions are answered
            # from it, and the cycle's other frames are published.
            answered.append(result)
            try:
                if self._measure is not None:
                    result.geometry = self._measure(result)
                # The memory and the map take the frame before its results go out: whoever
                # sees them and asks at once (~/recall, ~/ask_map) finds this frame there.
                self._hand_to_consumer(result, isolate)
                if result.active:
                    self._publish(result)
            except Exception as exc:
                if not isolate:
                    raise
                self._log('error', 'publish', f'publishing a frame of {result.camera!r} failed: '
                          f'{type(exc).__name__}: {exc}')  # fmt: skip
                why.append(f'publish failed: {exc}')
                continue
            why.append(None)
        self._answer(batch.asks, answered)
        return why

    def _hand_to_consumer(self, result: FrameResult, isolate: bool) -> None:
        """The caller's consume(result) (the memory, the map), for every frame with results,
        published or not (a frame run only for the map has no query)."""
        if self._consume is None:
            return
        try:
            self._consume(result)
        except Exception as exc:
            if not isolate:
                raise
            self._log('error', 'consume', f'a frame of {result.camera!r} was not taken in: '
                      f'{type(exc).__name__}: {exc}')  # fmt: skip

    def _decide_presence(self, camera: str, detections: list, active: int, settings) -> None:
        """With held presence: the camera's active queries decided by its PresenceHold (reset
        when its queries change, gem_ros.gem.hold), the questions' by this frame at the
        presence threshold itself (the model judged them at the lower one)."""
        if settings.hold is None:
            self._holds.pop(camera, None)
            return
        self._holds.setdefault(camera, PresenceHold()).update(detections[:active], settings.hold)
        for det in detections[active:]:
            if det.found and det.confidence < settings.hold.threshold:
                det.mark_absent(det.confidence)

    def _answer(self, asks: list[Ask], answered: list[FrameResult]) -> None:
        """Each question by the best view of its camera (or of any): found first, then the
        highest confidence, then the highest score; put back when no frame of its camera
        gave a result."""
        left = []
        for request in asks:
            views = [
                (result, result.index_of(request.query))
                for result in answered
                if request.camera is None or request.camera == result.camera
            ]
            if not views:
                left.append(request)
                continue

            def rank(view):
                det = view[0].detections[view[1]]
                return det.found, det.confidence, det.score

            try:
                request.answer(*max(views, key=rank))
            except Exception as exc:  # one caller's failure must not cost the others
                self._log('error', 'answer', f'answering {request.query!r}: {exc}')
        if left:
            self._queries.put_back(left)

    def shapes_served(self) -> list:
        """The model input shapes of recent frames (the loader builds a graph model's for
        them before it serves)."""
        with self._lock:
            return list(self._served_shapes)

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


def _finite(x: float) -> bool:
    return x == x and abs(x) != float('inf')
