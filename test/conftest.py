"""pytest set-up. The helpers live in ros_helpers.py (importable by tests and benchmarks);
importing it sets the DDS environment of this process and the node processes before any
rclpy.init.

A failed test's report ends with the logs of the node and launch processes it used (those
started since its set-up, and those still running from module fixtures): what explains the
failure is then in CI's output, not in a deleted temporary folder."""

import os
import shutil
import sys
import tempfile

import pytest

from gem_ros import deadline
from gem_ros.deadline import Deadline

import ros_helpers
import suite_record

LOG_TAIL = 6000
# Graphs exported by backend 'onnxruntime' go to a folder of this session, not ~/.cache, and
# that folder goes at the end (about 150 MB a run: CI runs two distros on one disk).
if 'GEM_ROS_GRAPH_CACHE' not in os.environ:
    os.environ['GEM_ROS_GRAPH_CACHE'] = tempfile.mkdtemp(prefix='gem_ros_graphs_')
    _OWN_GRAPH_CACHE = os.environ['GEM_ROS_GRAPH_CACHE']
else:
    _OWN_GRAPH_CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _OWN_GRAPH_CACHE:
        shutil.rmtree(_OWN_GRAPH_CACHE, ignore_errors=True)
    session.config.gem_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """After the summary: the shared DDS participant goes under the node's bound, and the
    interpreter's own exit gets a bound too (a context some test left behind is destroyed
    there). Either hang ends pytest with the status it already reported."""
    status = getattr(config, 'gem_exitstatus', 1)
    ros_helpers.close_shared_context(status)
    Deadline(
        EXIT_BOUND_S,
        f'[gem_ros tests] pytest did not exit within {EXIT_BOUND_S:g} s of its summary '
        f'(a DDS participant torn down at interpreter exit?); ending with status {status}',
        status,
    )


# pytest-timeout (signal method) ends a test stuck in Python at its timeout. A test blocked
# in C while holding the GIL (Fast DDS's teardown deadlock; rclpy holds the GIL) runs no
# Python at all, so neither that nor any Python thread can end it: a native deadline does,
# WATCHDOG_GRACE_S later, printing every thread's stack and the test's name, and ends the run.
WATCHDOG_GRACE_S = float(os.environ.get('GEM_ROS_TEST_WATCHDOG_GRACE_S', '60'))
EXIT_BOUND_S = 60.0


def _test_timeout(item) -> float:
    marker = item.get_closest_marker('timeout')
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini('timeout') or 300)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    seconds = _test_timeout(item) + WATCHDOG_GRACE_S
    with Deadline(
        seconds,
        f'[gem_ros tests] {item.nodeid} still running {seconds:g} s after it started: '
        'blocked where pytest-timeout cannot end it (in C, holding the GIL); the stacks of '
        'every thread are above. Ending the test run (status 1).',
        status=1,
    ):
        yield


def pytest_configure(config):
    # pytest's terminal, while the capture of the tests' output is suspended: a watchdog's
    # report must reach it, not a capture file.
    deadline.report_to(os.dup(sys.stdout.fileno()))
    suite_record.register(config)


def pytest_runtest_setup(item):
    item.gem_first_process = len(ros_helpers.PROCESSES)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    first = getattr(item, 'gem_first_process', len(ros_helpers.PROCESSES))
    for index, process in enumerate(ros_helpers.PROCESSES):
        if index < first and process.proc.poll() is not None:
            continue  # an earlier test's process, already ended
        try:
            log = process.log()
        except OSError as exc:
            log = f'(log unreadable: {exc})'
        report.sections.append(
            (f'{process.describe()} log, last {LOG_TAIL} chars', log[-LOG_TAIL:])
        )
