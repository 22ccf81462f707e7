"""gem_node's map of dense features over Fast DDS (issue 40): a rendered sequence (coloured
squares before a grey wall, with depth and camera_info) published from this process with
TF from tf2_ros' StaticTransformBroadcaster, the node (the shipped scene CLIP, depth on,
map_frame set, **no query active**) in its own. ~/ask_map is asked colours afterwards: one
never asked is found where it was, an absent one is "not found", a moved one stops answering
at its old place; map_file is read back by the next node, asked offline by `gem-ros map
ask` with the same answer, and moved aside by a node of another model. What the node was sent is
recorded in a bag as well: `gem-ros bag --map` builds the same map from it."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from std_msgs.msg import Header

from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS
from gem_ros.ros.transforms import tf2_missing
from gem_ros.srv import AskMap

from depth_scene import camera_info_msg, depth_msg
from hostile_inputs import read_kib
from map_scene import HEIGHT, OPTICAL, WIDTH, K, frame, in_map, static_transform
from ros_helpers import REPO, TINY_MODEL, NodeProcess, RosClient, image_msg, source_env

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(tf2_missing() is not None, reason=f'{tf2_missing()}'),
]
SEEN = {'red': (40, 60, 1.2), 'green': (200, 100, 1.6)}
TOLERANCE_M = 0.15
VOXEL_M = 0.05  # map_voxel_size's default: the bag tool's places agree within one
RECORDED = []  # (topic, message type, message, recording time ns): what the node was sent
PEAK_MIB = {}  # the first test's node: its peak RSS with a small map, the full map's baseline
FULL_VOXELS = 300_000  # the full map's budget: 415 bytes a voxel with the scene CLIP's 128


SCENE = (f'model:={SCENE_MODEL}', f'pretrained:={SCENE_WEIGHTS}', 'device:=cpu')


def node_args(map_file, model=SCENE):
    return (
        *model,
        'input_size:=224',
        'use_depth:=true',
        'sync_slop:=0.05',
        'publish_overlay:=false',
        'map_frame:=map',
        'map_rate_hz:=0.0',
        'tf_timeout:=0.2',
        f'map_file:={map_file}',
    )


@pytest.fixture(scope='module')
def client():
    import tf2_ros
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    ros = RosClient()
    ros.add_depth()
    ros.static_tf = tf2_ros.StaticTransformBroadcaster(ros.node)
    keep_all = QoSProfile(
        depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE
    )
    ros.ask_client = ros.node.create_client(AskMap, '/gem/ask_map', qos_profile=keep_all)
    t = static_transform()
    ros.static_tf.sendTransform(t)  # time 0: valid at every stamp
    from tf2_msgs.msg import TFMessage

    RECORDED.append(('/tf_static', 'tf2_msgs/msg/TFMessage', TFMessage(transforms=[t]),
                     time.time_ns()))  # fmt: skip
    yield ros
    ros.close()


@pytest.fixture(scope='module')
def map_file(tmp_path_factory):
    return tmp_path_factory.mktemp('gem_map') / 'room.gemmap'


def start(client, log, args):
    node = NodeProcess(log, *args)
    node.wait_for_log('loaded model', timeout=120)
    client.wait_matched()
    client.wait_depth_matched()
    return node


def send(client, squares, seconds):
    rgb, depth = frame(squares)
    header = Header(frame_id=OPTICAL)
    header.stamp.sec = seconds
    depth, info = depth_msg(depth, '32FC1', header), camera_info_msg(header, (WIDTH, HEIGHT), K)
    client.depth_pub.publish(depth)
    client.info_pub.publish(info)
    image = image_msg(rgb, 'rgb8', frame_id=OPTICAL)
    image.header = header
    time.sleep(0.05)  # depth first: the node pairs the frame with it
    client.image_pub.publish(image)
    now = time.time_ns()
    RECORDED.extend([
        ('/depth', 'sensor_msgs/msg/Image', depth, now - 50_000_000),
        ('/camera_info', 'sensor_msgs/msg/CameraInfo', info, now - 50_000_000),
        ('/image', 'sensor_msgs/msg/Image', image, now),
    ])  # fmt: skip


def ask(client, query):
    return client.call(client.ask_client, AskMap.Request(query=query), timeout=30.0)


def drive(client, node, squares, until, what, timeout=60.0):
    """Frames of `squares` (1 s apart in stamps) until `until(ask)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        send(client, squares, int(time.time()))
        time.sleep(1.0)
        if until():
            return
        assert time.monotonic() < deadline, f'{what}:\n{node.log()[-3000:]}'


def _flags(model) -> list:
    return [f"--{a.split(':=')[0].replace('_', '-')}={a.split(':=')[1]}" for a in model]


def _map_ask(map_file, queries, model):
    """`gem-ros map ask` on the map file, no ROS running: {query: its answer}, or the run."""
    run = subprocess.run(
        [sys.executable, '-m', 'gem_ros.cli', 'map', 'ask', str(map_file), *queries, '--json',
         '--input-size', '224', *_flags(model)],
        capture_output=True, text=True, env=source_env(), cwd=REPO, timeout=120,
    )  # fmt: skip
    if run.returncode:
        return run
    return {a['query']: a for a in map(json.loads, run.stdout.splitlines())}


def _record_bag(path):
    """What the node was sent, as a rosbag2 bag (MCAP)."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msgtype, msg, when in sorted(RECORDED, key=lambda r: r[3]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], when, serialize_message(msg))
    return path


def near(place_pose, where) -> bool:
    p = place_pose.position
    return np.linalg.norm(np.array([p.x, p.y, p.z]) - where) < TOLERANCE_M


def test_colours_never_asked_are_found_an_absent_one_is_not_a_moved_one_moves(
    client, map_file, tmp_path
):
    node = start(client, tmp_path / 'node.log', node_args(map_file))
    try:
        assert client.get_parameters('queries')['queries'] in ('', [])  # nothing asked
        red, green = (in_map(*SEEN[c]) for c in ('red', 'green'))
        drive(client, node, SEEN, lambda: ask(client, 'green').found, 'green in the map')
        for query, where in (('red', red), ('green', green)):
            answer = ask(client, query)
            assert answer.found and near(answer.places.poses[0], where), (query, answer)
            assert answer.places.header.frame_id == 'map' and answer.cameras[0] == ''
        absent = ask(client, 'blue')
        assert not absent.found and 'nothing like' in absent.message, absent
        moved = {'red': (200, 100, 1.2)}
        drive(
            client, node, moved,
            lambda: not any(near(p, red) for p in ask(client, 'red').places.poses),
            'red no longer at its old place',
        )  # fmt: skip
        answer = ask(client, 'red')
        assert answer.found and near(answer.places.poses[0], in_map(*moved['red'])), answer
        PEAK_MIB['small map'] = read_kib(node.proc.pid, 'VmHWM') / 1024
    finally:
        assert node.stop() == 0
    assert map_file.is_file()


def test_the_map_file_is_read_back_and_refused_for_another_model(client, map_file, tmp_path):
    if not map_file.is_file():
        pytest.skip('needs the map file the first test leaves')
    node = start(client, tmp_path / 'again.log', node_args(map_file))
    try:
        answer = ask(client, 'green')  # no frame sent: from the file alone
        for _ in range(20):  # the file is read once the model is known
            if answer.found:
                break
            time.sleep(0.5)
            answer = ask(client, 'green')
        assert answer.found and near(answer.places.poses[0], in_map(*SEEN['green'])), answer
        node.wait_for_log('voxels read')
    finally:
        node.stop()
    # Offline, the same file and code: `gem-ros map ask` agrees with the node.
    queries = ('green', 'red', 'blue')
    offline = _map_ask(map_file, queries, SCENE)
    assert isinstance(offline, dict), offline.stderr
    best = answer.places.poses[0].position
    places = offline['green']['places']
    assert np.allclose(places[0]['point'], [best.x, best.y, best.z], atol=1e-3), places
    assert offline['blue']['found'] is False
    # The recording of what the node was sent, through `gem-ros bag --map`: the same places.
    bag, bag_map = _record_bag(tmp_path / 'drive'), tmp_path / 'bag.gemmap'
    built = subprocess.run(
        [sys.executable, '-m', 'gem_ros.cli', 'bag', str(bag), '--map', str(bag_map),
         '--map-frame', 'map', '--input-size', '224', '--quiet', *_flags(SCENE)],
        capture_output=True, text=True, env=source_env(), cwd=REPO, timeout=240,
    )  # fmt: skip
    assert built.returncode == 0 and 'voxels from' in built.stderr, built.stderr[-3000:]
    assert 'frames run into the map' in built.stderr, built.stderr[-3000:]  # none published
    from_bag = _map_ask(bag_map, queries, SCENE)
    assert isinstance(from_bag, dict), from_bag.stderr
    for query in queries:
        node_answer, bag_answer = offline[query], from_bag[query]
        assert node_answer['found'] == bag_answer['found'], (query, node_answer, bag_answer)
        if node_answer['found']:
            a, b = node_answer['places'][0]['point'], bag_answer['places'][0]['point']
            assert np.linalg.norm(np.subtract(a, b)) <= VOXEL_M, (query, a, b)
    refused = _map_ask(map_file, ['green'], TINY_MODEL)
    assert refused.returncode == 2 and 'its features mean nothing here' in refused.stderr
    other = start(client, tmp_path / 'other.log', node_args(map_file, TINY_MODEL))
    try:
        log = other.wait_for_log('map_file not used', timeout=60)  # read once loaded
        assert 'its features mean nothing here' in log and 'moved to' in log
    finally:
        other.stop()
    assert map_file.with_name(map_file.name + '.rejected').is_file()


def _full_map_file(path):
    """A map of FULL_VOXELS voxels of the scene CLIP, seen long ago (stamp 0), made as the
    node would stamp it: what a node fills after a long drive."""
    import gem_ros.gem as gem
    from gem_ros.feature_map import FeatureMap, save_map
    from gem_ros.map_command import made_by

    model = gem.load_model(str(SCENE_MODEL), str(SCENE_WEIGHTS), device='cpu', input_size=224)
    fmap = FeatureMap(VOXEL_M, FULL_VOXELS)
    side = int(np.ceil(FULL_VOXELS ** (1 / 3)))
    cells = np.stack(np.unravel_index(np.arange(FULL_VOXELS), (side,) * 3), 1)
    points = (cells + 0.5) * VOXEL_M + [10.0, 0.0, 0.0]  # far from the squares
    features = np.random.default_rng(0).standard_normal((FULL_VOXELS, 128)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    fmap.fuse(points, features, np.zeros((FULL_VOXELS, 3), np.uint8), 0.0, '')
    save_map(path, fmap, made_by(model, 'map', VOXEL_M))
    return fmap.bytes_per_voxel(128)


def test_a_full_map_stays_within_its_stated_memory_and_takes_new_frames(client, tmp_path):
    """map_max_voxels' stated memory (bytes_per_voxel a voxel, up to twice that while map_file
    is read) holds for the node's peak RSS: a full map read from map_file, then frames fused
    into it (the voxels seen longest ago go), against the first test's node (a small map)."""
    if 'small map' not in PEAK_MIB:
        pytest.skip("needs the first test's node's peak RSS")
    full = tmp_path / 'full.gemmap'
    per_voxel = _full_map_file(full)
    node = start(client, tmp_path / 'full.log',
                 (*node_args(full), f'map_max_voxels:={FULL_VOXELS}'))  # fmt: skip
    try:
        node.wait_for_log(f'{FULL_VOXELS} voxels read', timeout=120)
        drive(client, node, SEEN, lambda: ask(client, 'green').found, 'green in a full map')
        answer = ask(client, 'green')
        assert near(answer.places.poses[0], in_map(*SEEN['green'])), answer
        peak = read_kib(node.proc.pid, 'VmHWM') / 1024
    finally:
        node.stop()
    budget = 2 * FULL_VOXELS * per_voxel / 2**20
    grown = peak - PEAK_MIB['small map']
    print(f'full map: peak {peak:.0f} MiB, {grown:.0f} MiB over the small map; stated '
          f'{budget / 2:.0f} MiB, {budget:.0f} MiB while read')  # fmt: skip
    assert grown <= budget + 64, (peak, PEAK_MIB, budget)
