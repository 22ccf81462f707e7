"""gem_node pointing in 3D, end to end: image + depth + camera_info published from this
process, the node (tiny model) in its own, 3D points checked against the analytic
back-projection of the reported peak pixel; rviz markers checked for stable ids."""

import itertools
import time

import numpy as np
import pytest
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from gem_ros.geometry import scale_intrinsics
from gem_ros.ros.markers import LABELS_NS, POINTS_NS
from gem_ros.srv import SetQueries

from depth_scene import BOX_Z, HEIGHT, WALL_Z, WIDTH, K, camera_info_msg, depth_msg, wall_and_box
from ros_helpers import TINY_MODEL, NodeProcess, RosClient, image_msg

pytestmark = pytest.mark.timeout(180)
FRAME_ID = 'camera_color_optical_frame'
DEPTH_WINDOW = 4  # depth pixels
TOLERANCE = 0.01  # m
# Frames 10 s apart: far beyond sync_slop and the depth kept, so frames never share depth.
_seconds = itertools.count(50_000, 10)


@pytest.fixture(scope='module')
def client():
    ros = RosClient()
    ros.add_depth()
    yield ros
    ros.close()


@pytest.fixture(scope='module')
def node(client, tmp_path_factory):
    process = NodeProcess(
        tmp_path_factory.mktemp('gem_node_depth') / 'node.log',
        *TINY_MODEL,
        'queries:=[red, blue]',
        'input_size:=96',
        'use_depth:=true',
        'sync_slop:=0.05',
        f'depth_window:={DEPTH_WINDOW}',
        'publish_overlay:=false',
    )
    try:
        process.wait_for_log('loaded model')
        client.wait_matched()
        client.wait_depth_matched()
        yield process
    finally:
        process.stop()


def set_queries(client, *queries):
    response = client.call(client.set_queries_client, SetQueries.Request(queries=list(queries)))
    assert response.success, response.message


def scene_rgb():
    """The colour picture of the scene: a grey wall, a red box."""
    _, box = wall_and_box()
    rgb = np.full((HEIGHT, WIDTH, 3), 170, np.uint8)
    rgb[box] = (200, 30, 30)
    return rgb


def send(client, depth_m, encoding, depth_offset_s=0, info_size=(WIDTH, HEIGHT), K=K):
    """Publish depth + camera_info (stamped depth_offset_s after the frame), then the colour
    frame; return its result."""
    header = Header(frame_id=FRAME_ID)
    header.stamp.sec = next(_seconds)
    depth_header = Header(frame_id=FRAME_ID)
    depth_header.stamp.sec = header.stamp.sec + depth_offset_s
    client.depth_pub.publish(depth_msg(depth_m, encoding, depth_header))
    client.info_pub.publish(camera_info_msg(depth_header, info_size, K))
    frame = image_msg(scene_rgb(), 'rgb8', frame_id=FRAME_ID)
    frame.header = header
    return client.publish_and_wait(frame)


def send_valid(client, depth_m, encoding, **kwargs):
    """A frame with valid, synchronised depth. Depth travels best effort, like the image: a
    frame without any point (its depth lost or late) is sent again, with new stamps."""
    for _ in range(3):
        result = send(client, depth_m, encoding, **kwargs)
        if any(r.has_point for r in result.results):
            return result
    raise AssertionError('three frames with valid depth got no points')


def send_until_logged(client, node, text, depth_m, encoding, timeout=15.0, **kwargs):
    """Frames that must get no points, until the node logs `text`; the log since the first
    frame. Its warnings of one kind come at most once per second, and the previous test may
    have just used that second: sending for a while, not a number of frames (on Jazzy 50
    frames took under a second, and the line came after them)."""
    mark = len(node.log())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = send(client, depth_m, encoding, **kwargs)
        assert not any(r.has_point for r in result.results)
        if text in node.log()[mark:]:
            return node.log()[mark:]
    raise AssertionError(f'node did not log {text!r}:\n{node.log()[mark:][-3000:]}')


