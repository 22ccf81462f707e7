"""`gem-ros bag` over a set of bags, as users run it (subprocesses): OUT/<name> per input and
OUT/index.jsonl, a bad bag recorded while the others finish, --resume over the set, and on
Ray (a local instance the command starts and stops, 2 workers): the same results and maps
(`--map`) as the serial run, a worker killed mid-bag whose bag a retry finishes, and ctrl-c
then --resume.

The Ray tests need `ray` (pip install "gem_ros[ray]"; scripts/setup.sh installs it) and are
skipped without it; 15-40 s each on 2 cores, about 2.5 minutes together."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_bag import TINY_FLAGS, jsonl, read_output, write_bag

import map_scene
from ros_helpers import source_env

pytestmark = pytest.mark.timeout(300)
# The Ray tests run alone, after the parallel part: each starts a local Ray instance with two
# workers, all of the machine's cores.
alone = pytest.mark.serial
RUN_TIMEOUT_S = 240


def command(*args) -> list:
    return [sys.executable, '-m', 'gem_ros.cli', 'bag', *map(str, args), *TINY_FLAGS]


def environment() -> dict:
    # Ray folds log lines that differ only in numbers; a failure's log should show them all.
    return dict(source_env(), RAY_DEDUP_LOGS='0')


def explain(out: Path, log: str) -> str:
    """What a failure needs: the command's log and the set's index."""
    index = out / 'index.jsonl'
    return f'{log}\n--- {index}:\n' + (index.read_text() if index.is_file() else '(none)')


def gem_bag(*args, out: Path, check=None):
    run = subprocess.run(
        command(*args, '-o', out),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    if check is not None:
        assert run.returncode == check, explain(out, run.stdout + run.stderr)
    return run


def index(out: Path) -> dict:
    return {r['output']: r for r in map(json.loads, (out / 'index.jsonl').read_text().splitlines())}


def every_frame_once(output: Path, count: int) -> None:
    times = [(2000 + i) * 10**9 for i in range(count)]
    assert [t for t, _ in read_output(output)['/gem/results']] == times
    assert [line['frame'] for line in jsonl(output)] == list(range(count))


def damaged(path: Path) -> Path:
    """A bag whose database is no database: refused as it opens."""
    write_bag(path, 2, storage='sqlite3')
    next(path.glob('*.db3')).write_bytes(b'this is no sqlite database' * 100)
    return path


def test_several_bags_a_folder_and_a_list_each_an_output_and_a_line(tmp_path):
    fleet = tmp_path / 'fleet'
    write_bag(fleet / 'robot1' / 'day1', 3)
    write_bag(fleet / 'robot2' / 'day1', 2)
    damaged(fleet / 'robot2' / 'day2')
    single = write_bag(tmp_path / 'single', 2)
    listed = tmp_path / 'bags.txt'
    listed.write_text(f'# one bag a line\n\n{write_bag(tmp_path / "listed", 1)}\n')
    out = tmp_path / 'out'
    run = gem_bag(fleet, single, listed, '-q', 'red', out=out, check=1)
    assert '"bags": 5, "done": 4, "failed": 1' in run.stdout, explain(out, run.stderr)
    lines = index(out)
    assert list(lines) == ['robot1/day1', 'robot2/day1', 'robot2/day2', 'single', 'listed']
    for name, count in (('robot1/day1', 3), ('robot2/day1', 2), ('single', 2), ('listed', 1)):
        assert lines[name]['status'] == 'done' and lines[name]['frames'] == count, lines[name]
        every_frame_once(out / name, count)
    bad = lines['robot2/day2']
    assert bad['status'] == 'failed' and 'cannot read the bag' in bad['error'], bad
    assert not (out / 'robot2' / 'day2').exists()  # only a finished output has the name
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames'] == 8 and summary['failed'] == 1
    # The set's folder is not written over, and a clash of names is refused before any work.
    assert 'exists: --resume continues it' in gem_bag(single, '-q', 'red', out=out, check=2).stderr
    clash = gem_bag(single, tmp_path / 'x' / 'single', '-q', 'red', out=tmp_path / 'o2', check=2)
    assert 'two inputs would write one output' in clash.stderr


def test_an_output_folder_inside_the_input_folder_is_never_an_input(tmp_path):
    """`gem-ros bag recordings/ -o recordings/labelled`, then the same with --resume, then
    the folder's contents by a shell glob: its own outputs (bags too) are never inputs."""
    recordings = tmp_path / 'recordings'
    write_bag(recordings / 'monday', 2)
    write_bag(recordings / 'tuesday', 2)
    out = recordings / 'labelled'
    first = gem_bag(recordings, '-q', 'red', out=out, check=0)
    assert sorted(index(out)) == ['monday', 'tuesday'], explain(out, first.stderr)
    again = gem_bag(recordings, '-q', 'red', '--resume', out=out, check=0)
    assert sorted(index(out)) == ['monday', 'tuesday'], explain(out, again.stderr)
    assert '2 of 2 bags already finished' in again.stderr, again.stderr
    globbed = gem_bag(*sorted(recordings.iterdir()), '-q', 'red', '--resume', out=out, check=0)
    assert sorted(index(out)) == ['monday', 'tuesday'], explain(out, globbed.stderr)
    assert 'inside the output folder' in globbed.stderr, globbed.stderr
    for name in ('monday', 'tuesday'):
        every_frame_once(out / name, 2)


