"""`gem-ros bag`: its parser, and the run of one bag (gem_ros/ros/bag.py) or of a set of
bags, serially (gem_ros/ros/bag_set.py) or on Ray (gem_ros/ros/bag_ray.py).

    gem-ros bag a/ b/ c/ -o out/            out/a, out/b, out/c and out/index.jsonl
    gem-ros bag fleet/ -o out/              every bag under fleet/, named by its path there
    gem-ros bag bags.txt -o out/ --ray      one bag a line, on a local Ray instance

In a set each bag is labelled by the single-bag labeller (BagJob) into OUT/<name>.partial,
renamed OUT/<name> once its output is closed with every frame in it: a bag's output under its
own name is always a finished one. `OUT/index.jsonl` has one line per input (status, frames,
seconds, error), rewritten whole whenever a bag starts or ends. `--resume` skips the finished
bags and continues the partial ones as the single-bag resume does; a bag that failed is tried
again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from gem_ros.ros import bag
from gem_ros.ros.bag import EXIT_INTERRUPTED, BagError, StopOnSignals
from gem_ros.ros.bag_set import (
    LOCAL,
    SUMMARY,
    Index,
    SetProgress,
    expand,
    is_bag,
    is_list,
    run_serially,
)

log = logging.getLogger('gem-ros')

EXIT_SOME_FAILED = 1
RAY_INSTALL = 'pip install "gem_ros[ray]"'


def add_arguments(sub) -> None:
    """`gem-ros bag`: one bag (gem_ros/ros/bag.py) or a set of them (here)."""
    p = sub.add_parser(
        'bag',
        help='GEM over every frame of recorded bags: per bag an output bag with the node\'s '
        'messages and a JSON-lines file; many bags serially or on Ray',
    )
    bag.add_bag_arguments(p)
    add_set_arguments(p)
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    if is_set(args):  # several bags, a folder or list of them, or --ray: OUT/<name>
        bag.check_arguments(args, several=True)
        return run(args)
    return bag.run(args)


def add_set_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('several bags (OUT/<name> per bag, OUT/index.jsonl)')
    g.add_argument(
        '--ray',
        nargs='?',
        const=LOCAL,
        metavar='ADDRESS',
        help='label the bags on Ray: `auto` joins the running cluster (RAY_ADDRESS), '
        'ray://host:10001 a remote one; no address: a local Ray instance on this machine',
    )
    g.add_argument(
        '--workers',
        type=int,
        help='Ray actors, one model each (default: as many as the cluster fits, at most one '
        'per bag)',
    )
    g.add_argument(
        '--num-gpus',
        type=float,
        default=0.0,
        help='GPUs per actor, a fraction shares one (default: 0, CPU only)',
    )
    g.add_argument('--cpus-per-worker', type=float, default=1.0, help='CPUs per actor (default: 1)')
    g.add_argument(
        '--retries',
        type=int,
        default=2,
        help='times a bag whose worker died (killed, out of memory) is tried again from where '
        'its output ends, before it is recorded as failed (default: %(default)s)',
    )


def is_set(args) -> bool:
    """Several inputs, a folder of bags, a list file or --ray: OUT is a folder of outputs."""
    if len(args.input) > 1 or args.ray is not None:
        return True
    path = Path(args.input[0])
    return is_list(path) or (path.is_dir() and not is_bag(path))


def run(args) -> int:
    """The set, serially or on Ray: 0 when every bag finished, EXIT_SOME_FAILED when some
    failed, 130 when stopped; OUT/summary.json and a summary line on stdout at the end."""
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise BagError(f'--ray needs Ray: {RAY_INSTALL}') from None
    if args.workers is not None and args.workers < 1:
        raise BagError(f'--workers must be 1 or more, got {args.workers}')
    if args.retries < 0:
        raise BagError(f'--retries must be 0 or more, got {args.retries}')
    if args.num_gpus < 0 or args.cpus_per_worker <= 0:
        raise BagError('--num-gpus must be 0 or more, --cpus-per-worker more than 0')
    out = Path(args.out)
    index = Index(out, expand(args.input, out), args.resume)
    skipped = len(index.items) - len(index.pending())
    if skipped:
        log.info('%d of %d bags already finished in %s: skipped', skipped, len(index.items), out)
    started = time.monotonic()
    if args.ray is not None:
        from gem_ros.ros import bag_ray

        try:
            startup = bag_ray.connect(args.ray)
        except KeyboardInterrupt:
            log.warning('stopped while starting Ray: nothing labelled')
            return EXIT_INTERRUPTED
    progress = SetProgress(index, args)
    extra = {}
    with StopOnSignals() as stop:
        try:
            if args.ray is not None:
                code, extra = bag_ray.run_on_ray(args, index, stop, progress, startup)
            else:
                code = run_serially(args, index, stop, progress)
        finally:
            progress.close()
            if args.ray is not None:
                bag_ray.disconnect()
    summary = index.summary(time.monotonic() - started, **extra)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + '\n')
    print(json.dumps(summary), flush=True)
    if code == 0 and summary['failed']:
        code = EXIT_SOME_FAILED
    log.info(
        '%s: %d of %d bags done, %d failed%s',
        out,
        summary['done'],
        summary['bags'],
        summary['failed'],
        '; interrupted: --resume continues it' if code == EXIT_INTERRUPTED else '',
    )
    return code
