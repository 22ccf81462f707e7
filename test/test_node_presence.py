"""Presence over DDS: the real node with the shipped scene CLIP, in its own process.

An absent query gives found=false, an empty mask, no 3D point and its rviz marker deleted;
`~/locate` answers from the next frame (found or not), times out cleanly without frames and
answers 20 concurrent calls without changing the active queries' results. Those run with
`hold:=false` (each frame decides); held presence, the node's default, is tested last: a
thing that leaves stays found for a frame, then is lost, and `~/locate` says the answer is
held.
"""

import time

import numpy as np
import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import Marker

import gem_ros.gem as gem
from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS
from gem_ros.eval.scenes import generate_scene
from gem_ros.msg import Heatmaps
from gem_ros.srv import Locate

from depth_scene import camera_info_msg, depth_msg
from ros_helpers import NodeProcess, RosClient, image_msg

try:  # not on PyPI: ../shared/ros-launch/install.sh (CI) or a ROS install brings it
    from vision_msgs.msg import Detection2DArray
except ImportError:
    Detection2DArray = None
pytestmark = pytest.mark.timeout(180)
SIZE = 224
K = np.array([[200.0, 0.0, 111.5], [0.0, 200.0, 111.5], [0.0, 0.0, 1.0]])
# Scenes of seed 7: [green, pink, blue], [pink], ..., [purple, red, pink]
rng = np.random.default_rng(7)
SCENES = [generate_scene(rng) for _ in range(4)]
WITH_RED, WITHOUT_RED = SCENES[3], SCENES[0]
KEEP_ALL = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE
)


def colours(scene):
    return {o.colour for o in scene.objects}


@pytest.fixture(scope='module')
def client():
    ros = RosClient()
    ros.add_depth()
    # Keep every request: a burst of 20 would overwrite each other in a depth-10 history.
    ros.locate = ros.node.create_client(Locate, '/gem/locate', qos_profile=KEEP_ALL)
    ros.detections, ros.heatmaps = [], []
    if Detection2DArray is not None:  # vision_msgs is optional (the launch bundle)
        ros.node.create_subscription(
            Detection2DArray, '/gem/detections', ros._keep(ros.detections), 50
        )
    ros.node.create_subscription(Heatmaps, '/gem/heatmaps', ros._keep(ros.heatmaps), 50)
    yield ros
    ros.close()


@pytest.fixture(scope='module')
def node(client, tmp_path_factory):
    process = NodeProcess(
        tmp_path_factory.mktemp('gem_node_presence') / 'node.log',
        f'model:={SCENE_MODEL}',
        f'pretrained:={SCENE_WEIGHTS}',
        'device:=cpu',
        f'input_size:={SIZE}',
        'queries:=[red, green]',
        'use_depth:=true',
        'publish_overlay:=false',
        'hold:=false',
    )
    try:
        process.wait_for_log('loaded model')
        client.wait_matched()
        assert client.locate.wait_for_service(timeout_sec=30)
        client.wait_depth_matched()
        yield process
    finally:
        process.stop()


def send(client, scene, depth=True):
    """Publish the scene (with a flat depth of 1 m) and return the node's result for it."""
    msg = image_msg(scene.image, 'rgb8', frame_id='camera')
    if depth:
        client.info_pub.publish(camera_info_msg(msg.header, (SIZE, SIZE), K))
        client.depth_pub.publish(depth_msg(np.ones((SIZE, SIZE)), '32FC1', msg.header))
        time.sleep(0.05)  # depth before colour: the pair is complete when the frame runs
    return client.publish_and_wait(msg), msg


def by_query(result):
    return {r.query: r for r in result.results}


def test_locate_without_frames_times_out_with_the_reason(node, client):
    answer = client.call(client.locate, Locate.Request(query='red', timeout=0.5))
    assert not answer.found and not answer.has_point
    assert 'no frame processed within 0.5 s' in answer.message
    assert 'no images received on /image' in answer.message


def test_absent_query_is_not_found_has_no_mask_point_or_marker(node, client):
    result, _ = send(client, WITH_RED)
    red, green = by_query(result)['red'], by_query(result)['green']
    assert 'red' in colours(WITH_RED) and 'green' not in colours(WITH_RED)
    assert red.found and red.confidence > 0.5 and red.area > 0 and red.has_point
    assert not green.found and green.confidence < 0.5
    assert green.area == 0 and green.bbox.width == 0 and not green.has_point
    assert not any(np.frombuffer(green.mask.data, np.uint8))
    assert (green.mask.width, green.mask.height) == (SIZE, SIZE)  # empty, not missing
    markers = client.wait_for(lambda: client.markers and client.markers[-1], 'markers')
    red_id = next(m.id for m in markers.markers if m.action == Marker.ADD)
    assert all(m.action == Marker.ADD for m in markers.markers)  # green: none

    client.markers.clear()
    result, _ = send(client, WITHOUT_RED)  # now red is absent, green present
    red, green = by_query(result)['red'], by_query(result)['green']
    assert not red.found and not red.has_point and red.area == 0
    assert green.found and green.has_point
    markers = client.wait_for(lambda: client.markers and client.markers[-1], 'markers')
    deleted = {(m.ns, m.id) for m in markers.markers if m.action == Marker.DELETE}
    assert {id_ for _, id_ in deleted} == {red_id}, markers


