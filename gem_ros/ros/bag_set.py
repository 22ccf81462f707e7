"""The parts of `gem-ros bag` over many bags (gem_ros/ros/bag_command.py runs them): the
inputs expanded to bags, their index, the labeller that runs bag after bag with one model,
the set's progress display, and the serial run (gem_ros/ros/bag_ray.py: the run on Ray).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from gem_ros.ros.bag import (
    EXIT_INTERRUPTED,
    BagError,
    BagJob,
    _open_input,
    _take_previous,
    checked_queries,
)

log = logging.getLogger('gem-ros')

INDEX, SUMMARY, PARTIAL = 'index.jsonl', 'summary.json', '.partial'
LIST_SUFFIXES = ('.txt', '.list')
LOCAL = 'local'  # `--ray` without an address: a Ray instance of this run's own


def is_bag(path: Path) -> bool:
    """A bag folder: metadata.yaml, or the storage files of a recording cut short."""
    if path.is_file():
        return path.suffix in ('.mcap', '.db3')
    return (path / 'metadata.yaml').is_file() or any(
        next(path.glob(f'*{s}'), None) for s in ('.mcap', '.db3')
    )


def is_list(path: Path) -> bool:
    return path.is_file() and path.suffix in LIST_SUFFIXES


@dataclass(frozen=True)
class Item:
    """An input bag and the name of its output under OUT."""

    input: str
    name: str


def expand(inputs: list, out: Optional[Path] = None) -> list:
    """The bags the inputs name, in order: a bag is OUT/<its folder's name>; a folder of bags
    gives every bag under it, OUT/<its path there>; a list file, one bag a line (blank lines
    and '#' comments skipped; relative paths from the current folder). Nothing inside `out`
    is an input (an output folder inside an input folder holds this set's own outputs, which
    are bags too): such inputs are left out, said in the log."""
    items = []
    inside_out = _inside(out)
    for text in inputs:
        path = Path(text)
        if inside_out(path):
            log.warning('%s is inside the output folder %s: not an input', path, out)
        elif is_list(path):
            for line in path.read_text(encoding='utf-8').splitlines():
                line = line.strip()
                if not line or line.startswith('#'):
                    continue
                if inside_out(Path(line)):
                    log.warning('%s (in %s) is inside the output folder: not an input', line, path)
                    continue
                items.append(Item(line, Path(line).name))
        elif path.is_dir() and not is_bag(path):
            found = _bags_under(path, inside_out)
            if not found:
                raise BagError(f'{path} is no bag and has none under it')
            items += [Item(str(b), b.relative_to(path).as_posix()) for b in found]
        else:  # a bag, or a path that is none: recorded as failed with the reason
            items.append(Item(text, path.name or path.resolve().name))
    names = {}
    for item in items:
        names.setdefault(item.name, []).append(item.input)
    clashes = {n: i for n, i in names.items() if len(i) > 1}
    if clashes:
        listed = '; '.join(f'{n}: {", ".join(i)}' for n, i in sorted(clashes.items()))
        raise BagError(
            f'two inputs would write one output (OUT/<folder name>): {listed}; put them in one '
            'folder and pass that folder (outputs named by their path in it)'
        )
    return items


def _inside(out: Optional[Path]) -> Callable[[Path], bool]:
    """Whether a path is `out` or under it (resolved: links and '..' followed)."""
    if out is None:
        return lambda path: False
    resolved = Path(out).resolve()
    return lambda path: path.resolve() == resolved or resolved in path.resolve().parents


def _bags_under(folder: Path, skip: Callable[[Path], bool]) -> list:
    found = []
    for root, dirs, _ in os.walk(folder):
        here = Path(root)
        if skip(here):
            log.warning('%s is inside the output folder: its bags are not inputs', here)
            dirs.clear()
            continue
        dirs.sort()
        if here != folder and is_bag(here):
            found.append(here)
            dirs.clear()  # a bag's own folders are no bags
    return found


class Index:
    """OUT/index.jsonl: one line per input, rewritten whole (a temporary file renamed over
    it) whenever a bag's state changes, so a reader never sees half of it."""

    def __init__(self, out: Path, items: list, resume: bool):
        self.out, self.items = out, items
        path = out / INDEX
        if out.exists() and not out.is_dir():
            raise BagError(f'{out} is not a folder: -o names the folder the outputs go to')
        if out.exists() and any(out.iterdir()) and not resume:
            raise BagError(f'{out} exists: --resume continues it, or choose another -o')
        old = {}
        if path.is_file():
            for line in path.read_text(encoding='utf-8', errors='replace').splitlines():
                try:
                    record = json.loads(line)
                    old[record['output']] = record
                except (ValueError, KeyError, TypeError):
                    continue
        # --resume continues a set's own output folder only: what it would write over (the
        # index, the outputs) must be ours.
        if resume and out.is_dir() and any(out.iterdir()) and not old:
            raise BagError(
                f'{out} holds no {INDEX} of a gem-ros bag run: --resume continues a set of '
                'bags in its own output folder; nothing there was changed'
            )
        self.records = {}
        for item in items:
            record = {'input': item.input, 'output': item.name, 'status': 'pending'}
            record.update(frames=0, seconds=0.0, error='', attempts=0, host='', worker=0)
            previous = old.get(item.name, {})
            if (out / item.name).exists():  # renamed there only when finished
                record.update(previous, status='done', input=item.input)
            self.records[item.name] = record
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def pending(self) -> list:
        return [i for i in self.items if self.records[i.name]['status'] != 'done']

    def update(self, name: str, **fields) -> None:
        self.records[name].update(fields)
        self.write()

    def write(self) -> None:
        temporary = self.out / f'{INDEX}.writing'
        with open(temporary, 'w', encoding='utf-8') as f:
            for item in self.items:
                f.write(json.dumps(self.records[item.name], ensure_ascii=False) + '\n')
        os.replace(temporary, self.out / INDEX)

    def summary(self, seconds: float, **extra) -> dict:
        records = self.records.values()
        count = {s: sum(r['status'] == s for r in records) for s in ('done', 'failed')}
        frames = sum(r['frames'] for r in records)
        return {
            'bags': len(self.items),
            'done': count['done'],
            'failed': count['failed'],
            'unfinished': len(self.items) - count['done'] - count['failed'],
            'frames': frames,
            'seconds': round(seconds, 3),
            'frames_per_second': round(frames / seconds, 3) if seconds > 0 else 0.0,
            **extra,
        }


