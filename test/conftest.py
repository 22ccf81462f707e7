"""pytest set-up. The helpers live in ros_helpers.py (importable by tests and benchmarks);
importing it sets the DDS environment of this process and the node processes before any
rclpy.init.

A failed test's report ends with the logs of the node and launch processes it used (those
started since its set-up, and those still running from module fixtures): what explains the
failure is then in CI's output, not in a deleted temporary folder."""

import os
import shutil
import tempfile

import pytest

import ros_helpers

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
