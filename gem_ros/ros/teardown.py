"""The middleware's teardown, bounded: every process that made a DDS participant exits.

Fast DDS 2.14.5 (Jazzy's PyPI wheels; apt installs may carry the same) can deadlock while it
destroys a participant whose TCP channel (LARGE_DATA's transport) has an incomplete read:
`destroy_node` -> ... -> `TCPChannelResourceBasic::disconnect` waits for a mutex that the
read holds (eProsima/Fast-DDS#6066, fixed upstream in 2025-10 by shutting the socket down
first; backports to the 2.14.x, 3.2.x and 3.3.x branches were asked for). rclpy holds the
GIL in that call, so only native code can end the process: gem_ros.deadline. The stop itself (our
threads, the frame in flight, outputs closed) is done before the teardown starts, so a
process that has to leave without it leaves with its normal status.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from gem_ros.deadline import Deadline

TEARDOWN_BOUND_S = 3.0  # teardowns take 10-30 ms; a hang never ends; launch escalates at 5 s
UPSTREAM_FIX = 'eProsima/Fast-DDS#6066'
_LIBRARY = re.compile(r'lib(fastrtps|fastdds)\.so\.(\d+\.\d+\.\d+)')


def fastdds_version() -> str | None:
    """The Fast DDS version of this process ('2.14.5'): from the mapped library's file name
    (pip wheels and apt alike), else the ros-fastrtps/fastdds wheel's metadata, else the
    library in the ROS prefixes (AMENT_PREFIX_PATH); None when none of them tells."""
    try:
        found = _LIBRARY.search(Path('/proc/self/maps').read_text())
        if found:
            return found.group(2)
    except OSError:
        pass
    import importlib.metadata as metadata

    for name in ('ros-fastrtps', 'ros-fastdds'):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    # A ROS installation (apt, a workspace): the library in one of its prefixes.
    import os

    for prefix in filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)):
        for library in sorted(Path(prefix, 'lib').glob('lib*.so.*.*.*')):
            found = _LIBRARY.search(library.name)
            if found:
                return found.group(2)
    return None


def has_teardown_deadlock(version: str | None) -> bool | None:
    """Whether this Fast DDS release has the deadlock of eProsima/Fast-DDS#6066: True for
    2.x up to 2.14.5 (the fix went to the 2.14.x branch after 2.14.5; older branches got
    none), None where this code cannot tell (3.x: the fix was backported to 3.2.x and
    3.3.x in October 2025; whether a given release has it is in its release notes), and
    None for an unknown version."""
    try:
        parts = tuple(int(p) for p in (version or '').split('.')[:3])
    except ValueError:
        return None
    if len(parts) < 3:
        return None
    if parts[0] < 3:
        return parts <= (2, 14, 5) or parts[:2] != (2, 14)
    return None


def finish_middleware(
    steps, who: str, status: int = 0, bound_s: float = TEARDOWN_BOUND_S, then: str = ''
):
    """Run the teardown `steps` ((name, callable) pairs, e.g. destroy_node then the context's
    shutdown) under one bound of `bound_s` seconds in all. A step's exception is ignored (it
    was already torn down). If a step does not return in time the process prints one line
    naming the step and the Fast DDS version, with every thread's stack before it, and ends
    with `status` (`then` says what that means; by default, that the stop was clean).
    Returns the seconds the steps took."""
    started = time.monotonic()
    version = fastdds_version() or 'unknown version'
    then = then or f'leaving without it, exit status {status}: the stop itself was clean'
    for name, step in steps:
        left = max(bound_s - (time.monotonic() - started), 0.05)
        message = (
            f'[{who}] the middleware teardown hung in {name} for {bound_s:g} s (Fast DDS '
            f'{version}; a known teardown deadlock: {UPSTREAM_FIX}); {then}'
        )
        with Deadline(left, message, status):
            try:
                step()
            except Exception:  # noqa: BLE001 - already torn down (e.g. by the signal's shutdown)
                pass
    return time.monotonic() - started
