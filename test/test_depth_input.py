"""DepthInput in a real rclpy node: depth + camera_info published by another node over DDS,
points for detections checked against the analytic back-projection."""

import itertools
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

import gem_ros.gem as gem
from gem_ros.geometry import scale_intrinsics
from gem_ros.ros.depth_input import DepthInput, DepthSettings, depth_msg_to_array
from gem_ros.ros.parameters import DEPTH_PARAMETERS

from depth_scene import (
    BOX_Z,
    HEIGHT,
    WALL_Z,
    WIDTH,
    K,
    box_pixel,
    camera_info_msg,
    depth_msg,
    expected,
    wall_and_box,
)
from ros_helpers import close_ros, shared_context

pytestmark = pytest.mark.timeout(60)
_namespaces = (f'/depth_test_{i}' for i in itertools.count())


class Rig:
    """A host node owning a DepthInput, and a camera node publishing depth + camera_info."""

    def __init__(self, **parameters):
        self.context = shared_context()  # a participant destroyed mid-run can hang
        namespace = next(_namespaces)
        self.host = rclpy.create_node(
            'host',
            namespace=namespace,
            context=self.context,
            parameter_overrides=[
                Parameter(name, value=value) for name, value in parameters.items()
            ],
        )
        for spec in DEPTH_PARAMETERS:
            self.host.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.depth = DepthInput(self.host)
        self.settings = DepthSettings(
            **{
                name: self.host.get_parameter(name).value
                for name in DepthSettings.__dataclass_fields__
            }
        )
        self.camera = rclpy.create_node('camera', namespace=namespace, context=self.context)
        self.depth_pub = self.camera.create_publisher(Image, 'depth', 5)
        self.info_pub = self.camera.create_publisher(CameraInfo, 'camera_info', 5)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.host)
        self.executor.add_node(self.camera)
        self.stamps = itertools.count(100)
        deadline = time.monotonic() + 20
        while not (
            self.depth_pub.get_subscription_count() and self.info_pub.get_subscription_count()
        ):
            assert time.monotonic() < deadline, 'depth subscriptions not discovered'
            self.executor.spin_once(timeout_sec=0.05)

    def header(self, seconds=None, frame_id='camera_color_optical_frame'):
        header = Header(frame_id=frame_id)
        header.stamp.sec = next(self.stamps) if seconds is None else seconds
        return header

    def publish(self, depth_m, encoding, header, info_size=(WIDTH, HEIGHT)):
        self.depth_pub.publish(depth_msg(depth_m, encoding, header))
        self.info_pub.publish(camera_info_msg(header, info_size))

    def points_when(self, ready, header, detections, colour_size=(WIDTH, HEIGHT), timeout=10.0):
        """points_for(...) once ready(points) holds, spinning meanwhile (delivery takes a
        moment); fails after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.executor.spin_once(timeout_sec=0.05)
            points = self.depth.points_for(header, colour_size, detections, self.settings)
            if ready(points):
                return points
            assert time.monotonic() < deadline, f'not ready within {timeout} s: {points}'

    def close(self):
        self.executor.shutdown()
        close_ros('depth Rig', None, self.host, self.camera)


@pytest.fixture
def rig():
    rigs = []

    def make(**parameters):
        rigs.append(Rig(use_depth=True, **parameters))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def detection(query, u, v, mask):
    return gem.Detection(
        query=query,
        score=0.3,
        peak_x=u,
        peak_y=v,
        bbox=(0, 0, 0, 0),
        area=int(mask.sum()),
        mask=mask,
    )


def scene_detections(mask_size=(WIDTH, HEIGHT)):
    _, box = wall_and_box(mask_size)
    u, v = (round(c) for c in box_pixel(-0.1, 0.05))
    return [detection('box', u, v, box), detection('wall', 30, 400, ~box)], [BOX_Z, WALL_Z]


def all_points(points):
    return all(p['has_point'] for p in points)


def assert_points(points, detections, depths):
    for p, d, z in zip(points, detections, depths):
        got = (p['point'].x, p['point'].y, p['point'].z)
        assert np.linalg.norm(np.subtract(got, expected(d.peak_x, d.peak_y, z))) < 0.01
        assert not p['has_target_point']


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_points_match_the_back_projection(rig, encoding):
    r = rig()
    depth, _ = wall_and_box()
    header = r.header()
    r.publish(depth, encoding, header)
    detections, depths = scene_detections()
    assert_points(r.points_when(all_points, header, detections), detections, depths)


def test_the_depth_nearest_the_frame_within_slop_is_used(rig):
    r = rig(sync_slop=0.05)
    depth, _ = wall_and_box()
    far = r.header()
    r.publish(depth + 1.0, '32FC1', far)  # the whole scene 1 m further, 1 s later
    frame = r.header()
    near = Header(frame_id=frame.frame_id)
    near.stamp.sec, near.stamp.nanosec = frame.stamp.sec, 30_000_000  # 30 ms after the frame
    r.publish(depth, '32FC1', near)
    detections, depths = scene_detections()
    points = r.points_when(lambda p: all_points(p) and p[0]['point'].z < 1.5, frame, detections)
    assert_points(points, detections, depths)


def test_unsynchronised_depth_gives_no_points_and_a_warning(rig, capfd):
    r = rig(sync_slop=0.05)
    depth, _ = wall_and_box()
    frame = r.header()
    late = r.header()  # 1 s after the frame
    r.publish(depth, '16UC1', late)
    detections, _ = scene_detections()

    log = []

    def warned(points):
        assert not any(p['has_point'] for p in points)  # never a point from the wrong time
        log.append(capfd.readouterr().err)
        return 'depth not synchronised' in log[-1]

    r.points_when(warned, frame, detections)
    assert 'the nearest depth is +1.000 s off the frame, more than sync_slop (0.05 s)' in log[-1]
    assert all_points(r.depth.points_for(late, (WIDTH, HEIGHT), detections, r.settings))


def test_invalid_depth_gives_no_point_and_says_why(rig, capfd):
    r = rig()
    depth, box = wall_and_box()
    depth[box] = 0.0  # no readings on the box
    header = r.header()
    r.publish(depth, '16UC1', header)
    detections, _ = scene_detections()
    points = r.points_when(lambda p: p[1]['has_point'], header, detections)
    assert not points[0]['has_point']
    assert points[0]['point'].z == 0.0
    assert "no 3D point for 'box': no depth near the peak" in capfd.readouterr().err


def test_out_of_range_depth_gives_no_point(rig):
    r = rig(depth_max=1.5)  # the wall is 2 m away
    depth, _ = wall_and_box()
    header = r.header()
    r.publish(depth, '32FC1', header)
    detections, _ = scene_detections()
    points = r.points_when(lambda p: p[0]['has_point'], header, detections)
    assert not points[1]['has_point']


def test_half_size_depth_with_colour_camera_info(rig, capfd):
    r = rig()
    # Aligned depth at half the colour resolution, with the colour camera_info (640x480): K
    # is rescaled to the depth image and the peaks are scaled, once announced in the log.
    half = (WIDTH // 2, HEIGHT // 2)
    depth, _ = wall_and_box(half, scale_intrinsics(K, (WIDTH, HEIGHT), half))
    header = r.header()
    r.publish(depth, '16UC1', header, info_size=(WIDTH, HEIGHT))
    detections, depths = scene_detections()
    assert_points(r.points_when(all_points, header, detections), detections, depths)
    r.depth.points_for(header, (WIDTH, HEIGHT), detections, r.settings)
    assert capfd.readouterr().err.count('depth is 320x240 but the colour image is 640x480') == 1


def test_target_frame_without_transforms_is_announced_and_left_out(rig, capfd):
    # The node refuses this (no tf2_ros: test_node_tf.py); a DepthInput given no Transforms
    # still says so and gives camera points.
    r = rig(target_frame='base_link')
    assert "target_frame 'base_link' needs tf2_ros" in capfd.readouterr().err
    depth, _ = wall_and_box()
    header = r.header()
    r.publish(depth, '32FC1', header)
    detections, depths = scene_detections()
    assert_points(r.points_when(all_points, header, detections), detections, depths)


def test_depth_message_conversion():
    header = Header()
    depth, _ = wall_and_box()
    for encoding, want in [('16UC1', np.uint16(1200)), ('32FC1', np.float32(1.2))]:
        pixels = depth_msg_to_array(depth_msg(depth, encoding, header))
        assert pixels.shape == (HEIGHT, WIDTH) and pixels[240, 250] == want
    big = depth_msg(depth, '16UC1', header)
    big.is_bigendian = True
    big.data = np.frombuffer(big.data, np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
    assert depth_msg_to_array(big)[240, 250] == 1200
    padded = depth_msg(depth, '16UC1', header)  # rows padded by 6 bytes, as some drivers do
    rows = np.frombuffer(padded.data, np.uint8).reshape(HEIGHT, WIDTH * 2)
    padded.data = np.hstack([rows, np.full((HEIGHT, 6), 0xAB, np.uint8)]).tobytes()
    padded.step = WIDTH * 2 + 6
    np.testing.assert_array_equal(
        depth_msg_to_array(padded), depth_msg_to_array(depth_msg(depth, '16UC1', header))
    )
    truncated = depth_msg(depth, '32FC1', header)
    truncated.data = truncated.data[:-4]
    with pytest.raises(ValueError, match='truncated depth image'):
        depth_msg_to_array(truncated)
    with pytest.raises(ValueError, match="unsupported depth encoding 'rgb8'"):
        depth_msg_to_array(Image(encoding='rgb8', width=1, height=1, step=3, data=[0, 0, 0]))
