"""The frame path's three stage threads, with no ROS: convert -> inference -> publish, so
that the model runs frame k+1 while frame k is published.

- `convert` takes the newest frame of every camera that has one, at most
  max_rate_hz, and converts it (decoding); the cycle's frames go on together;
- `inference` runs the model on the converted frames (FrameProcessor.infer): one forward
  per settings value, a batch on a GPU, frame by frame on a CPU;
- `publish` hands each frame's detections on and answers the questions.

Hand-overs are bounded: one slot per camera before conversion and before inference (newest
wins, counted as dropped), one batch of results before publishing (the model waits for the
publisher). Every frame taken is tracked until it leaves the path, so that a stop can say
which frame was in flight and whether it was finished.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

from gem_ros.threads import LatestSlot, LatestSlots

if TYPE_CHECKING:
    from gem_ros.run_settings import RunSettings

POLL_S = 0.5  # how often idle threads look at the stop flag


class Stages:
    def __init__(self, log, processor, queries, settings: Callable, model: Callable, stop):
        """processor: the FrameProcessor; queries: the QueryBook (questions put back);
        settings(): the current RunSettings; model(): the model in use; stop: set when the
        engine closes."""
        self._log, self._processor, self._queries = log, processor, queries
        self._settings, self._model, self._stop = settings, model, stop
        self._lock = threading.Lock()  # the tracking and the busy count
        self._frames = LatestSlots()  # the newest frame of each camera
        self._converted = LatestSlots()
        self._results = LatestSlot()
        self._results_taken = threading.Event()  # the publisher took the batch waiting
        self._results_taken.set()
        self._handing_over = threading.Lock()
        # The cores the model may use (torch's intra-op threads as the process started:
        # OMP_NUM_THREADS where set); a CPU cycle's forwards share them (_side_by_side).
        self._cores = _torch_threads()
        self._hurry = threading.Event()  # close without finishing the frames in flight
        self._wake = threading.Event()  # rate-limit waits end early on a settings change
        self._last_start = -1e9  # when the last frames were taken (max_rate_hz)
        self._tracked: dict = {}  # id -> frame, from conversion until published or dropped
        self._finished: deque = deque(maxlen=64)  # ids of the frames finished last
        self.busy = 0  # stages working on frames (unload waits for none)
        self._threads = [
            threading.Thread(target=self._run_stage, args=(name, work), name=f'gem-{name}',
                             daemon=True)
            for name, work in (
                ('convert', self._convert_stage),
                ('inference', self._inference_stage),
                ('publish', self._publish_stage),
            )
        ]  # fmt: skip

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(self, camera: str, frame) -> None:
        """A camera's newest frame, replacing one not taken yet."""
        self._frames.put(camera, frame)

    def clear(self) -> None:
        """Drop the frames not taken yet (unload)."""
        self._frames.take_all(0)

    def wake(self) -> None:
        """The settings changed: a rate-limit wait ends now."""
        self._wake.set()

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one of their camera before a stage took them."""
        return self._frames.total_replaced + self._converted.total_replaced

    def dropped_of(self, camera: str) -> int:
        return self._frames.replaced.get(camera, 0) + self._converted.replaced.get(camera, 0)

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

    def done(self, frames, finished: bool = True) -> None:
        """These frames left the path (finished, or not: dropped, failed)."""
        with self._lock:
            for f in frames:
                self._tracked.pop(id(f), None)
                if finished:
                    self._finished.append(id(f))

    def _run_stage(self, name: str, work: Callable[[], bool]) -> None:
        """A stage's loop: work() until the engine stops and the stages before have drained
        (a frame taken is finished, unless close is hurried); every error is logged and the
        stage goes on serving."""
        before = self._threads[: [t.name for t in self._threads].index(f'gem-{name}')]
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
        settings = self._settings()  # the frames' snapshot, to their last stage
        with self._busy_count():
            converted, _ = self._processor.convert_all(frames, settings)
        # One hand-over: the inference stage takes the cycle's frames together (a batch), not
        # the first of them alone as it wakes.
        replaced = self._converted.put_all(
            [(camera, (frame, rgb, settings)) for camera, frame, rgb in converted]
        )
        for frame, _, _ in replaced:  # the model was busy: newest wins
            self.done([frame], finished=False)
        return True

    def _inference_stage(self) -> bool:
        if self._hurry.is_set():
            return False
        items = self._converted.take_all(POLL_S)
        if not items:
            return False
        for settings, ready in by_settings(items):
            forwards = self._forwards(ready)
            if len(forwards) > 1 and self._cores > 1:
                self._side_by_side(forwards, settings)
                continue
            for forward in forwards:
                with _intra_op_threads(self._cores):
                    self._infer_and_hand_over(forward, settings)
        return True

    def _side_by_side(self, forwards: list, settings) -> None:
        """A CPU cycle of several cameras' frames: up to one forward per core at once, each
        with its share of the cores. Per core, a forward on one thread does a little more
        than on two (ViT-B-16 at 448, 2 cores: 1.05-1.13x, none lost to threads waiting on
        each other), and a batch gains nothing on a CPU (benchmarks/cameras.py --forwards).
        Each hands its result over alone."""
        errors: list = []

        def run(forward, threads: int) -> None:
            try:
                with _intra_op_threads(threads):
                    self._infer_and_hand_over(forward, settings)
            except BaseException as exc:  # noqa: BLE001 - raised below, on the stage's thread
                errors.append(exc)

        for at in range(0, len(forwards), self._cores):
            group = forwards[at : at + self._cores]
            threads = max(1, self._cores // len(group))
            helpers = [
                threading.Thread(target=run, args=(f, threads), name='gem-inference-side',
                                 daemon=True)
                for f in group[1:]
            ]  # fmt: skip
            for helper in helpers:
                helper.start()
            run(group[0], threads)
            for helper in helpers:
                helper.join()
        if errors:
            raise errors[0]

    def _forwards(self, ready: list) -> list[list]:
        """A cycle's frames as the forwards that run them. A GPU runs a batch in about one
        frame's time: one forward. On a CPU a batch gains nothing (its frames run one after
        the other) and holds every camera's result until the last is done: there each frame
        is handed over alone, published while the next runs (benchmarks/cameras.py). A
        question for any camera keeps the cycle together: the best of its views answers."""
        model = self._model()
        if len(ready) < 2 or model is None or model.device.type == 'cuda':
            return [ready]
        if self._queries.any_camera_asked():
            return [ready]
        return [[item] for item in ready]

    def _infer_and_hand_over(self, ready: list, settings) -> None:
        try:
            with self._busy_count():
                batch, _ = self._processor.infer(ready, settings)
        except BaseException:
            self.done([frame for _, frame, _ in ready])  # failed: not left in flight
            raise
        if batch is None:
            self.done([frame for _, frame, _ in ready])
            return
        # One batch waits for the publisher; the model goes on once it is taken. Forwards
        # side by side hand over one at a time.
        with self._handing_over:
            while not self._results_taken.wait(POLL_S):
                if self._hurry.is_set():
                    self._queries.put_back(batch.asks)
                    self.done([frame for _, frame, _ in ready], finished=False)
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
                self._processor.publish_all(batch)
        finally:
            self.done([result.frame for result in batch.results])
        return True

    @contextlib.contextmanager
    def _busy_count(self):
        with self._lock:
            self.busy += 1
        try:
            yield
        finally:
            with self._lock:
                self.busy -= 1

    def _rate_allows(self, last_start: float) -> bool:
        """False after waiting (at most POLL_S, less when the settings change) while
        max_rate_hz holds the next frame back; True when a frame may start."""
        rate = self._settings().max_rate_hz
        wait = last_start + 1.0 / rate - time.monotonic() if rate > 0 else 0.0
        if wait <= 0:
            return True
        self._wake.wait(min(wait, POLL_S))
        self._wake.clear()
        return False

    def close(self, hurry: threading.Event) -> bool:
        """After the engine's stop is set: the stages drain what they took (the frames in
        flight), then end; `hurry` ends them at once. Whether they all ended."""
        self._wake.set()
        self._frames.close()
        while any(t.is_alive() for t in self._threads) and not hurry.is_set():
            for thread in self._threads:
                thread.join(0.05)
        if hurry.is_set():
            self._hurry.set()
        return not any(t.is_alive() for t in self._threads)


def by_settings(items: list) -> list[tuple['RunSettings', list]]:
    """[(camera, (frame, rgb, settings))] -> [(settings, [(camera, frame, rgb)])]: one
    forward per settings value. Frames converted across a settings change keep the settings
    they started with; a snapshot rebuilt with the same values (a query change re-reads
    them all) does not split a cycle in two."""
    groups: list[tuple[RunSettings, list]] = []
    for camera, (frame, rgb, settings) in items:
        group = next((g for s, g in groups if s == settings), None)
        if group is None:
            group = []
            groups.append((settings, group))
        group.append((camera, frame, rgb))
    return groups


def _torch_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


@contextlib.contextmanager
def _intra_op_threads(count: int):
    """torch's intra-op threads for the forwards of the calling thread (OpenMP's and MKL's
    thread counts are the calling thread's own)."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    yield
