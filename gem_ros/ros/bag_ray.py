"""`gem-ros bag ... --ray [ADDRESS]`: the bags of a set labelled by Ray actors, one model
each, loaded once and kept for every bag the actor takes.

The driver (this process) hands one bag at a time to each idle actor and writes the index as
results come back; a bag is only ever given to one live actor, so two workers never write one
output. An actor that dies (killed, out of memory, its node lost) is replaced, and its bag
given again, to continue from where its output ends (--retries times, then recorded failed).
ctrl-c or SIGTERM asks every actor to stop after its frame in flight, which closes its output
readable, then kills them; --resume continues. The outputs go to OUT as the actors see it: on
a cluster, a folder every node mounts (NFS, a PVC shared by the KubeRay pods).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from gem_ros.ros.bag import EXIT_INTERRUPTED, BagError
from gem_ros.ros.bag_set import LOCAL, Index, Item, Labeller, SetProgress

log = logging.getLogger('gem-ros')

STOP_WAIT_S = 60.0  # for the actors to close their outputs after ctrl-c
POLL_S = 1.0


class BagActor:
    """A Ray actor: a Labeller (its model loaded on the first bag) in a process of its own.
    Threaded (max_concurrency) so that progress() and stop() answer while a bag runs."""

    def __init__(self, args):
        logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
        log.setLevel(logging.INFO)
        self.labeller = Labeller(args)
        self.stopping = threading.Event()

    def where(self) -> tuple:
        return socket.gethostname(), os.getpid()

    def label(self, item: Item, out: str) -> dict:
        return self.labeller.label(item, Path(out), self.stopping)

    def frames(self) -> int:
        return self.labeller.frames()

    def stop(self) -> None:
        self.stopping.set()


def connect(address: str) -> float:
    """Start or join Ray; the seconds it took. Before the set's signal handlers: ctrl-c here
    is a KeyboardInterrupt (Ray's start blocks in its own code). An address with a port is
    first tried over TCP, for a bounded answer: Ray itself retries an unreachable one for
    minutes."""
    started = time.monotonic()
    _reachable(address)
    try:
        if address == LOCAL:  # a Ray of this run's own, even where RAY_ADDRESS names another
            ray.init(address='local', include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, ValueError, ...: whatever Ray says, said plainly
        raise BagError(
            f'cannot {"start" if address == LOCAL else "reach"} Ray at {address}: '
            f'{type(exc).__name__}: {exc}'
        ) from exc
    return time.monotonic() - started


def _reachable(address: str, timeout_s: float = 10.0) -> None:
    host, _, port = address.removeprefix('ray://').rpartition(':')
    if not (host and port.isdigit()):
        return  # `local`, `auto`: Ray finds (or starts) it and answers promptly
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise BagError(f'cannot reach Ray at {address}: {exc}') from None


def disconnect() -> None:
    ray.shutdown()  # a local instance stops with it; a cluster keeps running


def _workers(args, count: int) -> int:
    """--workers, or as many actors as the cluster's CPUs and GPUs fit, one per bag at most.
    None fitting is refused on a local instance (it never grows), and said on a cluster
    (an autoscaler may add the nodes they wait for)."""
    resources = ray.cluster_resources()
    fit = int(resources.get('CPU', 0) // args.cpus_per_worker)
    if args.num_gpus > 0:
        fit = min(fit, int(resources.get('GPU', 0) // args.num_gpus))
    if fit < 1:
        have = f'{resources.get("CPU", 0):g} CPU and {resources.get("GPU", 0):g} GPU'
        needs = f'{args.cpus_per_worker:g} CPU and {args.num_gpus:g} GPU'
        if args.ray == LOCAL:
            raise BagError(
                f'this machine has {have}: no worker fits ({needs} each; --cpus-per-worker, '
                '--num-gpus)'
            )
        log.warning('the cluster has %s, no worker fits (%s each): they wait for it', have, needs)
    if args.workers is not None:
        if args.workers > max(fit, 1):
            log.warning(
                '%d workers asked, %d fit the cluster now: the rest wait', args.workers, fit
            )
        return args.workers
    return max(1, min(fit, count))


def run_on_ray(args, index: Index, stop: threading.Event, progress: SetProgress, startup):
    """On the Ray `connect` joined: (exit code, the summary's Ray fields)."""
    pending = index.pending()
    workers = _workers(args, len(pending)) if pending else 0
    log.info(
        'Ray at %s: %s; %d workers (%g CPU, %g GPU each), started in %.1f s',
        args.ray,
        {k: v for k, v in ray.cluster_resources().items() if k in ('CPU', 'GPU')},
        workers,
        args.cpus_per_worker,
        args.num_gpus,
        startup,
    )
    code = _Driver(args, index, stop, progress, workers).run(pending)
    return code, {'ray_startup_seconds': round(startup, 3), 'workers': workers}


class _Driver:
    def __init__(self, args, index, stop, progress, workers):
        self.args, self.index, self.stop, self.progress = args, index, stop, progress
        self.actor_class = ray.remote(
            num_cpus=args.cpus_per_worker,
            num_gpus=args.num_gpus,
            max_concurrency=4,
            max_restarts=0,  # a dead actor is replaced here, its bag given again
        )(BagActor)
        self.actors, self.where = {}, {}  # worker -> actor; -> (host, pid), or its ObjectRef
        for worker in range(workers):
            self._spawn(worker)
        self.running = {}  # ObjectRef -> (worker, Item)
        self.deaths = collections.Counter()  # bag name -> its workers that died

    def _spawn(self, worker: int) -> None:
        self.actors[worker] = actor = self.actor_class.remote(self.args)
        self.where[worker] = actor.where.remote()

    def _located(self) -> None:
        """The host and pid of each actor that has started, into its running bag's line."""
        for worker, where in list(self.where.items()):
            if isinstance(where, ray.ObjectRef) and ray.wait([where], timeout=0)[0]:
                try:
                    self.where[worker] = tuple(ray.get(where))
                except RayActorError:
                    continue  # died starting: _finished replaces it
                for w, item in self.running.values():
                    if w == worker:
                        host, pid = self.where[worker]
                        self.index.update(item.name, host=host, worker=pid)

    def run(self, pending: list) -> int:
        queue = collections.deque(pending)
        out = str(self.index.out)
        while queue or self.running:
            if self.stop.is_set():
                return self._stop_all()
            busy = {worker for worker, _ in self.running.values()}
            for worker, actor in self.actors.items():
                if queue and worker not in busy:
                    item = queue.popleft()
                    attempts = self.index.records[item.name]['attempts'] + 1
                    where = self.where[worker]
                    host, pid = where if isinstance(where, tuple) else ('', 0)
                    self.index.update(
                        item.name, status='running', attempts=attempts, host=host, worker=pid
                    )
                    self.running[actor.label.remote(item, out)] = (worker, item)
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                self._finished(ref, queue)
            self._located()
            self._poll_progress()
        return 0

    def _finished(self, ref, queue) -> None:
        worker, item = self.running.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as exc:  # the actor's process died: a new one takes the bag
            self.deaths[item.name] += 1  # this run's; an earlier run's stops are no deaths
            deaths = self.deaths[item.name]
            self._spawn(worker)
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if deaths <= self.args.retries:
                log.warning(
                    'the worker labelling %s died (%s): trying it again (%d of %d)',
                    item.input,
                    why,
                    deaths,
                    self.args.retries,
                )
                self.index.update(item.name, status='pending', error=f'worker died: {why}')
                queue.appendleft(item)
            else:
                log.error('%s: its worker died %d times: recorded as failed', item.input, deaths)
                self.index.update(item.name, status='failed', error=f'worker died: {why}')
            return
        except RayTaskError as exc:  # the labeller raised what it does not expect: a bug
            log.error('%s: %s', item.input, exc)
            self.index.update(item.name, status='failed', error=str(exc).splitlines()[-1])
            return
        self.index.update(item.name, **result)

    def _poll_progress(self) -> None:
        if self.progress.bar is None:
            return
        refs = {worker: self.actors[worker].frames.remote() for worker, _ in self.running.values()}
        try:
            frames = dict(zip(refs, ray.get(list(refs.values()), timeout=POLL_S)))
        except (GetTimeoutError, RayActorError):
            return  # a busy or dying actor: the next poll
        self.progress.poll(frames)

    def _stop_all(self) -> int:
        """Every actor stops after its frame in flight and closes its output; those that do
        not within STOP_WAIT_S are killed (their partial outputs resume as after a kill)."""
        log.warning('stopping %d workers after their frames in flight', len(self.running))
        for actor in self.actors.values():
            actor.stop.remote()
        deadline = time.monotonic() + STOP_WAIT_S
        while self.running and time.monotonic() < deadline:
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                self._finished(ref, collections.deque())
        for _, item in self.running.values():
            self.index.update(item.name, status='interrupted', error='stopped: not closed')
        for actor in self.actors.values():
            ray.kill(actor)
        return EXIT_INTERRUPTED
