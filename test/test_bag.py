"""`gem-ros bag` as users run it (a subprocess): every frame of a recorded bag through the
node's engine, the output bag and its JSON lines, the node's own results frame for frame,
interruption (SIGTERM, SIGKILL) and --resume, a truncated recording, and bad inputs."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from file_trees import tree
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from gem_ros.msg import GemResult

from doc_examples import run_example
from ros_helpers import TINY_MODEL, NodeProcess, RosClient, source_env

pytestmark = pytest.mark.timeout(300)
TINY_FLAGS = [
    '--model',
    'test/fixtures/gem-tiny-test.json',
    '--pretrained',
    'test/fixtures/gem-tiny-test.pt',
    '--device',
    'cpu',
    '--presence',
    'off',
    '--input-size',
    '96',
]
STORAGE = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}


def frames(count: int, seed: int = 0, size=(96, 128)):
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
        image[20 + i % 30 : 50 + i % 30, 30:80] = (220, 30, 30)  # a moving red block
        yield i, image


def image_message(i: int, image: np.ndarray, compressed: bool = False):
    if compressed:
        msg = CompressedImage(
            format='jpeg', data=cv2.imencode('.jpg', image[:, :, ::-1])[1].tobytes()
        )
    else:
        h, w = image.shape[:2]
        msg = Image(height=h, width=w, encoding='rgb8', step=w * 3, data=image.tobytes())
    msg.header.frame_id = f'camera_{i % 3}'
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i, 500
    return msg


def write_bag(
    path: Path, count: int, storage="mcap", topics=("/cam/image",), compressed=False, size=(96, 128)
):
    typestore = get_typestore(Stores.ROS2_JAZZY)
    msgtype = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
    with Writer(path, version=8, storage_plugin=STORAGE[storage]) as writer:
        connections = [writer.add_connection(t, msgtype, typestore=typestore) for t in topics]
        for i, image in frames(count, size=size):
            raw = serialize_message(image_message(i, image, compressed))
            for connection in connections:
                writer.write(connection, (2000 + i) * 10**9, raw)
    return path


def gem_bag(*args, check=None, wait=True):
    command = [sys.executable, '-m', 'gem_ros.cli', 'bag', *map(str, args), *TINY_FLAGS]
    if not wait:
        return subprocess.Popen(
            command, env=source_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    run = subprocess.run(command, env=source_env(), capture_output=True, text=True, timeout=240)
    if check is not None:
        assert run.returncode == check, run.stdout + run.stderr
    return run


# ~/detections (vision_msgs) only where vision_msgs is installed (the launch bundle).
OUTPUT_TOPICS = {'/gem/results', '/gem/overlay'} | (
    {'/gem/detections'} if importlib.util.find_spec('vision_msgs') else set()
)


def read_output(path: Path) -> dict:
    """topic -> [(recording time, message)] of an output bag."""
    types = {'/gem/results': GemResult, '/gem/overlay': Image}
    try:  # optional (the launch bundle): without it the node publishes no detections
        from vision_msgs.msg import Detection2DArray

        types['/gem/detections'] = Detection2DArray
    except ImportError:
        pass
    out = {}
    with Reader(path) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = deserialize_message(bytes(raw), types[connection.topic])
            out.setdefault(connection.topic, []).append((timestamp, msg))
    return out


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / 'results.jsonl').read_text().splitlines()]


def test_every_frame_with_the_inputs_times_and_headers(tmp_path):
    source = write_bag(tmp_path / 'in', 6)
    gem_bag(source, '-q', 'red; blue', '-o', tmp_path / 'out', '--overlay', check=0)
    out = read_output(tmp_path / 'out')
    assert set(out) == OUTPUT_TOPICS
    for topic, messages in out.items():
        assert [t for t, _ in messages] == [(2000 + i) * 10**9 for i in range(6)], topic
        for i, (_, msg) in enumerate(messages):
            assert msg.header.frame_id == f'camera_{i % 3}', topic
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1000 + i, 500), topic
    for _, result in out['/gem/results']:
        assert [r.query for r in result.results] == ['red', 'blue']
        assert (result.results[0].mask.width, result.results[0].mask.height) == (128, 96)
    lines = jsonl(tmp_path / 'out')
    assert [line['frame'] for line in lines] == list(range(6))
    assert lines[0]['queries'][0]['query'] == 'red' and lines[0]['width'] == 128
    # What `gem-ros locate` writes per image, field for field.
    assert set(lines[0]['queries'][0]) == {
        'query',
        'found',
        'confidence',
        'score',
        'peak',
        'peaks',
        'bbox',
        'area',
    }
    first = out['/gem/results'][0][1].results[0]
    assert lines[0]['queries'][0]['peak'] == [first.peak_x, first.peak_y]


def test_sqlite_compressed_every_nth(tmp_path):
    source = write_bag(tmp_path / 'in', 7, storage='sqlite3', compressed=True)
    gem_bag(
        source, '-q', 'red', '-o', tmp_path / 'out', '--every', '3', '--storage', 'sqlite3', check=0
    )
    out = read_output(tmp_path / 'out')
    assert [t for t, _ in out['/gem/results']] == [(2000 + i) * 10**9 for i in (0, 3, 6)]
    assert [line['frame'] for line in jsonl(tmp_path / 'out')] == [0, 3, 6]
    assert next((tmp_path / 'out').glob('*.db3')).is_file()


def test_the_same_results_as_the_node_frame_for_frame(tmp_path):
    source = write_bag(tmp_path / 'in', 5)
    gem_bag(source, '-q', 'red; blue', '-o', tmp_path / 'out', check=0)
    from_bag = [m for _, m in read_output(tmp_path / 'out')['/gem/results']]
    client = RosClient()
    # The bag tool decides per frame; the node holds presence (and smooths peaks) over
    # frames by default, so it runs per frame here too.
    node = NodeProcess(
        tmp_path / 'node.log', *TINY_MODEL, 'queries:=[red, blue]', 'input_size:=96', 'hold:=false'
    )
    try:
        node.wait_for_log('loaded model')
        client.wait_matched()
        for (i, image), bagged in zip(frames(5), from_bag):
            live = client.publish_and_wait(image_message(i, image))
            assert live.header == bagged.header
            for a, b in zip(live.results, bagged.results):
                assert (a.query, a.peak_x, a.peak_y, a.area, a.found) == (
                    b.query,
                    b.peak_x,
                    b.peak_y,
                    b.area,
                    b.found,
                )
                assert a.score == b.score and a.confidence == b.confidence
                assert a.bbox == b.bbox and bytes(a.mask.data) == bytes(b.mask.data)
    finally:
        node.stop()
        client.close()


def _interrupted(tmp_path, signum) -> Path:
    """Start a long run, stop it with `signum` once 10 frames are done; the output folder."""
    source = write_bag(tmp_path / 'in', 150)
    out = tmp_path / 'out'
    run = gem_bag(source, '-q', 'red', '-o', out, '--input-size', '192', wait=False)
    deadline = time.monotonic() + 120
    while not (out / 'results.jsonl').is_file() or len(jsonl(out)) < 10:
        assert run.poll() is None, run.stdout.read()
        assert time.monotonic() < deadline, 'no 10 frames within 120 s'
        time.sleep(0.02)
    run.send_signal(signum)
    code = run.wait(60)
    log = run.stdout.read()
    if signum == signal.SIGTERM:
        assert code == 130, log
        assert 'interrupted: --resume continues it' in log, log
    return source, out, log


def _resume_completes(source, out):
    run = gem_bag(source, '-q', 'red', '-o', out, '--input-size', '192', '--resume', check=0)
    results = read_output(out)['/gem/results']
    assert [t for t, _ in results] == [(2000 + i) * 10**9 for i in range(150)]
    assert [line['frame'] for line in jsonl(out)] == list(range(150))
    assert not out.with_name('out.resuming').exists()
    return run


def test_sigterm_leaves_every_finished_frame_then_resume(tmp_path):
    source, out, _ = _interrupted(tmp_path, signal.SIGTERM)
    done = jsonl(out)
    results = read_output(out)['/gem/results']  # readable as it is
    assert 10 <= len(results) == len(done) < 150
    assert [t for t, _ in results] == [line['log_time_ns'] for line in done]
    run = _resume_completes(source, out)
    assert f'resuming: {len(done)} frames kept' in run.stderr


def test_sigkill_then_resume_computes_the_lost_frames_again(tmp_path):
    source, out, _ = _interrupted(tmp_path, signal.SIGKILL)
    run = _resume_completes(source, out)
    assert 'the previous output cannot be read' in run.stderr, run.stderr


def test_a_truncated_recording_is_read_to_where_it_ends(tmp_path):
    source = write_bag(tmp_path / 'in', 60)
    mcap = next(source.glob('*.mcap'))
    with open(mcap, 'r+b') as f:
        f.truncate(mcap.stat().st_size * 2 // 3)  # the recorder died: no summary, a cut chunk
    run = gem_bag(source, '-q', 'red', '-o', tmp_path / 'out', check=3)
    lines = jsonl(tmp_path / 'out')
    assert 0 < len(lines) < 60
    assert f'the input bag ends at frame {len(lines)}' in run.stderr, run.stderr
    assert len(read_output(tmp_path / 'out')['/gem/results']) == len(lines)


def test_bad_inputs_are_refused_with_the_reason(tmp_path):
    run = gem_bag(tmp_path / 'nothing', '-q', 'red', '-o', tmp_path / 'out', check=2)
    assert 'no bag at' in run.stderr
    two = write_bag(tmp_path / 'two', 1, topics=('/a/image', '/b/image'))
    run = gem_bag(two, '-q', 'red', '-o', tmp_path / 'out', check=2)
    assert 'pass --topic, one or more of its image topics: /a/image, /b/image' in run.stderr
    run = gem_bag(two, '-q', 'red', '-o', tmp_path / 'out', '--topic', '/c', check=2)
    assert "has no image topic '/c'" in run.stderr
    gem_bag(two, '-q', 'red', '-o', tmp_path / 'out', '--topic', '/b/image', check=0)
    run = gem_bag(two, '-q', 'red', '-o', tmp_path / 'out', '--topic', '/b/image', check=2)
    assert 'exists: --resume continues it' in run.stderr
    # The map (issue 40): a file or -o to put it in; depth and TF the bag must have.
    run = gem_bag(two, '--map', check=2)
    assert '--map needs a file (--map OUT.gemmap), or -o to put it in' in run.stderr
    run = gem_bag(two, '--map', tmp_path / 'm.gemmap', '--map-voxel-size', '0', check=2)
    assert '--map-voxel-size: map_voxel_size must be within 0.01 .. 1.0, got 0.0' in run.stderr
    run = gem_bag(two, '--map', tmp_path / 'two.gemmap', '--topic', '/a/image', check=3)
    assert '--map: ' in run.stderr
    assert 'needs one depth image topic: pass --depth-topic' in run.stderr
    assert not (tmp_path / 'two.gemmap').exists()


def test_resume_never_moves_or_deletes_a_folder_it_did_not_write(tmp_path):
    """Issue 39: --resume moves the previous output aside and deletes it once its frames
    are copied. A user's folder at -o, or at -o's '.resuming' beside a real output, is
    refused before anything moves, and stays exactly as it was."""
    source = write_bag(tmp_path / 'rec', 2)
    mine = tmp_path / 'photos'
    (mine / 'album').mkdir(parents=True)
    (mine / 'album' / 'a.jpg').write_bytes(b'a user\'s photo')
    (mine / 'notes.txt').write_text('keep me')
    out = tmp_path / 'out'
    gem_bag(source, '-q', 'red', '-o', out, '--input-size', '192', check=0)
    (tmp_path / 'out.resuming').mkdir()
    (tmp_path / 'out.resuming' / 'mine.txt').write_text('keep me too')
    before = tree(tmp_path)
    for target in (mine, out):
        run = gem_bag(source, '-q', 'red', '-o', target, '--resume', check=2)
        assert 'is not an output of gem-ros bag' in run.stderr, run.stderr
        assert 'nothing was changed' in run.stderr
    assert tree(tmp_path) == before


def test_the_docs_example_runs_offline(tmp_path):
    run_example('docs/bag.md', 'bag-example', tmp_path, source_env())
    lines = jsonl(tmp_path / 'demo' / 'labelled')
    assert len(lines) == 8
    found = [{q['query']: q['found'] for q in line['queries']} for line in lines]
    assert any(f['red'] for f in found) and not all(f['blue'] for f in found)
    assert set(read_output(tmp_path / 'demo' / 'labelled')) == OUTPUT_TOPICS


def test_node_name_mask_format_and_a_bad_frame_recorded_as_an_error(tmp_path):
    """--node-name names the output topics, --mask-format none leaves masks empty, and a
    frame that cannot be read gets an `error` line in results.jsonl (the others go on)."""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    source = tmp_path / 'in'
    with Writer(source, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(
            '/cam/image', 'sensor_msgs/msg/Image', typestore=typestore
        )
        for i, image in frames(3):
            msg = image_message(i, image)
            if i == 1:
                msg.data = msg.data[:-7]  # 7 bytes short of height x step
            writer.write(connection, (2000 + i) * 10**9, serialize_message(msg))
    gem_bag(
        source,
        '-q',
        'red',
        '-o',
        tmp_path / 'out',
        '--node-name',
        'front_gem',
        '--mask-format',
        'none',
    )
    lines = jsonl(tmp_path / 'out')
    assert [line['frame'] for line in lines] == [0, 1, 2]
    assert 'error' in lines[1] and 'queries' not in lines[1], lines[1]
    assert 'bad frame' in lines[1]['error'], lines[1]
    assert all('error' not in lines[i] and lines[i]['queries'] for i in (0, 2)), lines
    with Reader(tmp_path / 'out') as reader:
        topics = {c.topic for c in reader.connections}
        results = [
            deserialize_message(bytes(raw), GemResult)
            for c, _, raw in reader.messages()
            if c.topic == '/front_gem/results'
        ]
    assert '/front_gem/results' in topics and not any(t.startswith('/gem/') for t in topics)
    assert len(results) == 2  # the bad frame has none
    mask = results[0].results[0].mask
    assert (mask.width, mask.height, len(mask.data)) == (0, 0, 0)  # 'none': header only


def test_a_damaged_sqlite3_bag_is_refused_with_exit_2(tmp_path):
    source = write_bag(tmp_path / 'in', 4, storage='sqlite3')
    db = next(source.glob('*.db3'))
    db.write_bytes(b'this is no sqlite database' * 100)
    run = gem_bag(source, '-q', 'red', '-o', tmp_path / 'out')
    assert run.returncode == 2, run.stdout + run.stderr
    assert 'Traceback' not in run.stderr and str(source) in run.stderr, run.stderr


def test_several_image_topics_are_labelled_each_as_a_camera(tmp_path):
    source = write_bag(tmp_path / 'in', 4, topics=('/front/image', '/left/image'))
    gem_bag(
        source, '-q', 'red', '-o', tmp_path / 'out',
        '--topic', '/front/image', '--topic', '/left/image', check=0,
    )  # fmt: skip
    types = {'/gem/front_image/results': GemResult, '/gem/left_image/results': GemResult}
    out = {}
    with Reader(tmp_path / 'out') as reader:
        for connection, timestamp, raw in reader.messages():
            if connection.topic in types:
                msg = deserialize_message(bytes(raw), types[connection.topic])
                out.setdefault(connection.topic, []).append((timestamp, msg))
    assert set(out) == set(types)
    front, left = out['/gem/front_image/results'], out['/gem/left_image/results']
    assert [t for t, _ in front] == [t for t, _ in left] == [(2000 + i) * 10**9 for i in range(4)]
    for (_, a), (_, b) in zip(front, left):  # the same frames on both: the same results
        assert a.results[0].score == b.results[0].score and a.header == b.header
    lines = jsonl(tmp_path / 'out')
    assert sorted(line['topic'] for line in lines) == ['/front/image'] * 4 + ['/left/image'] * 4