class Labeller:
    """Labels bag after bag with one model, loaded on the first bag and kept: the driver's
    in a serial run, each Ray actor's own on a cluster."""

    def __init__(self, args):
        from gem_ros.settings import FrameSettings, from_arguments

        self.args = copy.copy(args)
        self.args.quiet = True  # the set has one progress display, not one per bag
        self.queries = checked_queries(args)
        self.frame_settings = from_arguments(FrameSettings, args)
        self._model = None
        self.job: Optional[BagJob] = None  # the bag in flight

    def _load(self, settings=None):
        from gem_ros.model_args import model_from_args

        if self._model is None:
            self._model = model_from_args(self.args)
        return self._model

    def frames(self) -> int:
        """Frames written to the bag in flight (for progress)."""
        job = self.job
        return job.written if job is not None else 0

    def label(self, item: Item, out: Path, stop: threading.Event) -> dict:
        """One bag into OUT/<name>.partial, renamed OUT/<name> when finished: its index
        fields (status done, failed or interrupted; frames; seconds; error)."""
        import gem_ros.gem as gem

        started = time.monotonic()
        result = {'status': 'failed', 'frames': 0, 'error': ''}
        result.update(host=socket.gethostname(), worker=os.getpid())
        try:
            self._load()
            source = _open_input(Path(item.input), self.args.topic, self.args)
        except gem.ModelLoadError as exc:
            result['error'] = exc.told('--pretrained /path/to/open_clip_pytorch_model.bin')
        except (BagError, ValueError, OSError) as exc:
            result['error'] = str(exc)
        else:
            partial = out / f'{item.name}{PARTIAL}'
            partial.parent.mkdir(parents=True, exist_ok=True)  # names with folders
            log.info('worker pid %d labels %s into %s', os.getpid(), item.input, partial)
            job = BagJob(
                self.args,
                self.queries,
                self.frame_settings,
                source,
                partial,
                # A retry or --resume continues what is there.
                _take_previous(partial, resume=True) if partial.exists() else None,
                load=self._load,
            )
            self.job = job
            try:
                code = job.run(stop)
            finally:
                self.job = None
            result.update(frames=job.written, error=job.error)
            if code == 0:
                partial.rename(out / item.name)  # closed, every frame in it: finished
                result['status'] = 'done'
            elif code == EXIT_INTERRUPTED:
                result.update(status='interrupted', error='interrupted: --resume continues it')
        if result['status'] == 'failed':
            log.error('%s: %s', item.input, result['error'])
        result['seconds'] = round(time.monotonic() - started, 3)
        return result


