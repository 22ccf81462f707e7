"""A frame's geometry (gem_ros/frame_result.py): each TF frame looked up at most once per
frame, whoever asks (the target points, ~/locate, the memory), failures included."""

import pytest

from gem_ros.frame_result import FrameGeometry
from gem_ros.geometry import TransformUnavailable

QUARTER_TURN_Z = (0.0, 0.0, 2**-0.5, 2**-0.5)  # x -> y


def test_each_tf_frame_is_looked_up_once_per_frame_and_a_failure_is_kept():
    asked = []

    def lookup(tf_frame):
        asked.append(tf_frame)
        if tf_frame == 'moon':
            raise TransformUnavailable('no transform to moon')
        return (1.0, 2.0, 3.0), QUARTER_TURN_Z

    geometry = FrameGeometry('camera', [(1.0, 0.0, 0.0), None], lookup=lookup)
    assert geometry.point_in(0, 'map') == pytest.approx((1.0, 3.0, 3.0))
    assert geometry.point_in(0, 'map') == pytest.approx((1.0, 3.0, 3.0))
    assert geometry.point_in(1, 'map') is None
    for _ in range(2):
        with pytest.raises(TransformUnavailable, match='moon'):
            geometry.pose_to('moon')
    assert geometry.point_in(0, 'camera') == (1.0, 0.0, 0.0)  # its own frame: no lookup
    assert asked == ['map', 'moon']


def test_without_tf_a_frame_asked_for_says_so():
    geometry = FrameGeometry('camera', [(1.0, 0.0, 0.0)])
    with pytest.raises(TransformUnavailable, match='tf2_ros'):
        geometry.point_in(0, 'map')
