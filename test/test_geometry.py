"""Peak -> 3D point on synthetic, physically consistent depth: a wall, a box, a tilted floor,
seen by a 640x480 pinhole camera; checked against the analytic back-projection."""

import math

import numpy as np
import pytest

from gem_ros.geometry import (
    apply_transform,
    back_project,
    depth_to_metres,
    peak_to_point,
    scale_intrinsics,
    scale_pixel,
)

from depth_scene import (
    BOX_Z,
    HEIGHT,
    WALL_Z,
    WIDTH,
    K,
    box_pixel,
    encode,
    expected,
    rays,
    wall_and_box,
)

TOLERANCE = 0.01  # m


def assert_close(point, want):
    assert point is not None
    assert np.linalg.norm(np.subtract(point, want)) < TOLERANCE, (point, want)


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_points_on_the_wall_and_the_box(encoding):
    depth, box = wall_and_box()
    metres = depth_to_metres(encode(depth, encoding), encoding, None)
    u_box, v_box = (round(c) for c in box_pixel(-0.1, 0.0))
    cases = [
        ((u_box, v_box), BOX_Z),  # the middle of the box
        ((40, 30), WALL_Z),  # the wall
        ((600, 460), WALL_Z),  # next to the image corner: the window is clipped
        ((WIDTH - 1, HEIGHT - 1), WALL_Z),  # the corner pixel itself
    ]
    for (u, v), z in cases:
        point, reason = peak_to_point(
            metres, (u, v), box if z == BOX_Z else ~box, K, (WIDTH, HEIGHT)
        )
        assert reason == ''
        assert_close(point, expected(u, v, z))


def test_the_mask_keeps_the_wall_out_at_the_box_edge():
    depth, box = wall_and_box()
    # The box's top right corner pixel: most of the window around it sees the wall.
    rows, cols = np.nonzero(box)
    u, v = int(cols.max()), int(rows.min())
    with_mask, _ = peak_to_point(depth.astype(np.float32), (u, v), box, K, (WIDTH, HEIGHT))
    assert_close(with_mask, expected(u, v, BOX_Z))
    window_only, _ = peak_to_point(depth.astype(np.float32), (u, v), None, K, (WIDTH, HEIGHT))
    assert_close(window_only, expected(u, v, WALL_Z))


def test_a_mask_with_too_few_readings_falls_back_to_the_window():
    depth, _ = wall_and_box()
    depth[:, :100] = BOX_Z  # a strip nearer than the wall left of column 100
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[240, 96:98] = True  # two strip pixels only: too few to trust
    u, v = 100, 240  # window columns 95..105: 5 strip, 6 wall columns
    point, reason = peak_to_point(depth.astype(np.float32), (u, v), mask, K, (WIDTH, HEIGHT))
    assert reason == ''
    assert_close(point, expected(u, v, WALL_Z))  # the window's median, not the mask's


def test_tilted_floor_plane():
    # A floor 1 m below the camera, seen at a downward tilt: depth grows towards the horizon.
    r = rays((WIDTH, HEIGHT), K)
    pitch = math.radians(20)
    normal = np.array([0.0, math.cos(pitch), math.sin(pitch)])  # world down, camera coordinates
    t = 1.0 / (r @ normal)
    depth = np.where(t > 0, t, 0.0)  # rays above the horizon never hit the floor
    metres = depth_to_metres(encode(depth, '32FC1'), '32FC1', None)
    for u, v in [(320, 400), (100, 300), (500, 470)]:
        point, reason = peak_to_point(metres, (u, v), None, K, (WIDTH, HEIGHT))
        assert reason == ''
        assert_close(point, expected(u, v, depth[v, u]))
        assert abs(float(np.dot(point, normal)) - 1.0) < TOLERANCE  # on the floor


@pytest.mark.parametrize('depth_size', [(320, 240), (1280, 960), (480, 360)])
def test_depth_of_another_size_is_sampled_at_the_scaled_peak(depth_size):
    depth_K = scale_intrinsics(K, (WIDTH, HEIGHT), depth_size)
    depth, _ = wall_and_box(depth_size, depth_K)  # the same scene at the depth resolution
    _, colour_box = wall_and_box()
    metres = depth_to_metres(encode(depth, '16UC1'), '16UC1', None)
    u_box, v_box = (round(c) for c in box_pixel(0.0, 0.1))
    for (u, v), z in [((u_box, v_box), BOX_Z), ((600, 40), WALL_Z)]:
        mask = colour_box if z == BOX_Z else ~colour_box
        point, reason = peak_to_point(metres, (u, v), mask, depth_K, (WIDTH, HEIGHT))
        assert reason == ''
        assert_close(point, expected(u, v, z))