def check_points(result, colour_depth, scale=1):
    """Each point is the back-projection of its reported peak pixel, at the depth of the
    surface there (either surface where the window straddles the box's edge), times `scale`
    (the depth read with another unit)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    uniform = 0
    for r in result.results:
        assert r.has_point, r.query
        u, v, p = r.peak_x, r.peak_y, r.point
        assert min(abs(p.z - scale * BOX_Z), abs(p.z - scale * WALL_Z)) < scale * TOLERANCE, p
        assert abs(p.x - (u - cx) * p.z / fx) < TOLERANCE
        assert abs(p.y - (v - cy) * p.z / fy) < TOLERANCE
        reach = 2 * DEPTH_WINDOW + 1  # colour pixels, for depth down to half the size
        around = colour_depth[max(v - reach, 0) : v + reach + 1, max(u - reach, 0) : u + reach + 1]
        if np.ptp(around) == 0:
            uniform += 1
            assert abs(p.z - scale * colour_depth[v, u]) < scale * TOLERANCE
    return uniform


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_points_match_the_back_projection_of_the_peaks(client, node, encoding):
    set_queries(client, 'red', 'blue')
    depth, _ = wall_and_box()
    uniform = sum(check_points(send_valid(client, depth, encoding), depth) for _ in range(3))
    assert uniform > 0  # most peaks are away from the box's edges


def test_half_size_depth_is_scaled_and_announced(client, node):
    set_queries(client, 'red', 'blue')
    half = (WIDTH // 2, HEIGHT // 2)
    depth, _ = wall_and_box(half, scale_intrinsics(K, (WIDTH, HEIGHT), half))
    colour_depth, _ = wall_and_box()
    for _ in range(2):
        check_points(send_valid(client, depth, '16UC1'), colour_depth)
    assert node.log().count('depth is 320x240 but the colour image is 640x480') == 1


@pytest.mark.parametrize('encoding,bad', [('16UC1', 0.0), ('32FC1', np.nan)], ids=['zeros', 'nan'])
def test_invalid_depth_gives_no_points_without_errors(client, node, encoding, bad):
    set_queries(client, 'red', 'blue')
    depth = np.full((HEIGHT, WIDTH), bad)
    log = send_until_logged(client, node, 'no depth near the peak', depth, encoding)
    assert '[ERROR]' not in log and 'frame failed' not in log
    valid, _ = wall_and_box()
    check_points(send_valid(client, valid, encoding), valid)  # and the next frame is served


@pytest.mark.parametrize('entry', [(0, 0), (0, 2), (1, 1)], ids=['fx', 'cx', 'fy'])
def test_non_finite_intrinsics_give_no_point_and_a_warning(client, node, entry):
    set_queries(client, 'red', 'blue')
    depth, _ = wall_and_box()
    bad = K.copy()
    bad[entry] = np.nan
    log = send_until_logged(
        client, node, 'camera_info K has non-finite entries', depth, '16UC1', K=bad
    )
    assert '[ERROR]' not in log and 'frame failed' not in log
    check_points(send_valid(client, depth, '16UC1'), depth)  # good intrinsics: points again


def test_unsynchronised_depth_gives_a_warning_and_no_points(client, node):
    set_queries(client, 'red', 'blue')
    depth, _ = wall_and_box()
    log = send_until_logged(
        client,
        node,
        'the nearest depth is +1.000 s off the frame',
        depth,
        '16UC1',
        depth_offset_s=1,
    )
    assert 'depth not synchronised with the colour image' in log
    assert 'more than sync_slop (0.05 s)' in log


def test_marker_ids_stay_with_their_query(client, node):
    set_queries(client, 'red', 'blue')
    depth, _ = wall_and_box()
    ids = []
    for _ in range(3):
        markers = markers_of(client, send_valid(client, depth, '32FC1').header)
        ids.append(added(markers))
    assert ids[0].keys() == {'red', 'blue'} and ids[0]['red'] != ids[0]['blue']
    assert ids[1] == ids[0] and ids[2] == ids[0]

    set_queries(client, 'blue')  # red disappears: its markers are deleted
    markers = markers_of(client, send_valid(client, depth, '32FC1').header)
    assert {(m.ns, m.id) for m in markers if m.action == Marker.DELETE} == {
        (POINTS_NS, ids[0]['red']),
        (LABELS_NS, ids[0]['red']),
    }
    assert added(markers) == {'blue': ids[0]['blue']}


def added(markers):
    """query -> marker id of the labels added."""
    return {
        m.text.split(' (')[0]: m.id for m in markers if m.ns == LABELS_NS and m.action == Marker.ADD
    }


def markers_of(client, header):
    """The markers published for the frame with this header."""

    def find():
        return next(
            (
                array.markers
                for array in client.markers
                if array.markers and array.markers[0].header.stamp == header.stamp
            ),
            None,
        )

    return client.wait_for(find, 'the markers of the frame')


def test_depth_min_rejects_nearer_readings(client, node):
    """depth_min above every reading (box 1.2 m, wall 2 m): no points, and the reason names
    the range; back at its default, points again."""
    set_queries(client, 'red', 'blue')
    depth, _ = wall_and_box()
    assert client.set_parameters(depth_min=2.5).successful
    try:
        log = send_until_logged(client, node, 'out of range [2.5, 10] m', depth, '16UC1')
        assert '[ERROR]' not in log and 'frame failed' not in log
    finally:
        assert client.set_parameters(depth_min=0.1).successful
    check_points(send_valid(client, depth, '16UC1'), depth)


def test_depth_scale_overrides_the_encodings_unit(client, node):
    """16UC1 read as 2 mm per unit instead of 1: every point twice as far, on the same ray."""
    set_queries(client, 'red', 'blue')
    depth, _ = wall_and_box()
    assert client.set_parameters(depth_scale=0.002).successful
    try:
        result = send_valid(client, depth, '16UC1')
    finally:
        assert client.set_parameters(depth_scale=0.0).successful
    check_points(result, depth, scale=2)