def test_locate_answers_from_the_next_frame(node, client):
    for query, scene in (('red', WITH_RED), ('orange', WITH_RED), ('purple', WITH_RED)):
        future = client.locate.call_async(Locate.Request(query=query, timeout=20.0))
        time.sleep(0.2)
        _, msg = send(client, scene)
        client.wait_for(future.done, f'the answer for {query!r}')
        answer = future.result()
        assert answer.header == msg.header, 'answered by another frame than the next one'
        assert answer.found == (query in colours(scene)), answer.message
        assert answer.has_point == answer.found
        if answer.found:
            assert answer.point.header == msg.header and answer.point.point.z == pytest.approx(
                1.0, abs=0.05
            )
            assert 0 <= answer.peak_x < SIZE and 0 <= answer.peak_y < SIZE


def test_twenty_concurrent_calls_are_answered_and_active_results_unchanged(node, client):
    before, _ = send(client, WITH_RED, depth=False)
    queries = ['red', 'orange', 'purple', 'pink', 'blue'] * 4
    futures = [client.locate.call_async(Locate.Request(query=q, timeout=30.0)) for q in queries]
    time.sleep(0.3)
    results = []
    deadline = time.monotonic() + 60
    while not all(f.done() for f in futures):
        assert time.monotonic() < deadline, f'{sum(not f.done() for f in futures)} unanswered'
        result, _ = send(client, WITH_RED, depth=False)
        results.append(result)
    for query, future in zip(queries, futures):
        answer = future.result()
        assert answer.found == (query in colours(WITH_RED)), (query, answer.message)
    # The active queries' results do not change with the extra queries asked alongside.
    for result in results:
        for a, b in zip(before.results, result.results):
            assert (a.query, a.found, a.area, a.peak_x, a.peak_y) == (
                b.query,
                b.found,
                b.area,
                b.peak_x,
                b.peak_y,
            )
            assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
        assert [r.query for r in result.results] == ['red', 'green']


def test_locate_refuses_a_blank_query_at_once(node, client):
    answer = client.call(client.locate, Locate.Request(query='   ', timeout=5.0))
    assert not answer.found and 'empty or blank query' in answer.message


def _stamped(items, header):
    return next((m for m in items if m.header == header), None)


@pytest.mark.skipif(Detection2DArray is None, reason='vision_msgs is not installed')
def test_detections_have_one_entry_per_found_query(node, client):
    result, msg = send(client, WITH_RED)
    array = client.wait_for(lambda: _stamped(client.detections, msg.header), 'detections')
    found = [r for r in result.results if r.found]
    assert [d.id for d in array.detections] == [r.query for r in found] == ['red']
    (det,), (red,) = array.detections, found
    (hypothesis,) = det.results
    assert hypothesis.hypothesis.class_id == 'red'
    assert hypothesis.hypothesis.score == pytest.approx(red.confidence, abs=1e-6)
    box = red.bbox
    assert (det.bbox.size_x, det.bbox.size_y) == (box.width, box.height)
    assert det.bbox.center.position.x == pytest.approx(box.x_offset + box.width / 2)
    assert det.bbox.center.position.y == pytest.approx(box.y_offset + box.height / 2)
    assert hypothesis.pose.pose.position == red.point  # the 3D point, camera frame


def test_heatmaps_are_the_models_patch_logits_of_the_frame(node, client):
    model = gem.load_model(str(SCENE_MODEL), str(SCENE_WEIGHTS), device='cpu', input_size=SIZE)
    expected = model.patch_logits(model.preprocess(WITH_RED.image), ['red', 'green'])[0]
    deadline = time.monotonic() + 30
    while not client.node.count_subscribers('/gem/heatmaps'):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the node sees the subscription: it asks the engine for the grids
    heat = None
    while heat is None:  # the first frame after subscribing may predate the request
        assert time.monotonic() < deadline, 'no heatmaps'
        _, msg = send(client, WITH_RED, depth=False)
        try:
            heat = client.wait_for(
                lambda header=msg.header: _stamped(client.heatmaps, header), 'maps', 2.0
            )
        except AssertionError:
            continue
    assert list(heat.queries) == ['red', 'green']
    for grid, image in zip(expected.numpy(), heat.maps):
        assert (image.encoding, image.height, image.width) == ('32FC1', 14, 14)
        got = np.frombuffer(bytes(image.data), np.float32).reshape(14, 14)
        np.testing.assert_allclose(got, grid, atol=1e-5)


