"""The model in use and the loads that replace it, with no ROS.

    slot = ModelSlot(log, load, on_load_failed, hint, queries, served_shapes, stop, threads)
    slot.request(settings)       # loads on the loader thread; the old model serves meanwhile
    slot.model, slot.loaded      # what frames run on, and its settings
    slot.drop()                  # no model; a load in flight is discarded when it ends

A load builds the model, encodes the active queries' text, and builds a graph backend's graphs
and engines for the input shapes the running model served (minutes on a Jetson), all on the
loader thread; the new model goes into use only once the active queries pass its tokenizer
(the tokenizer runs outside every lock the frame path takes).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import gem_ros.gem as gem
from gem_ros.settings import ModelSettings
from gem_ros.threads import LatestSlot

POLL_S = 0.5  # how often the loader looks at the stop flag


class ModelSlot:
    def __init__(
        self,
        log,
        load: Callable[..., gem.GemModel],
        on_load_failed: Callable[[ModelSettings], None],
        weights_hint: str,
        queries,
        served_shapes: Callable[[], list],
        stop: threading.Event,
        threads: bool,
    ):
        """queries: the QueryBook (its lists are encoded and checked by a new model);
        served_shapes(): the input shapes recent frames had; stop: set when the engine
        closes; threads: False offline (load_now on the caller's thread, graphs built there)."""
        self._log, self._load_model, self._on_load_failed = log, load, on_load_failed
        self._weights_hint = weights_hint
        self._queries, self._served_shapes, self._stop = queries, served_shapes, stop
        self._threads = threads
        self._lock = threading.Lock()  # _model and _loaded, assigned together
        self._model: Optional[gem.GemModel] = None
        self._loaded: Optional[ModelSettings] = None  # settings of the model in use
        self.requested: Optional[ModelSettings] = None  # of the newest load request
        self.last_load_error: Optional[tuple[ModelSettings, str]] = None
        self._requests = LatestSlot()
        self.thread = threading.Thread(target=self._load_models, name='gem-loader', daemon=True)
        if threads:
            self.thread.start()

    @property
    def model(self) -> Optional[gem.GemModel]:
        with self._lock:
            return self._model

    @property
    def loaded(self) -> Optional[ModelSettings]:
        with self._lock:
            return self._loaded

    def request(self, settings: ModelSettings) -> None:
        """Load a model with these settings in the background, unless it is the one in use or
        already being loaded; a request not started yet is replaced."""
        if settings == self.requested:
            return
        self.requested = settings
        if settings == self.loaded:  # e.g. put back after a failed load: nothing to load
            self._requests.take(0)
            return
        self._requests.put(settings)

    def forget_request(self, settings: ModelSettings) -> bool:
        """After a failed load: whether `settings` was still the newest request (then the same
        settings asked for again are loaded again)."""
        if settings != self.requested:
            return False
        self.requested = None
        return True

    def load_now(self, settings: ModelSettings) -> Optional[str]:
        """Offline: load on this thread; why it failed, or None."""
        self.requested = settings
        self._load(settings)
        return None if self.loaded == settings else self.load_error(settings)

    def wait_for(
        self, settings: ModelSettings, cancelled: Callable[[], bool] = lambda: False
    ) -> Optional[str]:
        """Request `settings` and wait (polling `cancelled`) until they are loaded; why they
        could not be, or None. For a managed node's configure, which must answer with the
        outcome."""
        self.last_load_error = None
        self.request(settings)
        while True:
            # Parameters are answered while it waits: a change of the model's asks for
            # another, which is then the one waited for.
            if self.requested is not None:
                settings = self.requested
            if self.loaded == settings:
                return None
            error = self.load_error(settings)
            if error:
                return error
            if cancelled() or self._stop.is_set():
                return 'stopped while loading'
            time.sleep(0.05)

    def load_error(self, settings: ModelSettings) -> Optional[str]:
        failed = self.last_load_error
        return failed[1] if failed is not None and failed[0] == settings else None

    def drop(self) -> None:
        """No model in use, no request waiting; a load in flight is discarded when it ends."""
        with self._lock:
            self._model, self._loaded = None, None
        self.requested = None
        self._requests.take(0)

    def close(self) -> None:
        self._requests.close()

    def _load_models(self) -> None:
        while not self._stop.is_set():
            settings = self._requests.take(POLL_S)
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
            for queries in self._queries.all_lists():
                model.prepare_queries(queries)  # the text tower here, not on the first frame
            self._prepare_graphs(model, what)
        except Exception as exc:  # ModelLoadError, QueryError (e.g. a shorter context), ...
            text = exc.told(self._weights_hint) if isinstance(exc, gem.ModelLoadError) else exc
            self._failed(settings, f'could not load {what}: {text}')
            return
        if self._stop.is_set():
            return
        if settings != self.requested:  # the settings changed while it loaded
            self._log.now('info', f'not using the {what}: the settings changed while it loaded')
            return
        try:
            self._install(model, settings)
        except gem.QueryError as exc:
            self._log.now('error', f'the new {what} rejects the active queries: {exc}')
            self._failed(settings, f'the new {what} rejects the active queries', log=False)
            return
        runs = f' in {model.precision}' if model.precision != settings.precision else ''
        self._log.now(
            'info',
            f'loaded {what} on {model.device}{runs} in {time.monotonic() - started:.1f} s',
        )

    def _failed(self, settings: ModelSettings, why: str, log: bool = True) -> None:
        if log:
            self._log.now('error', why)
        self.last_load_error = (settings, why)
        self._on_load_failed(settings)

    def _install(self, model, settings: ModelSettings) -> None:
        """Make `model` the one in use, once the active queries (which may have changed while
        it loaded) pass its tokenizer; QueryError otherwise. The tokenizer runs outside the
        locks that offer() and the executor's calls take: they never wait on it."""

        def use() -> None:
            with self._lock:
                self._model, self._loaded = model, settings

        while True:
            lists = self._queries.all_lists()
            for queries in lists:
                model.check_queries(queries)
            if self._queries.if_unchanged(lists, use):
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
        backend.stop = self._stop  # a stopping engine kills an export in progress
        for shape in self._served_shapes():
            self._log.now(
                'info',
                f'{what}: building its {backend.name} graph for {shape[0]}x{shape[1]} inputs '
                '(the running model serves meanwhile)',
            )
            backend.prepare(shape)


def describe(settings: ModelSettings) -> str:
    return (
        f'model {settings.model!r} (pretrained {settings.pretrained}, method '
        f'{settings.method}, device {settings.device}, precision {settings.precision}'
        + (f', backend {settings.backend})' if settings.backend != 'torch' else ')')
    )
