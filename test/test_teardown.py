"""Bounded teardown and the test watchdog, against planted blocks in C that hold the GIL,
the way Fast DDS's teardown deadlock does (eProsima/Fast-DDS#6066: pthread_mutex_lock inside
rclpy's destroy_node). Each plant runs in a subprocess, which must end by itself."""

import subprocess
import sys
import textwrap
import time

import pytest

from gem_ros.ros.teardown import TEARDOWN_BOUND_S, fastdds_version, has_teardown_deadlock

from ros_helpers import REPO, source_env

# A mutex locked twice by one thread, through PyDLL (which keeps the GIL): no signal, timer
# or Python thread ends this; only native code can.
DEADLOCK = textwrap.dedent(
    """
    import ctypes
    def deadlock():
        mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
        libc = ctypes.PyDLL(None)
        libc.pthread_mutex_lock(mutex)
        libc.pthread_mutex_lock(mutex)
    """
)
SLACK_S = 20.0  # start-up of a Python with torch on a busy 2-core machine, and the exit


def run(code: str, timeout: float, cwd=REPO, env=None, args=()) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, *args] if args else [sys.executable, '-c', code],
            cwd=cwd,
            env=env or source_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream, in the order things were written
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f'the planted block was not ended within {timeout} s') from exc
    return out.returncode, out.stdout, time.monotonic() - started


@pytest.mark.parametrize('status', [0, 3])
def test_a_teardown_that_hangs_in_c_ends_with_the_normal_status_and_its_stacks(status):
    code = DEADLOCK + textwrap.dedent(
        f"""
        from gem_ros.ros.teardown import finish_middleware
        print('stopped cleanly', flush=True)
        finish_middleware(
            [('quick step', lambda: None), ('destroy_node', deadlock)], 'planted', {status},
            bound_s=2.0,
        )
        print('never printed')
        """
    )
    code_, output, seconds = run(code, 2.0 + SLACK_S)
    assert code_ == status, output
    assert 'never printed' not in output
    assert '[planted] the middleware teardown hung in destroy_node for 2 s (Fast DDS' in output
    assert 'eProsima/Fast-DDS#6066' in output and f'exit status {status}' in output, output
    # faulthandler's stacks name the Python frames that hung, before the line.
    assert 'most recent call first' in output and 'in deadlock' in output, output
    assert output.index('in deadlock') < output.index('[planted]'), output


def test_a_teardown_that_returns_in_time_changes_nothing():
    code = textwrap.dedent(
        """
        import time
        from gem_ros.ros.teardown import finish_middleware
        finish_middleware([('slow step', lambda: time.sleep(0.5))], 'quick', 7, bound_s=1.0)
        time.sleep(2.0)  # past the bound: the cancelled deadline does not fire
        print('exited normally')
        """
    )
    code_, output, _ = run(code, SLACK_S)
    assert code_ == 0 and 'exited normally' in output and 'hung' not in output, output


def test_a_test_blocked_in_c_ends_the_run_with_its_name_and_stacks(tmp_path):
    """pytest-timeout (signal method) cannot end it; the conftest's native watchdog does,
    at the test's timeout plus the grace (2 s here), and names the test."""
    planted = tmp_path / 'test_planted.py'
    planted.write_text(
        'import pytest\n' + DEADLOCK + '\n@pytest.mark.timeout(1)\ndef test_blocked():\n'
        '    deadlock()\n'
    )
    env = dict(source_env(), GEM_ROS_TEST_WATCHDOG_GRACE_S='2')
    env['PYTHONPATH'] = f'{REPO / "test"}:{env["PYTHONPATH"]}'
    args = ('-m', 'pytest', '-p', 'conftest', '-p', 'no:cacheprovider', '-q', str(planted))
    code_, output, seconds = run('', 3.0 + SLACK_S + 30, cwd=tmp_path, env=env, args=args)
    assert code_ == 1, output
    assert 'test_planted.py::test_blocked still running 3 s after it started' in output, output
    assert 'in deadlock' in output and 'most recent call first' in output, output


def test_the_fast_dds_versions_with_the_deadlock():
    assert has_teardown_deadlock('2.14.5') is True
    assert has_teardown_deadlock('2.13.6') is True
    assert has_teardown_deadlock('2.14.6') is False
    assert has_teardown_deadlock('3.2.3') is None  # release notes decide; this code cannot
    assert has_teardown_deadlock(None) is None and has_teardown_deadlock('x.y') is None
    import rclpy  # noqa: F401 - loads Fast DDS into this process

    version = fastdds_version()
    assert version and version[0] in '23', version
    print('Fast DDS here:', version, 'deadlock:', has_teardown_deadlock(version))
    assert TEARDOWN_BOUND_S <= 10
