"""gem_node's points in a robot frame through real tf2, and its memory of sightings, over
Fast DDS: transforms broadcast from this process (tf2_ros' StaticTransformBroadcaster and
TransformBroadcaster), the node (tiny model, depth on) in its own.

- target_frame with a static transform; with a moving one, the transform at the frame's stamp
  (interpolated), not the latest; extrapolation and an unknown frame: no target point, a
  warning, and a node that keeps serving; markers in the target frame;
- ~/locate's point in a frame asked for;
- ~/recall: where a query was seen after it stopped being asked, seen: false for one never
  seen; memory_file read back by the next node, refused for another frame;
- without tf2_ros, target_frame and memory_frame are refused at start-up with the reason.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from gem_ros.ros.transforms import tf2_missing
from gem_ros.srv import Locate, Recall, SetQueries

from depth_scene import HEIGHT, WIDTH, camera_info_msg, depth_msg, wall_and_box
from ros_helpers import REPO, TINY_MODEL, NodeProcess, RosClient, image_msg, source_env

pytestmark = pytest.mark.timeout(240)
needs_tf2 = pytest.mark.skipif(
    tf2_missing() is not None,
    reason=f'{tf2_missing()} (scripts/setup.sh installs it where ../shared/ros-tf2 is)',
)
STATIC = 'camera_color_optical_frame'  # map -> STATIC, fixed
MOVING = 'moving_optical'  # map -> MOVING, moving along map x at 1 m/s
# Optical frame -> map: optical z forward = map x, optical x right = -map y, optical y down =
# -map z; the camera at (1, 2, 0.5) in the map.
OPTICAL = (-0.5, 0.5, -0.5, 0.5)
STATIC_AT = (1.0, 2.0, 0.5)
TOLERANCE = 1e-3  # m: the same arithmetic, in float64 both sides
_stamps = []


def next_second() -> int:
    """Frames 10 s apart (no two share depth), from 2000 s before the first one was asked
    for: behind the node clock, within memory_ttl_s (3600 s) for the module's few hundred
    frames. Not at import: the suite may run this module long after collecting it."""
    if not _stamps:
        _stamps.append(itertools.count(int(time.time()) - 2000, 10))
    return next(_stamps[0])


def in_map(point, origin):
    """The optical-frame point in the map, by hand (the rotation above)."""
    x, y, z = point
    return np.array([origin[0] + z, origin[1] - x, origin[2] - y])


def transform(child, stamp, origin):
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = 'map', child
    t.header.stamp = stamp
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = origin
    q = t.transform.rotation
    q.x, q.y, q.z, q.w = OPTICAL
    return t


@pytest.fixture(scope='module')
def client():
    import tf2_ros
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    ros = RosClient()
    ros.add_depth()
    ros.static_tf = tf2_ros.StaticTransformBroadcaster(ros.node)
    ros.tf = tf2_ros.TransformBroadcaster(ros.node)
    ros.memory_markers = []
    ros.node.create_subscription(
        MarkerArray, '/gem/memory_markers', ros._keep(ros.memory_markers), 10
    )
    keep_all = QoSProfile(
        depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE
    )
    ros.locate_client = ros.node.create_client(Locate, '/gem/locate', qos_profile=keep_all)
    ros.recall_client = ros.node.create_client(Recall, '/gem/recall', qos_profile=keep_all)
    yield ros
    ros.close()


def node_args(memory_file, memory_frame='map'):
    return (
        *TINY_MODEL,
        'queries:=[red, blue]',
        'input_size:=96',
        'use_depth:=true',
        'sync_slop:=0.05',
        'publish_overlay:=false',
        'hold:=false',
        'target_frame:=map',
        'tf_timeout:=0.2',
        f'memory_frame:={memory_frame}',
        f'memory_file:={memory_file}',
    )


@pytest.fixture(scope='module')
def memory_file(tmp_path_factory):
    return tmp_path_factory.mktemp('gem_memory') / 'memory.json'


@pytest.fixture(scope='module')
def node(client, memory_file, tmp_path_factory):
    if tf2_missing():
        pytest.skip(tf2_missing())
    process = NodeProcess(
        tmp_path_factory.mktemp('gem_node_tf') / 'node.log', *node_args(memory_file)
    )
    try:
        process.wait_for_log('loaded model')
        client.wait_matched()
        client.wait_depth_matched()
        stamp = Header().stamp  # static transforms: time 0, valid at every stamp
        client.static_tf.sendTransform(transform(STATIC, stamp, STATIC_AT))
        yield process
    finally:
        process.stop()


def stamped(seconds, frame_id, nanosec=0):
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = seconds, nanosec
    return header


def send(client, header):
    """Depth and camera_info, then the colour frame (a red box before a wall); its result."""
    depth, box = wall_and_box()
    client.depth_pub.publish(depth_msg(depth, '32FC1', header))
    client.info_pub.publish(camera_info_msg(header))
    rgb = np.full((HEIGHT, WIDTH, 3), 170, np.uint8)
    rgb[box] = (200, 30, 30)
    frame = image_msg(rgb, 'rgb8', frame_id=header.frame_id)
    frame.header = header
    return client.publish_and_wait(frame)


def send_with_points(client, frame_id, nanosec=0):
    """A frame whose queries all got camera points (depth travels best effort: a frame
    without is sent again, new stamps)."""
    for _ in range(3):
        result = send(client, stamped(next_second(), frame_id, nanosec))
        if all(r.has_point for r in result.results):
            return result
    raise AssertionError('three frames with valid depth got no points')


def point(p):
    return np.array([p.x, p.y, p.z])


def wait_logged(node, text, after, timeout=20.0):
    return node.wait_for_log(text, after=after, timeout=timeout)


@needs_tf2
def test_static_transform_gives_target_points_and_markers_in_the_target_frame(client, node):
    deadline = time.monotonic() + 20
    while True:  # the static transform reaches the node's buffer once discovered
        result = send_with_points(client, STATIC)
        if all(r.has_target_point for r in result.results):
            break
        assert time.monotonic() < deadline, f'no target points:\n{node.log()[-2000:]}'
    for r in result.results:
        assert r.target_point.header.frame_id == 'map'
        assert r.target_point.header.stamp == result.header.stamp
        assert np.allclose(point(r.target_point.point), in_map(point(r.point), STATIC_AT),
                           atol=TOLERANCE), r.query  # fmt: skip
    markers = client.wait_for(
        lambda: [
            m for a in client.markers for m in a.markers
            if m.header.stamp == result.header.stamp and m.ns == 'gem_points'
        ],
        'markers of the frame',
    )  # fmt: skip
    assert {m.header.frame_id for m in markers} == {'map'}
    targets = {r.query: point(r.target_point.point) for r in result.results}
    positions = [point(m.pose.position) for m in markers]
    assert all(any(np.allclose(p, t, atol=TOLERANCE) for p in positions) for t in targets.values())


@needs_tf2
def test_a_moving_frame_uses_the_transform_at_the_frames_stamp(client, node):
    start = next_second()
    for dt in (0, 1):  # x = 0 at `start`, x = 1 one second later
        stamp = stamped(start + dt, MOVING).stamp
        client.tf.sendTransform(transform(MOVING, stamp, (float(dt), 0.0, 0.5)))
    time.sleep(0.5)  # the node's buffer has both (TF is reliable; this is delivery time)
    depth, box = wall_and_box()
    header = stamped(start, MOVING, nanosec=250_000_000)  # a quarter of the way
    result = None
    for _ in range(3):
        result = send(client, header)
        if all(r.has_point for r in result.results):
            break
        header = stamped(start, MOVING, nanosec=header.stamp.nanosec + 1)  # a new frame
    fraction = header.stamp.nanosec / 1e9
    for r in result.results:
        assert r.has_target_point, f'{r.query}:\n{node.log()[-2000:]}'
        want = in_map(point(r.point), (fraction, 0.0, 0.5))  # not the latest (x = 1)
        assert np.allclose(point(r.target_point.point), want, atol=TOLERANCE), (r.query, want)


@needs_tf2
def test_extrapolation_and_an_unknown_frame_give_no_target_point_and_a_warning(client, node):
    start = next_second()
    client.tf.sendTransform(transform(MOVING, stamped(start, MOVING).stamp, (0.0, 0.0, 0.5)))
    time.sleep(0.5)
    # 30 s after its last transform. tf2 words it 'extrapolation into the future' when the
    # buffer holds two or more transforms of the frame, and 'would require extrapolation at
    # time ..., but only time ... is in the buffer' when it holds one (the earlier tests'
    # were pruned: the buffer keeps 10 s), which depends on how long those tests took.
    for frame_id, text in (
        (MOVING, 'xtrapolation'),
        ('nowhere', "'nowhere'"),
    ):
        mark = len(node.log())
        deadline = time.monotonic() + 20
        while True:  # one warning of a kind per second: send until it is logged
            result = send(client, stamped(start + 30, frame_id, nanosec=next_second() % 10**9))
            assert not any(r.has_target_point for r in result.results)
            if 'no transform' in node.log()[mark:] and text in node.log()[mark:]:
                break
            assert time.monotonic() < deadline, f'no warning {text!r}:\n{node.log()[mark:]}'
    # And it keeps serving, with target points where the transform is known.
    result = send_with_points(client, STATIC)
    assert all(r.has_target_point for r in result.results)


def locate(client, request, frame_id=STATIC):
    """~/locate, answered by the next frame: frames are sent until it answers."""
    future = client.locate_client.call_async(request)
    deadline = time.monotonic() + 30
    while not future.done():
        assert time.monotonic() < deadline, 'no answer from ~/locate'
        send(client, stamped(next_second(), frame_id))
    return future.result()


@needs_tf2
def test_locate_gives_its_point_in_the_frame_asked_for(client, node):
    assert client.locate_client.wait_for_service(timeout_sec=10)
    for _ in range(3):  # a frame whose depth was lost has no point: ask again
        answer = locate(client, Locate.Request(query='red', timeout=10.0, frame='map'))
        if answer.has_point:
            break
    assert answer.has_point, answer.message
    assert answer.point.header.frame_id == 'map'
    frame = client.result_for(answer.header)
    (red,) = [r for r in frame.results if r.query == 'red']
    assert np.allclose(point(answer.point.point), point(red.target_point.point), atol=TOLERANCE)
    answer = locate(client, Locate.Request(query='red', timeout=10.0, frame='nowhere'))
    assert not answer.has_point and 'no transform' in answer.message, answer.message


def gem_ros_cli(*args: str) -> str:
    """`gem-ros ARGS` as a user runs it (its stdout), bounded."""
    done = subprocess.run(
        [sys.executable, '-m', 'gem_ros.cli', *args], env=source_env(), cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def recall(client, query):
    assert client.recall_client.wait_for_service(timeout_sec=10)
    return client.call(client.recall_client, Recall.Request(query=query))


@needs_tf2
def test_recall_answers_where_a_query_was_seen_after_it_stopped_being_asked(client, node):
    seen = [send_with_points(client, STATIC) for _ in range(3)]
    reds = [point(r.target_point.point) for f in seen for r in f.results if r.query == 'red']
    response = client.call(client.set_queries_client, SetQueries.Request(queries=['green']))
    assert response.success, response.message
    try:
        send(client, stamped(next_second(), STATIC))  # green's frames: red is not asked
        answer = recall(client, 'red')
        assert answer.seen, answer.message
        assert answer.point.header.frame_id == 'map' and answer.places.header.frame_id == 'map'
        assert answer.sightings >= 3, answer
        # The place is the running mean of its sightings (radius 0.15 m merges them all: the
        # same box each time).
        assert np.linalg.norm(point(answer.point.point) - np.mean(reds, axis=0)) < 0.05
        assert answer.age > 0 and 0 < answer.confidence <= 1
        assert len(answer.places.poses) == len(answer.place_ages) == len(answer.place_sightings)
        assert answer.place_cameras[0] == ''  # the single, unnamed camera
        never = recall(client, 'purple elephant')
        assert not never.seen and 'not seen' in never.message
        # The same from a shell.
        printed = json.loads(gem_ros_cli('recall', 'red'))
        assert printed['seen'] and printed['frame_id'] == 'map', printed
        assert np.allclose(printed['point'], point(answer.point.point), atol=0.05)
        assert len(printed['places']) == len(answer.places.poses)
        markers = client.wait_for(
            lambda: [
                m for a in client.memory_markers for m in a.markers if m.text.startswith('red')
            ],
            'a memory marker of red',
        )
        assert markers[-1].header.frame_id == 'map'
    finally:  # the next tests ask for red and blue
        response = client.call(
            client.set_queries_client, SetQueries.Request(queries=['red', 'blue'])
        )
        assert response.success, response.message


@needs_tf2
def test_the_memory_file_is_read_by_the_next_node_and_refused_for_another_frame(
    client, node, memory_file, tmp_path
):
    send_with_points(client, STATIC)
    before = recall(client, 'red')
    assert before.seen, before.message
    code, _ = node.interrupt(signal.SIGINT)  # its close writes the file
    assert code == 0, node.log()[-2000:]
    assert memory_file.exists(), node.log()[-2000:]
    again = NodeProcess(tmp_path / 'again.log', *node_args(memory_file))
    try:
        again.wait_for_log('places read')
        answer = recall(client, 'red')
        assert answer.seen, answer.message
        assert answer.sightings == before.sightings
        assert np.allclose(point(answer.point.point), point(before.point.point), atol=1e-6)
    finally:
        again.stop()
    odom = NodeProcess(tmp_path / 'odom.log', *node_args(memory_file, memory_frame='odom'))
    try:
        log = odom.wait_for_log('memory_file not used')
        assert "holds places in frame 'map', not memory_frame 'odom'" in log
        assert memory_file.with_name(memory_file.name + '.rejected').exists()
        assert not recall(client, 'red').seen
    finally:
        odom.stop()


def test_target_and_memory_frames_without_tf2_are_refused_with_the_reason(tmp_path):
    # Where tf2_ros is installed, a package of that name that fails to import stands for
    # its absence (it comes first on the path); where it is not, this is the real thing.
    hidden = tmp_path / 'no_tf2'
    (hidden / 'tf2_ros').mkdir(parents=True)
    (hidden / 'tf2_ros' / '__init__.py').write_text(
        "raise ImportError('tf2_ros hidden by the test')\n"
    )
    path = os.pathsep.join([str(hidden), str(REPO)])
    process = NodeProcess(
        tmp_path / 'node.log', *node_args(tmp_path / 'm.json'), env={'PYTHONPATH': path}
    )
    try:
        process.proc.wait(timeout=60)
    finally:
        process.stop()
    log = process.log()
    assert process.proc.returncode == 2, log[-2000:]
    assert 'target_frame and memory_frame need TF: tf2_ros is not importable' in log, log
    assert 'ros-tf2/install.sh' in log


@needs_tf2
def test_every_camera_feeds_the_one_memory(client, tmp_path):
    """Two cameras of one node, at two places in the map, each seeing its red box: one memory
    with two places of red, each saying which camera saw it."""
    from sensor_msgs.msg import CameraInfo, Image

    from gem_ros.msg import GemResult

    LEFT_AT = (-1.0, 0.0, 0.5)
    origins = {'front': (STATIC, STATIC_AT), 'left': ('left_optical', LEFT_AT)}
    # One latched message holds every static transform a later subscriber gets: both.
    forever = Header().stamp
    client.static_tf.sendTransform(
        [transform(STATIC, forever, STATIC_AT), transform('left_optical', forever, LEFT_AT)]
    )
    node = client.node
    pubs = {
        name: (
            node.create_publisher(Image, f'{name}/image', 10),
            node.create_publisher(Image, f'{name}/depth', 5),
            node.create_publisher(CameraInfo, f'{name}/camera_info', 5),
        )
        for name in origins
    }
    results = {name: [] for name in origins}
    for name in origins:
        node.create_subscription(
            GemResult, f'/gem_cams/{name}/results', client._keep(results[name]), 50
        )
    recall_cams = node.create_client(Recall, '/gem_cams/recall')
    process = NodeProcess(
        tmp_path / 'cams.log',
        *node_args(tmp_path / 'cams.json'),
        'cameras:=[front, left]',
        remaps=('__node:=gem_cams',),
    )
    try:
        process.wait_for_log('loaded model')
        deadline = time.monotonic() + 30
        while not all(p.get_subscription_count() for ps in pubs.values() for p in ps):
            assert time.monotonic() < deadline, 'camera topics not discovered'
            time.sleep(0.05)
        depth, box = wall_and_box()
        rgb = np.full((HEIGHT, WIDTH, 3), 170, np.uint8)
        rgb[box] = (200, 30, 30)
        for name, (frame_id, _) in origins.items():
            image_pub, depth_pub, info_pub = pubs[name]
            got = None
            for _ in range(8):  # best effort: until a frame of this camera got its points
                header = stamped(next_second(), frame_id)
                depth_pub.publish(depth_msg(depth, '32FC1', header))
                info_pub.publish(camera_info_msg(header))
                frame = image_msg(rgb, 'rgb8', frame_id=frame_id)
                frame.header = header
                image_pub.publish(frame)
                try:
                    got = client.wait_for(
                        lambda kept=results[name], header=header: next(
                            (r for r in kept if r.header == header), None
                        ),
                        f'a result of camera {name}',
                        timeout=5.0,
                    )
                except AssertionError:  # the frame (or its result) lost in transport
                    print(f'no result of camera {name} within 5 s: sending another frame')
                    continue
                if all(r.has_target_point for r in got.results):
                    break
            assert got is not None and all(r.has_target_point for r in got.results), process.log()[
                -2000:
            ]
        assert recall_cams.wait_for_service(timeout_sec=10)
        answer = client.call(recall_cams, Recall.Request(query='red'))
        assert answer.seen, answer.message
        assert sorted(answer.place_cameras) == ['front', 'left'], answer
        places = [point(pose.position) for pose in answer.places.poses]
        assert np.linalg.norm(places[0] - places[1]) > 1.0  # two places, 2 m apart
    finally:
        process.stop()
