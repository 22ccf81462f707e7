#!/usr/bin/env python3
"""Checks a test run against test/allowed_skips.yaml and prints where its time went.

    python scripts/check_test_run.py RECORD [RECORD ...] --distro jazzy [--whole]

RECORD: the files test/suite_record.py wrote (scripts/test.sh makes one per pytest run: the
parallel part and the serial group). It fails (exit 1), naming them, when
- a test or a module was skipped that the list does not allow on this distro (a skip
  condition that became always true hides its tests: this is how it is seen);
- with --whole (the whole suite was asked for): fewer tests were collected than the list's
  `minimum_tests`, or a test file under test/ gave no test at all;
- a collected test has no outcome (a worker lost it).
It prints the slowest tests of the whole run (both parts), and the parts' wall times.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ALLOWED = REPO / 'test' / 'allowed_skips.yaml'
SLOWEST = 25


def read_records(paths: list[Path]) -> tuple[list[dict], dict, list[dict]]:
    """(sessions, tests by id, module-level skips) of all the records."""
    sessions, tests, collect_skips = [], {}, []
    for path in paths:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            kind = entry.pop('kind')
            if kind == 'session':
                sessions.append({**entry, 'record': path.name})
            elif kind == 'test':
                tests[entry.pop('id')] = entry
            else:
                collect_skips.append(entry)
    return sessions, tests, collect_skips


def allowed_rule(test_id: str, reason: str, rules: list[dict], distro: str) -> dict | None:
    """The rule that allows this skip here, or None."""
    for rule in rules:
        env = rule.get('only_if_env')
        if (
            distro in rule.get('distros', [distro])
            and (env is None or os.environ.get(env) == '1')
            and rule.get('reason', '') in reason
            and any(fnmatch.fnmatchcase(test_id, pattern) for pattern in rule['tests'])
        ):
            return rule
    return None


def check(paths: list[Path], distro: str, whole: bool, allowed: Path = ALLOWED) -> list[str]:
    """The problems of the run, one line each (empty: the run is as the list says)."""
    listing = yaml.safe_load(allowed.read_text())
    rules = listing['skips']
    sessions, tests, collect_skips = read_records(paths)
    problems = []
    skipped = [(i, t['reason']) for i, t in tests.items() if t['outcome'] == 'skipped']
    skipped += [(s['id'], s['reason']) for s in collect_skips]
    for test_id, reason in sorted(skipped):
        if allowed_rule(test_id, reason, rules, distro) is None:
            problems.append(f'skipped, and not allowed on {distro}: {test_id} ({reason})')
    collected = set().union(*(s['collected'] for s in sessions)) if sessions else set()
    lost = sorted(collected - set(tests))
    problems += [f'collected but never reported (a worker lost it?): {i}' for i in lost]
    if whole:
        minimum = int(listing['minimum_tests'])
        if len(collected) < minimum:
            problems.append(
                f'{len(collected)} tests collected, fewer than minimum_tests ({minimum}) in '
                f'{allowed.relative_to(REPO)}: were tests lost? (lower it only on purpose)'
            )
        files = {p.relative_to(REPO).as_posix() for p in (REPO / 'test').glob('test_*.py')}
        seen = {i.split('::')[0] for i in collected} | {s['id'] for s in collect_skips}
        problems += [f'no test collected from {f}' for f in sorted(files - seen)]
    return problems


def summary(paths: list[Path]) -> str:
    sessions, tests, collect_skips = read_records(paths)
    outcomes: dict[str, int] = {}
    for t in tests.values():
        outcomes[t['outcome']] = outcomes.get(t['outcome'], 0) + 1
    lines = [f'{SLOWEST} slowest tests of the run (setup + call + teardown, both parts):']
    slowest = sorted(tests.items(), key=lambda kv: -kv[1]['seconds'])[:SLOWEST]
    for test_id, t in slowest:
        worker = f' [{t["worker"]}]' if t['worker'] else ''
        lines.append(f'  {t["seconds"]:7.1f} s  {test_id}{worker}')
    busy: dict[str, float] = {}
    for t in tests.values():
        if t['worker']:
            busy[t['worker']] = busy.get(t['worker'], 0.0) + t['seconds']
    if busy:  # a worker far above the others is a long module started late
        lines.append(
            'busy per worker: ' + ', '.join(f'{w} {b:.0f} s' for w, b in sorted(busy.items()))
        )
    for s in sessions:
        workers = f'{s["workers"]} workers' if s['workers'] not in (None, 0, '0') else 'serial'
        lines.append(
            f'part {s["record"]}: {len(s["collected"])} tests, {workers}, '
            f'{s["seconds"]:.0f} s, exit {s["exitstatus"]}'
        )
    counts = ', '.join(f'{n} {k}' for k, n in sorted(outcomes.items()))
    lines.append(f'in all: {counts}; {len(collect_skips)} modules skipped')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('records', nargs='+', type=Path)
    parser.add_argument('--distro', required=True)
    parser.add_argument('--whole', action='store_true', help='the whole suite was asked for')
    parser.add_argument('--allowed', type=Path, default=ALLOWED)
    args = parser.parse_args(argv)
    records = [p for p in args.records if p.is_file() and p.stat().st_size]
    if not records:
        print('check_test_run: no test record was written (did pytest start?)', file=sys.stderr)
        return 1
    print(summary(records))
    problems = check(records, args.distro, args.whole, args.allowed)
    if problems:
        print(f'\nTEST RUN CHECK FAILED ({len(problems)}):', file=sys.stderr)
        for line in problems:
            print(f'  {line}', file=sys.stderr)
        return 1
    print(f'test run check: every skip is allowed on {args.distro} ({args.allowed.name})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