def test_scaled_pixel_and_intrinsics_keep_the_ray():
    small = scale_intrinsics(K, (WIDTH, HEIGHT), (320, 240))
    assert small[0, 0] == pytest.approx(262.5) and small[0, 2] == pytest.approx(159.5)
    for uv in [(0, 0), (319.5, 239.5), (639, 479), (123, 456)]:
        scaled = scale_pixel(uv, (WIDTH, HEIGHT), (320, 240))
        assert back_project(*scaled, 2.0, small) == pytest.approx(back_project(*uv, 2.0, K))
    assert scale_pixel((0, 0), (WIDTH, HEIGHT), (320, 240)) == (-0.25, -0.25)


@pytest.mark.parametrize(
    'encoding,bad,why',
    [
        ('16UC1', 0, 'no depth near the peak: 0 of 121 readings'),
        ('32FC1', np.nan, 'no depth near the peak: 0 of 121 readings'),
        ('32FC1', np.inf, 'no depth near the peak: 0 of 121 readings'),
        ('32FC1', 0.05, 'out of range [0.1, 10] m (median 0.050 m'),
        ('32FC1', 25.0, 'out of range [0.1, 10] m (median 25.000 m'),
        ('16UC1', 25.0, 'out of range [0.1, 10] m (median 25.000 m'),
    ],
)
def test_invalid_depth_near_the_peak_gives_no_point_and_a_reason(encoding, bad, why):
    depth, box = wall_and_box()
    depth[200:280, 300:340] = bad
    metres = depth_to_metres(encode(depth, encoding), encoding, None)
    point, reason = peak_to_point(metres, (320, 240), box, K, (WIDTH, HEIGHT))
    assert point is None
    assert why in reason
    # Valid depth elsewhere in the same image still gives points.
    assert peak_to_point(metres, (40, 30), ~box, K, (WIDTH, HEIGHT))[0] is not None


def test_uncalibrated_camera_info_gives_no_point():
    depth, box = wall_and_box()
    point, reason = peak_to_point(
        depth.astype(np.float32), (320, 240), box, np.zeros((3, 3)), (WIDTH, HEIGHT)
    )
    assert point is None and 'no intrinsics' in reason


@pytest.mark.parametrize('entry', [(0, 0), (0, 2), (1, 1), (1, 2), (0, 1)])
@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_intrinsics_give_no_point(entry, bad):
    depth, box = wall_and_box()
    K_bad = K.copy()
    K_bad[entry] = bad
    point, reason = peak_to_point(depth.astype(np.float32), (320, 240), box, K_bad, (WIDTH, HEIGHT))
    assert point is None and 'non-finite' in reason


def test_depth_units():
    raw = np.array([[0, 1, 1500, 65535]], np.uint16)
    for encoding in ('16UC1', 'mono16'):
        got = depth_to_metres(raw, encoding, None)
        assert got.dtype == np.float32
        assert np.isnan(got[0, 0])
        np.testing.assert_allclose(got[0, 1:], [0.001, 1.5, 65.535], rtol=1e-6)
    floats = np.array([[0.0, np.nan, np.inf, -1.0, 1.25]], np.float32)
    got = depth_to_metres(floats, '32FC1', None)
    assert np.isnan(got[0, :4]).all() and got[0, 4] == np.float32(1.25)
    # depth_scale overrides the encoding's unit: e.g. a sensor in 0.1 mm steps.
    np.testing.assert_allclose(depth_to_metres(raw, '16UC1', 0.0001)[0, 2], 0.15, rtol=1e-6)
    with pytest.raises(ValueError, match="'8UC1' has no known unit"):
        depth_to_metres(raw.astype(np.uint8), '8UC1', None)
    assert depth_to_metres(raw.astype(np.uint8), '8UC1', 0.05)[0, 1] == np.float32(0.05)


def test_apply_transform():
    quarter_turn_about_z = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    got = apply_transform((1.0, 0.0, 0.5), (0.1, 0.2, 0.3), quarter_turn_about_z)
    assert got == pytest.approx((0.1, 1.2, 0.8))
    assert apply_transform((1.0, 2.0, 3.0), (0, 0, 0), (0, 0, 0, 1)) == pytest.approx((1, 2, 3))