def test_a_file_or_a_foreign_folder_at_out_is_refused_and_left_as_it_is(tmp_path):
    """-o naming a user's file, or a folder of theirs (with or without --resume): refused
    with the reason before anything is written; both found unchanged."""
    bags = tmp_path / 'bags'
    write_bag(bags / 'one', 1)
    write_bag(bags / 'two', 1)
    notes = tmp_path / 'notes.txt'
    notes.write_text('mine')
    run = gem_bag(bags, '-q', 'red', out=notes, check=2)
    assert 'is not a folder' in run.stderr, run.stderr
    theirs = tmp_path / 'theirs'
    theirs.mkdir()
    (theirs / 'index.jsonl').write_text('my own index, not JSON lines\n')
    for extra in ((), ('--resume',)):
        run = gem_bag(bags, '-q', 'red', *extra, out=theirs, check=2)
        assert 'exists: --resume' in run.stderr or 'holds no index.jsonl' in run.stderr, run.stderr
    assert notes.read_text() == 'mine'
    assert [p.name for p in theirs.iterdir()] == ['index.jsonl']
    assert (theirs / 'index.jsonl').read_text() == 'my own index, not JSON lines\n'


def test_sigterm_mid_set_then_resume_skips_the_finished_and_continues_the_partial(tmp_path):
    first, second = (
        write_bag(tmp_path / 'a' / 'first', 2),
        write_bag(tmp_path / 'a' / 'second', 150),
    )
    third = write_bag(tmp_path / 'a' / 'third', 2)
    out = tmp_path / 'out'
    args = (first, second, third, '-q', 'red', '--input-size', '192')
    run = subprocess.Popen(
        command(*args, '-o', out), env=environment(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    partial = out / 'second.partial' / 'results.jsonl'
    deadline = time.monotonic() + 120
    while not partial.is_file() or len(partial.read_text().splitlines()) < 5:
        assert run.poll() is None, run.stdout.read()
        assert time.monotonic() < deadline, 'no 5 frames of the second bag within 120 s'
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 130, explain(out, run.stdout.read())
    lines = index(out)
    assert [lines[n]['status'] for n in ('first', 'second', 'third')] == [
        'done',
        'interrupted',
        'pending',
    ], lines
    kept = len(jsonl(out / 'second.partial'))
    assert len(read_output(out / 'second.partial')['/gem/results']) == kept  # closed, readable
    finished = (out / 'first' / 'results.jsonl').stat().st_mtime_ns
    again = gem_bag(*args, '--resume', out=out, check=0)
    assert '1 of 3 bags already finished' in again.stderr, again.stderr
    assert f'resuming: {kept} frames kept' in again.stderr, again.stderr
    assert (out / 'first' / 'results.jsonl').stat().st_mtime_ns == finished
    for name, count in (('first', 2), ('second', 150), ('third', 2)):
        every_frame_once(out / name, count)
    assert not list(out.glob('*.partial*')), list(out.iterdir())


def test_ray_is_refused_with_the_install_line_where_it_is_missing(tmp_path):
    single = write_bag(tmp_path / 'single', 1)
    no_ray = ['-c', 'import sys; sys.modules["ray"] = None; from gem_ros.cli import main; '
              'sys.exit(main(sys.argv[1:]))']  # fmt: skip
    run = subprocess.run(
        [sys.executable, *no_ray, 'bag', str(single), '-q', 'red', '-o', str(tmp_path / 'o'),
         '--ray', *TINY_FLAGS],
        env=environment(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert '--ray needs Ray: pip install "gem_ros[ray]"' in run.stderr, run.stderr


# --- on Ray ---------------------------------------------------------------------------------


@pytest.fixture
def ray_available():
    pytest.importorskip('ray', reason='the --ray tests need Ray: pip install "gem_ros[ray]"')


def messages(output: Path) -> dict:
    """topic -> [(recording time, message)], GemResult's inference time zeroed. Compared as
    messages: serialised, their CDR padding bytes are whatever the memory held."""
    found = read_output(output)
    for _, msg in found['/gem/results']:
        msg.inference_seconds = 0.0
    return found


def without_timing(output: Path) -> list:
    return [{k: v for k, v in line.items() if k != 'inference_seconds'} for line in jsonl(output)]


def map_arrays(path: Path) -> dict:
    """A map file's arrays (its first two lines say what made it; then numpy's npz)."""
    data = path.read_bytes()
    header_end = data.index(b'\n', data.index(b'\n') + 1) + 1
    with np.load(io.BytesIO(data[header_end:])) as arrays:
        return {name: arrays[name] for name in arrays.files}


@alone
def test_ray_gives_the_serial_results_and_maps_and_records_a_bad_bag(tmp_path, ray_available):
    """Each bag (colour, depth, camera_info, /tf_static) labelled and mapped (`--map`, issue
    40: one map per bag, OUT/<name>/map.gemmap) on Ray as in the serial run."""
    bags = []
    for seed in (1, 2, 3):
        squares = {'red': (20 + 40 * seed, 50, 1.5), 'blue': (200, 40 + 20 * seed, 2.0)}
        bags.append(map_scene.write_bag(tmp_path / 'scenes' / f'scene{seed}', squares, 4))
    bags.append(damaged(tmp_path / 'scenes' / 'damaged'))
    serial, on_ray = tmp_path / 'serial', tmp_path / 'ray'
    flags = ('-q', 'red; blue', '--overlay', '--map', '--map-frame', 'map', '--input-size', '224')
    gem_bag(*bags, *flags, out=serial, check=1)
    run = gem_bag(*bags, *flags, '--ray', '--workers', '2', out=on_ray)
    assert run.returncode == 1, explain(on_ray, run.stdout + run.stderr)
    summary = json.loads(run.stdout.splitlines()[-1])
    assert summary['workers'] == 2 and summary['ray_startup_seconds'] > 0, summary
    lines = index(on_ray)
    assert lines['damaged']['status'] == 'failed', lines
    assert len({lines[f'scene{s}']['worker'] for s in (1, 2, 3)}) == 2, lines  # both worked
    maps = []
    for bag in bags[:3]:
        assert without_timing(serial / bag.name) == without_timing(on_ray / bag.name)
        assert messages(serial / bag.name) == messages(on_ray / bag.name)
        assert len(jsonl(on_ray / bag.name)) == 4
        built, on_ray_map = (map_arrays(out / bag.name / 'map.gemmap') for out in (serial, on_ray))
        assert built.keys() == on_ray_map.keys() and len(built['keys']) > 0
        for name, array in built.items():
            np.testing.assert_array_equal(array, on_ray_map[name], err_msg=f'{bag.name} {name}')
        maps.append(built['keys'])
    # One map per bag: the squares moved between the bags, so their maps differ.
    assert not np.array_equal(np.sort(maps[0]), np.sort(maps[1]))


def _wait_for(run, out: Path, log: Path, ready, what: str, limit_s: float = 150.0):
    deadline = time.monotonic() + limit_s
    while True:
        lines = index(out) if (out / 'index.jsonl').is_file() else {}
        found = ready(lines)
        if found:
            return found
        assert run.poll() is None, explain(out, log.read_text())
        assert time.monotonic() < deadline, explain(out, f'no {what} within {limit_s} s')
        time.sleep(0.1)


def _frames_in(out: Path, name: str) -> int:
    path = out / f'{name}.partial' / 'results.jsonl'
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _start(args, out: Path, log: Path):
    with open(log, 'w') as f:
        return subprocess.Popen(
            command(*args, '-o', out), env=environment(), stdout=f, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip


@alone
def test_a_worker_killed_mid_bag_its_bag_is_finished_by_a_retry(tmp_path, ray_available):
    """Killed 30 frames in: the retry keeps the frames of the output's complete MCAP chunks
    (1 MiB each: some tens of frames here, with the overlays), computes the rest, each once."""
    a, b = write_bag(tmp_path / 'in' / 'a', 60), write_bag(tmp_path / 'in' / 'b', 60)
    out, log = tmp_path / 'out', tmp_path / 'log.txt'
    args = (a, b, '-q', 'red', '--input-size', '192', '--overlay', '--ray', '--workers', '2')
    run = _start(args, out, log)
    try:
        running = _wait_for(
            run, out, log,
            lambda lines: next((r for r in lines.values() if r['status'] == 'running'
                                and r['worker'] and _frames_in(out, r['output']) >= 30), None),
            'bag 30 frames in, on a worker of known pid',
        )  # fmt: skip
        os.kill(running['worker'], signal.SIGKILL)
        code = run.wait(RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            run.kill()
    text = explain(out, log.read_text())
    assert code == 0, text
    lines = index(out)
    assert lines[running['output']]['attempts'] == 2, text
    assert lines[running['output']]['worker'] != running['worker'], text
    assert 'died' in log.read_text() and 'trying it again (2 of 2)' not in log.read_text(), text
    kept = re.search(r'keeping the (\d+) frames of its complete chunks', text)
    assert kept and 0 < int(kept[1]) < 60, text
    assert f'resuming: {kept[1]} frames kept' in text, text
    for name in ('a', 'b'):
        assert lines[name]['status'] == 'done', text
        every_frame_once(out / name, 60)
        overlays = read_output(out / name)['/gem/overlay']
        assert [t for t, _ in overlays] == [(2000 + i) * 10**9 for i in range(60)], text


@alone
def test_a_bag_whose_workers_keep_dying_is_recorded_failed_after_its_retries(
    tmp_path, ray_available
):
    a, b = write_bag(tmp_path / 'in' / 'a', 60), write_bag(tmp_path / 'in' / 'b', 4)
    out, log = tmp_path / 'out', tmp_path / 'log.txt'
    args = (a, b, '-q', 'red', '--input-size', '192', '--ray', '--workers', '1', '--retries', '0')
    run = _start(args, out, log)
    try:
        running = _wait_for(
            run, out, log,
            lambda lines: lines['a'] if lines and lines['a']['worker']
            and _frames_in(out, 'a') >= 5 else None,
            'bag a 5 frames in, on a worker of known pid',
        )  # fmt: skip
        os.kill(running['worker'], signal.SIGKILL)
        code = run.wait(RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            run.kill()
    text = explain(out, log.read_text())
    assert code == 1, text
    lines = index(out)
    assert lines['a']['status'] == 'failed' and 'worker died' in lines['a']['error'], text
    assert lines['b']['status'] == 'done', text  # on the worker that replaced the dead one
    every_frame_once(out / 'b', 4)


@alone
def test_ctrl_c_stops_the_ray_job_closes_the_outputs_then_resume(tmp_path, ray_available):
    """SIGINT to the driver while both workers label: exit 130, each bag's output closed
    (readable, as many results as lines; or finished, where its last frame was in flight),
    then --resume finishes them, each frame once."""
    count = 300
    a, b = write_bag(tmp_path / 'in' / 'a', count), write_bag(tmp_path / 'in' / 'b', count)
    out, log = tmp_path / 'out', tmp_path / 'log.txt'
    args = (a, b, '-q', 'red', '--input-size', '192', '--ray', '--workers', '2')
    run = _start(args, out, log)
    try:
        _wait_for(
            run, out, log, lambda lines: all(_frames_in(out, n) >= 5 for n in ('a', 'b')),
            'both bags 5 frames in',
        )  # fmt: skip
        run.send_signal(signal.SIGINT)
        code = run.wait(90)
    finally:
        if run.poll() is None:
            run.kill()
    text = explain(out, log.read_text())
    assert code == 130, text
    lines = index(out)
    kept = {}
    for name in ('a', 'b'):
        if lines[name]['status'] == 'done':
            continue
        assert lines[name]['status'] == 'interrupted', text
        kept[name] = len(jsonl(out / f'{name}.partial'))
        assert len(read_output(out / f'{name}.partial')['/gem/results']) == kept[name], text
    assert kept and all(n < count for n in kept.values()), text
    again = gem_bag(*args, '--resume', out=out, check=0)
    for frames in kept.values():
        assert f'resuming: {frames} frames kept' in again.stderr, again.stderr
    for name in ('a', 'b'):
        every_frame_once(out / name, count)


@alone
def test_ray_refuses_workers_that_cannot_fit_and_an_address_unreachable(tmp_path, ray_available):
    single = write_bag(tmp_path / 'single', 1)
    run = gem_bag(single, '-q', 'red', '--ray', '--num-gpus', '64', out=tmp_path / 'out', check=2)
    assert 'no worker fits' in run.stderr and '--num-gpus' in run.stderr, run.stderr
    # An address where no Ray listens: said within seconds (Ray itself retries for minutes).
    run = gem_bag(single, '-q', 'red', '--ray', '127.0.0.1:9', out=tmp_path / 'o2', check=2)
    assert 'cannot reach Ray at 127.0.0.1:9' in run.stderr, run.stderr
