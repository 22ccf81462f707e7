"""The node's one TF buffer: transforms at a frame's stamp, each lookup bounded in time.

    reason = tf2_missing()             # None, or why target_frame / memory_frame cannot work
    tf = Transforms(node, timeout_s)   # subscribes /tf and /tf_static (the node's executor)
    pose = tf.lookup('map', 'camera_optical', header.stamp)   # (translation, xyzw) or raises

tf2_ros is not on PyPI: scripts/setup.sh installs it from ../shared/ros-tf2 (the folder in
GEM_ROS_TF2_BUNDLE otherwise); on a robot it is the ROS installation's (ros-<distro>-tf2-ros).
A lookup interpolates between the transforms around the stamp, waiting at most `timeout_s`
for them to arrive (TF is often a little behind the images): the worker thread never waits on
TF longer than that. Extrapolation, an unknown frame or a disconnected tree raise
TransformUnavailable with tf2's reason.
"""

from __future__ import annotations

import importlib

from gem_ros.geometry import TransformUnavailable

__all__ = ['INSTALL_HINT', 'TransformUnavailable', 'Transforms', 'tf2_missing']

INSTALL_HINT = (
    'install tf2_ros: `bash ../shared/ros-tf2/install.sh VENV` (scripts/setup.sh does this '
    'where the bundle is), or ros-$ROS_DISTRO-tf2-ros in a ROS installation'
)


def tf2_missing():
    """None when tf2_ros (and tf2_geometry_msgs' message support) imports, else why not."""
    try:
        importlib.import_module('tf2_ros')
    except ImportError as exc:
        return f'tf2_ros is not importable ({exc}); {INSTALL_HINT}'
    return None


class Transforms:
    def __init__(self, node, timeout_s: float):
        import tf2_ros  # noqa: PLC0415 - optional: only a node that asks for TF needs it
        from rclpy.duration import Duration

        self._tf2 = tf2_ros
        self.timeout_s = timeout_s
        self._timeout = Duration(seconds=timeout_s)
        self.buffer = tf2_ros.Buffer()
        # No thread of its own: /tf arrives on the node's executor, like every callback.
        self._listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)

    def lookup(self, target: str, source: str, stamp) -> tuple[tuple, tuple]:
        """(translation, rotation xyzw) taking points in `source` to `target` at `stamp` (a
        builtin_interfaces/Time); TransformUnavailable after at most timeout_s."""
        from rclpy.time import Time

        try:
            transform = self.buffer.lookup_transform(
                target, source, Time.from_msg(stamp), self._timeout
            ).transform
        except self._tf2.TransformException as exc:
            raise TransformUnavailable(
                f'no transform {source!r} -> {target!r} at {stamp.sec}.{stamp.nanosec:09d}: '
                f'{type(exc).__name__}: {exc}'
            ) from exc
        t, q = transform.translation, transform.rotation
        return (t.x, t.y, t.z), (q.x, q.y, q.z, q.w)

    def close(self) -> None:
        self._listener.unregister()