def test_patch_masks_are_the_grid_and_none_is_empty(node, client):
    try:
        for mask_format, size in (('patch', 14), ('none', 0)):
            assert client.set_parameters(mask_format=mask_format).successful
            result, _ = send(client, WITH_RED, depth=False)
            red, green = by_query(result)['red'], by_query(result)['green']
            assert (red.mask.width, red.mask.height) == (size, size)
            assert len(red.mask.data) == size * size
            if size:
                assert any(red.mask.data) and not any(green.mask.data)
    finally:
        client.set_parameters(mask_format='full')


def test_held_presence_holds_a_thing_that_left_for_a_frame_then_loses_it(node, client):
    """The node's default (hold: true): red seen on 3 frames, then gone. Its confidence falls
    from ~1 to ~0: the average (window 3) is at ~0.5, over the lower threshold 0.4, so the
    first frame without it still says found (held, with that frame's mask wherever its map
    peaks); the second says absent. Green, absent on red's frames and there from the first
    frame without red on, is found one frame late: its average reaches the upper threshold
    (0.6) on the second.
    Per frame (hold: false) both change at once, as the tests above show."""
    assert client.set_parameters(hold=True).successful
    try:
        for _ in range(3):
            result, _ = send(client, WITH_RED)
            assert by_query(result)['red'].found
        result, _ = send(client, WITHOUT_RED)
        red, green = by_query(result)['red'], by_query(result)['green']
        assert red.found and red.area > 0 and red.confidence < 0.4, red
        assert not green.found and green.confidence > 0.6 and green.area == 0, green
        future = client.locate.call_async(Locate.Request(query='red', timeout=20.0))
        time.sleep(0.2)
        result, msg = send(client, WITHOUT_RED)
        client.wait_for(future.done, 'the answer for red')
        answer = future.result()
        assert answer.header == msg.header
        assert not by_query(result)['red'].found and by_query(result)['green'].found
        assert answer.held and not answer.found and 'held over frames' in answer.message, answer
        # A question for a query that is not active is one frame's answer.
        future = client.locate.call_async(Locate.Request(query='pink', timeout=20.0))
        time.sleep(0.2)
        send(client, WITHOUT_RED)
        client.wait_for(future.done, 'the answer for pink')
        assert not future.result().held and future.result().found
    finally:
        assert client.set_parameters(hold=False).successful


def test_locate_across_cameras_answers_from_the_camera_that_sees_the_thing(client, tmp_path):
    """Two cameras, presence on: only `left` sees red. ~/locate for any camera answers with
    left's frame (found, its confidence), though front's frame comes first. max_rate_hz
    spaces the cycles, so that each takes a frame of both cameras."""
    from sensor_msgs.msg import Image

    process = NodeProcess(
        tmp_path / 'node.log',
        f'model:={SCENE_MODEL}',
        f'pretrained:={SCENE_WEIGHTS}',
        'device:=cpu',
        f'input_size:={SIZE}',
        'cameras:=[front, left]',
        'queries:=[green]',
        'max_rate_hz:=2.0',
        'publish_overlay:=false',
        'hold:=false',
    )
    locate = client.node.create_client(Locate, '/gem/locate', qos_profile=KEEP_ALL)
    images = {c: client.node.create_publisher(Image, f'{c}/image', 10) for c in ('front', 'left')}
    scenes = {'front': WITHOUT_RED, 'left': WITH_RED}
    try:
        process.wait_for_log('loaded model')
        assert locate.wait_for_service(timeout_sec=30)
        client.wait_for(
            lambda: all(p.get_subscription_count() for p in images.values()), 'the cameras'
        )

        def send_both():  # front's frame first
            for camera in ('front', 'left'):
                images[camera].publish(
                    image_msg(scenes[camera].image, 'rgb8', frame_id=f'{camera}_optical')
                )
                time.sleep(0.02)
            time.sleep(0.06)

        warm = time.monotonic() + 1.5  # cycles paced by max_rate_hz, both cameras waiting
        while time.monotonic() < warm:
            send_both()
        for attempt in range(3):
            future = locate.call_async(Locate.Request(query='red', timeout=20.0))
            deadline = time.monotonic() + 30
            while not future.done():
                assert time.monotonic() < deadline, 'no answer from ~/locate'
                send_both()
            answer = future.result()
            assert answer.camera == 'left' and answer.found, (attempt, answer)
            assert answer.header.frame_id == 'left_optical', answer
    finally:
        client.node.destroy_client(locate)
        for publisher in images.values():
            client.node.destroy_publisher(publisher)
        process.stop()