class SetProgress:
    """One display for the whole set on a terminal (tqdm: frames, rate, ETA; bags done and
    each worker's frames/s after it), refreshed by `poll()` every second; nothing otherwise."""

    def __init__(self, index: Index, args):
        self.index = index
        self.bar = None
        if args.quiet or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=_total_frames(index, args), unit='frame', desc='bags', dynamic_ncols=True
        )
        self.rates = {}  # worker -> (frames, when) at the previous poll

    def poll(self, in_flight: dict) -> None:
        """in_flight: worker -> frames written to its bag in flight."""
        if self.bar is None:
            return
        records = self.index.records.values()
        done = sum(r['frames'] for r in records if r['status'] == 'done')
        now = time.monotonic()
        per_worker = []
        for worker, frames in sorted(in_flight.items()):
            last, when = self.rates.get(worker, (frames, now))
            if now > when and frames >= last:
                per_worker.append(f'{worker}: {(frames - last) / (now - when):.1f}/s')
            self.rates[worker] = (frames, now)
        self.bar.n = done + sum(in_flight.values())
        finished = sum(r['status'] in ('done', 'failed') for r in records)
        self.bar.set_description(f'bags {finished}/{len(self.index.items)}', refresh=False)
        self.bar.set_postfix_str(' '.join(per_worker), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.poll({})  # the finished bags' frames, the last state
            self.bar.close()


def _total_frames(index: Index, args) -> Optional[int]:
    """Frames to label in the whole set, from the bags' metadata (None when unknown)."""
    total = 0
    for item in index.items:
        try:
            source = _open_input(Path(item.input), args.topic, args)
        except Exception:  # noqa: BLE001 - a bad bag: its own run records why
            continue
        source.close()
        total += (source.total + args.every - 1) // args.every
    return total or None


def run_serially(args, index: Index, stop: threading.Event, progress: SetProgress) -> int:
    labeller = Labeller(args)
    polling = _Poller(lambda: progress.poll({'serial': labeller.frames()}))
    try:
        for item in index.pending():
            if stop.is_set():
                return EXIT_INTERRUPTED
            attempts = index.records[item.name]['attempts'] + 1
            index.update(item.name, status='running', attempts=attempts)
            result = labeller.label(item, index.out, stop)
            index.update(item.name, **result)
            if result['status'] == 'interrupted':
                return EXIT_INTERRUPTED
    finally:
        polling.stop()
    return 0


class _Poller:
    """Calls `poll` every second on a thread of its own until stopped."""

    def __init__(self, poll: Callable[[], None]):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(poll,), daemon=True)
        self._thread.start()

    def _run(self, poll):
        while not self._stop.wait(1.0):
            poll()

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)
