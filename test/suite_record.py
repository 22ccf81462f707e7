"""A record of one pytest run for scripts/check_test_run.py: every collected test's outcome,
its time and its worker, and every skip with its reason (module-level skips included).

Written when GEM_ROS_TEST_RECORD names a file, by the process that sees the whole run (the
controller under pytest-xdist, which gets every worker's reports; pytest itself without it),
one JSON object a line. scripts/test.sh runs pytest twice (the parallel part, then the serial
group), each into a file of its own, and the checker reads them together.
"""

import json
import os
import time

import pytest

RECORD = os.environ.get('GEM_ROS_TEST_RECORD')


def _is_worker(config) -> bool:
    return hasattr(config, 'workerinput')


class SuiteRecord:
    def __init__(self, path: str):
        self.path = path
        self.collected: set[str] = set()
        self.tests: dict[str, dict] = {}
        self.collect_skips: list[dict] = []
        self.started = time.monotonic()

    # Without xdist: the items this process collected.
    def pytest_collection_finish(self, session):
        self.collected.update(item.nodeid for item in session.items)

    # With xdist: each worker's collection (all the same, or xdist stops the run).
    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.collected.update(ids)

    def pytest_collectreport(self, report):
        if report.skipped:
            self.collect_skips.append({'id': report.nodeid, 'reason': _reason(report)})

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(
            report.nodeid, {'outcome': 'passed', 'reason': '', 'seconds': 0.0, 'worker': ''}
        )
        entry['seconds'] += report.duration
        entry['worker'] = getattr(report, 'node', None) and report.node.gateway.id or ''
        if report.failed:
            entry['outcome'] = 'failed'
        elif report.skipped and entry['outcome'] != 'failed':
            # An xfail is reported as skipped with `wasxfail`: it ran.
            if not hasattr(report, 'wasxfail'):
                entry['outcome'] = 'skipped'
                entry['reason'] = _reason(report)

    def pytest_sessionfinish(self, session, exitstatus):
        lines = [
            {
                'kind': 'session',
                'collected': sorted(self.collected),
                'exitstatus': int(exitstatus),
                'seconds': time.monotonic() - self.started,
                'workers': os.environ.get('PYTEST_XDIST_WORKER_COUNT')
                or getattr(session.config.option, 'numprocesses', None),
            },
            *({'kind': 'test', 'id': k, **v} for k, v in sorted(self.tests.items())),
            *({'kind': 'collect-skip', **s} for s in self.collect_skips),
        ]
        with open(self.path, 'w') as out:
            for line in lines:
                out.write(json.dumps(line, default=str) + '\n')


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix('Skipped: ')
    return str(longrepr or '')


def register(config) -> None:
    """From conftest's pytest_configure."""
    if RECORD and not _is_worker(config):
        config.pluginmanager.register(SuiteRecord(RECORD), 'gem_suite_record')
