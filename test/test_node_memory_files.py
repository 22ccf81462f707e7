"""memory_file against what a careless or hostile user puts at its path, with the real node
over Fast DDS (issue 39): a file nested too deep to parse, places with bad fields, a folder, a
foreign file, a `.rejected` name already taken. The node always starts (or, for a path that
is no file, refuses with the reason), answers every ~/recall with finite numbers, and never
renames, moves or overwrites what it did not write."""

import hashlib
import json
import math
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from visualization_msgs.msg import MarkerArray

from gem_ros.ros.transforms import tf2_missing
from gem_ros.srv import Recall

from ros_helpers import TINY_MODEL, NodeProcess, RosClient

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(tf2_missing() is not None, reason=f'memory_frame needs {tf2_missing()}'),
]
GOOD = {
    'query': 'red', 'x': 1.0, 'y': 2.0, 'z': 0.5, 'sightings': 4, 'first_seen': 100.0,
    'last_seen': 110.0, 'confidence': 0.8, 'camera': 'front', 'misses': 0,
}  # fmt: skip
# The fields that reached ~/recall and the markers before (a query each, to ask for it).
BAD = [
    {'query': 'green', 'confidence': math.nan},
    {'query': 'blue', 'sightings': 'many'},
    {'query': 42},
    {'query': 'cyan', 'camera': None},
    {'query': 'magenta', 'last_seen': 1e300},
]


@pytest.fixture(scope='module')
def client():
    ros = RosClient()
    ros.memory_markers = []
    ros.node.create_subscription(
        MarkerArray, '/gem/memory_markers', ros._keep(ros.memory_markers), 10
    )
    ros.recall_client = ros.node.create_client(Recall, '/gem/recall')
    ros.diagnostics()
    yield ros
    ros.close()


def start(tmp_path: Path, memory_file: Path, name='node') -> NodeProcess:
    return NodeProcess(
        tmp_path / f'{name}.log',
        *TINY_MODEL,
        'queries:=[red]',
        'input_size:=96',
        'use_depth:=true',
        'memory_frame:=map',
        f'memory_file:={memory_file}',
    )


def recall(client, query: str):
    assert client.recall_client.wait_for_service(timeout_sec=20)
    return client.call(client.recall_client, Recall.Request(query=query), timeout=10)


def digest(path: Path) -> str:
    """What is at `path`, to find it unchanged: a file's bytes, a folder's names and bytes."""
    if path.is_dir():
        return json.dumps({p.name: digest(p) for p in sorted(path.iterdir())})
    return hashlib.sha256(path.read_bytes()).hexdigest()


def memory_status(client, after: float) -> DiagnosticStatus:
    def fresh():
        return [
            s
            for s, t in zip(client.statuses, client.diagnostics_times)
            if t > after and s.name.endswith(': inference')
        ]

    client.wait_for(lambda: fresh(), 'a /diagnostics status', timeout=20)
    return fresh()[-1]


def test_a_file_nested_too_deep_leaves_the_node_serving_and_the_file_as_it_was(client, tmp_path):
    path = tmp_path / 'memory.json'
    path.write_text('[' * 200_000)
    before = digest(path)
    node = start(tmp_path, path)
    try:
        log = node.wait_for_log('loaded model')
        assert 'not a gem_ros memory file' in log and str(path) in log, log[-3000:]
        answer = recall(client, 'red')
        assert not answer.seen and 'not seen' in answer.message
        status = memory_status(client, time.monotonic())
        values = {v.key: v.value for v in status.values}
        assert status.level == DiagnosticStatus.WARN, status
        assert values['memory file'].startswith('not kept'), values
        assert 'memory_file not kept' in status.message
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['memory.json', 'node.log']


def test_bad_places_are_dropped_by_name_and_every_recall_is_answered(client, tmp_path):
    path = tmp_path / 'memory.json'
    now = time.time()  # seen a minute ago: not expired
    good = {**GOOD, 'first_seen': now - 70, 'last_seen': now - 60}
    places = [good, *({**good, **bad} for bad in BAD)]
    path.write_text(
        json.dumps({'format': 'gem_ros memory', 'version': 1, 'frame': 'map', 'places': places})
    )
    node = start(tmp_path, path)
    try:
        log = node.wait_for_log('places read')
        assert '1 places read, 5 bad ones dropped' in log, log[-3000:]
        for field in ('confidence is nan', "sightings is 'many'", 'query is 42',
                      'camera is None', 'last_seen (future)'):  # fmt: skip
            assert field in log, (field, log[-3000:])
        best = recall(client, 'red')
        assert best.seen and best.sightings == 4, best
        assert math.isfinite(best.confidence) and math.isfinite(best.age), best
        assert 0 <= best.point.header.stamp.sec < 2**31
        for bad in BAD:
            query = str(bad['query'])
            answer = recall(client, query)  # answered, not left to the caller's timeout
            assert not answer.seen, (query, answer)
        # The markers: drawn once a second from the places, with no error in between.
        client.wait_for(
            lambda: any(m.ns == 'gem_memory' for a in client.memory_markers for m in a.markers),
            'memory markers',
            timeout=10,
        )
        time.sleep(2.5)
        log = node.log()
        assert 'Traceback' not in log and 'TypeError' not in log, log[-3000:]
    finally:
        assert node.stop() == 0, node.log()[-3000:]


def test_a_folder_as_memory_file_is_refused_at_start_and_left_as_it_is(tmp_path):
    folder = tmp_path / 'maps'
    folder.mkdir()
    (folder / 'users_notes.txt').write_text('mine')
    before = digest(folder)
    node = start(tmp_path, folder)
    code = node.proc.wait(60)
    log = node.log()
    node.stop()
    assert code == 2, log[-3000:]
    assert 'is a folder: name a file in it' in log, log[-3000:]
    assert digest(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['maps', 'node.log']


def test_a_memory_file_of_another_frame_goes_aside_never_over_a_users_file(client, tmp_path):
    """Ours but unusable (another memory_frame): moved to the first free .rejected name; a
    user's file already at `.rejected` is kept as it was. A foreign file is never touched."""
    path = tmp_path / 'memory.json'
    path.write_text(
        json.dumps({'format': 'gem_ros memory', 'version': 1, 'frame': 'odom', 'places': []})
    )
    theirs = tmp_path / 'memory.json.rejected'
    theirs.write_text('the user keeps this')
    node = start(tmp_path, path)
    try:
        log = node.wait_for_log('memory_file not used')
        assert 'memory.json.rejected.1' in log, log[-3000:]
        assert recall(client, 'red').message
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert theirs.read_text() == 'the user keeps this'
    assert json.loads((tmp_path / 'memory.json.rejected.1').read_text())['frame'] == 'odom'
