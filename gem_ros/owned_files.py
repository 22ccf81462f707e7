"""Files gem_ros keeps at a path a user gives (memory_file, `gem-ros locate -o`,
`gem-ros export -o`, the graph cache): it never renames, moves or overwrites anything there
that it did not write itself.

A kept file starts with a signature of its own (its first JSON key), so that what is at the
path can be told apart before anything is done to it:

    check_path(path, 'memory_file')          # at start: a folder, a fifo... refused
    ours(path, SIGNATURES)                   # True: one of ours (whole or cut short)
    write_atomically(path, text, SIGNATURES) # refuses to replace what is not ours
    replace_atomically(path, write)          # any bytes, whole or not at all (checked before)
    move_aside(path)                         # ours but unusable: to a free <name>.rejected

No ROS: the node and the tools use it alike.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

SIGNATURE_BYTES = 64  # how much of a file is read to tell whether it is ours


class PathRefused(ValueError):
    """A path gem_ros will not write to or move, said with the reason."""


def check_path(path: Path, what: str) -> None:
    """At start: `path` is absent or a regular file, in a folder that exists; else
    PathRefused naming `what` (the parameter or flag) and the fix."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise PathRefused(f'{what} {path} cannot be read: {exc}') from exc
    if mode is not None and stat.S_ISDIR(mode):
        raise PathRefused(
            f'{what} {path} is a folder: name a file in it (for example {path / "gem.json"}); '
            'nothing there was changed'
        )
    if mode is not None and not stat.S_ISREG(mode):
        raise PathRefused(f'{what} {path} is not a regular file: name a file; nothing was changed')
    if not path.parent.is_dir():
        raise PathRefused(f'{what} {path}: its folder {path.parent} does not exist')


def ours(path: Path, signatures: Sequence[bytes]) -> bool:
    """Whether the regular file at `path` starts with one of `signatures` (so gem_ros wrote
    it, though maybe cut short). False for anything else, and for what cannot be read."""
    try:
        with open(path, 'rb') as f:
            head = f.read(SIGNATURE_BYTES)
    except OSError:
        return False
    return any(head.startswith(s) for s in signatures)


def write_atomically(path: Path, text: str, signatures: Sequence[bytes]) -> None:
    """`text` (which must start with a signature) to `path` through a temporary file in the
    same folder, renamed over it: a reader sees the old file or the new one, never half.
    PathRefused, with nothing changed, when something not ours is at `path` now."""
    path = Path(path)
    if not any(text.encode()[:SIGNATURE_BYTES].startswith(s) for s in signatures):
        raise ValueError('write_atomically: the text does not start with its signature')
    if os.path.lexists(path) and not (path.is_file() and ours(path, signatures)):
        raise PathRefused(f'{path} holds something gem_ros did not write: left as it is')
    replace_atomically(path, lambda out: out.write(text.encode()))


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file beside `path`, then renamed over it, so that
    `path` holds the old content or the whole new one. The caller has checked that what is
    at `path` may be replaced."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.partial', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_aside(path: Path) -> Path:
    """Move our unusable file to the first free `<name>.rejected[.N]` beside it (never over
    an existing file); returns where it went."""
    path = Path(path)
    for n in range(1000):
        target = path.with_name(path.name + '.rejected' + (f'.{n}' if n else ''))
        try:
            os.link(path, target)  # fails if target exists: nothing is overwritten
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if os.path.lexists(target):
                continue
            os.rename(path, target)
            return target
        os.unlink(path)
        return target
    raise PathRefused(f'{path}: 1000 rejected copies beside it already; left as it is')


def read_or_set_aside(path: Path, what: str, noun: str, read: Callable, foreign, unusable, logger):
    """A kept file read at start (memory_file, map_file): (read()'s result, '') when it was;
    (None, why it is not kept) for a file that is not ours (`foreign`: left as it is); (None,
    '') for one of ours that cannot be used (`unusable`: moved aside, never over another file,
    and the node starts empty). `what` names the parameter, `noun` what it keeps."""
    try:
        return read(), ''
    except foreign as exc:
        problem = f'{exc}; the {noun} is not kept (name another {what})'
        logger.error(f'{what} not used: {problem}')
        return None, problem
    except unusable as exc:
        try:
            rejected = move_aside(path)
        except (OSError, PathRefused) as err:
            problem = f'{exc}; could not be moved aside ({err}): not kept'
            logger.error(f'{what} not used: {problem}')
            return None, problem
        logger.error(f'{what} not used: {exc}; moved to {rejected}, starting empty')
        return None, ''


def save_kept(path: Path, what: str, noun: str, save: Callable, logger, log) -> tuple[bool, str]:
    """A kept file written (memory_file, map_file): (whether it was, why it is no longer kept
    or ''). Something else put at the path while the node ran is left as it is and the file
    is no longer kept; an OSError (a full disk) is logged through the throttled `log` and
    tried again next time."""
    try:
        save()
    except PathRefused as exc:
        problem = f'{exc}; the {noun} is no longer kept'
        logger.error(f'{what} {path}: {problem}')
        return False, problem
    except OSError as exc:
        log('error', f'{noun} save', f'{what} {path}: {exc}', 5.0)
        return False, ''
    return True, ''
