"""The node's depth input: depth + camera_info, paired by stamp, giving detections 3D points.

    depth = DepthInput(node)           # when the use_depth parameter is true
    geometry = depth.measure(image_msg.header, (width, height), detections, settings, lookup)
    fields = depth.fields(geometry, image_msg.header, len(detections))
    QueryResult(..., **fields[i])     # has_point, point, has_target_point, target_point

Depth and camera_info are synchronised with each other as they arrive; the pairs of the last
HISTORY_S seconds are kept, and each colour frame takes the pair nearest its stamp, when
that is within sync_slop (the colour frame comes from the node's own subscription, which
keeps only the newest frame, so the lookup happens once the frame has been processed).
Points are in the colour image's frame (header.frame_id): the depth must be aligned to it.
With `target_frame` they are also given in that TF frame, through the geometry's lookup (the
node's Transforms, gem_ros/ros/transforms.py: at the frame's stamp, the wait bounded by
tf_timeout), looked up once per frame for every reader.
"""

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from gem_ros.frame_result import FrameGeometry
from gem_ros.geometry import (
    DEPTH_ENCODINGS,
    TransformUnavailable,
    depth_to_metres,
    peak_to_point,
    scale_intrinsics,
)
from gem_ros.ros.sync import message_filters, stamp_ns, subscribe_synchronised

HISTORY_S = 3.0  # how far back (stamps) depth is kept for frames still being processed
HISTORY_MAX = 100  # pairs, whatever their stamps
LOG_PERIOD_S = 1.0


def depth_msg_to_array(msg: Image) -> np.ndarray:
    """The [height, width] readings of a one-channel depth image, in its own units."""
    code = DEPTH_ENCODINGS.get(msg.encoding, (None,))[0]
    if code is None:
        raise ValueError(
            f'unsupported depth encoding {msg.encoding[:40]!r} '
            f"(supported: {', '.join(DEPTH_ENCODINGS)})"
        )
    dtype = np.dtype(('>' if msg.is_bigendian else '<') + code)
    if msg.width == 0 or msg.height == 0 or msg.step < msg.width * dtype.itemsize:
        raise ValueError(f'bad depth image size {msg.width}x{msg.height}, step {msg.step}')
    if len(msg.data) < msg.height * msg.step:
        raise ValueError(
            f'truncated depth image: {len(msg.data)} bytes, expected {msg.height * msg.step}'
        )
    if msg.step == msg.width * dtype.itemsize:  # unpadded rows: a view of the message, no copy
        return np.frombuffer(msg.data, dtype, count=msg.height * msg.width).reshape(
            msg.height, msg.width
        )
    rows = np.frombuffer(msg.data, np.uint8, count=msg.height * msg.step)
    rows = rows.reshape(msg.height, msg.step)[:, : msg.width * dtype.itemsize]
    return rows.copy().view(dtype).reshape(msg.height, msg.width)  # padded: realign once


def depth_view(depth_msg: Image, info: CameraInfo, depth_scale: float = 0.0) -> tuple:
    """(depth [h, w] in metres, K of the depth image's pixels): what a frame's geometry sees
    (FrameGeometry.view), for the node and `gem-ros bag --map` alike. K is camera_info's,
    rescaled when camera_info states another image size (colour camera_info with a half-size
    aligned depth). ValueError for a depth image that cannot be read."""
    depth_m = depth_to_metres(
        depth_msg_to_array(depth_msg), depth_msg.encoding, depth_scale or None
    )
    K = np.array(info.k, dtype=np.float64).reshape(3, 3)
    depth_size = (depth_msg.width, depth_msg.height)
    info_size = (info.width, info.height)
    if 0 not in info_size and info_size != depth_size:
        K = scale_intrinsics(K, info_size, depth_size)
    return depth_m, K


@dataclass(frozen=True)
class DepthSettings:
    """The depth parameters a frame's points are made with (one snapshot per change)."""

    depth_scale: float
    depth_window: int
    depth_min: float
    depth_max: float


def no_point() -> dict:
    return dict(has_point=False, point=Point(), has_target_point=False, target_point=PointStamped())


class DepthInput:
    def __init__(self, node, prefix: str = '', transforms=None):
        """Depth and camera_info of one camera: `prefix`depth and `prefix`camera_info;
        `transforms`: the node's Transforms where tf2_ros imports (target_frame needs it; the
        lookups themselves come with each frame's geometry)."""
        self._node = node
        self._log = node.get_logger()
        self._slop = node.get_parameter('sync_slop').value
        self._lock = threading.Lock()
        self._pairs: deque = deque(maxlen=HISTORY_MAX)  # (stamp ns, depth, camera_info)
        self._last_log: dict[str, float] = {}
        self._size_pairs_reported: set = set()
        depth, info = f'{prefix}depth', f'{prefix}camera_info'
        self._topics = ' and '.join(node.resolve_topic_name(n) for n in (depth, info))
        self._sync = subscribe_synchronised(
            node,
            [(Image, depth), (CameraInfo, info)],
            qos_profile_sensor_data,
            self._slop,
            self._on_pair,
        )
        self._target_frame = node.get_parameter('target_frame').value
        if self._target_frame and transforms is None:  # the node refuses this; a host may not
            self._log.warning(
                f'target_frame {self._target_frame!r} needs tf2_ros, which is not '
                'importable: points are given in the camera frame only'
            )
        synchroniser = 'message_filters' if message_filters is not None else 'built-in'
        self._log.info(
            f'3D points from {self._topics} (sync_slop {self._slop} s, {synchroniser} synchroniser)'
        )

    @property
    def target_frame(self) -> str:
        """The TF frame points are also given in ('' for none)."""
        return self._target_frame

    def close(self) -> None:
        """Unsubscribe depth and camera_info (a deactivated node reads no topics)."""
        _, subscribers = self._sync
        for sub in subscribers:
            self._node.destroy_subscription(getattr(sub, 'sub', sub))  # message_filters': .sub

    def _on_pair(self, depth: Image, info: CameraInfo) -> None:
        stamp = stamp_ns(depth.header.stamp)
        with self._lock:
            self._pairs.append((stamp, depth, info))
            while self._pairs and self._pairs[0][0] < stamp - HISTORY_S * 1e9:
                self._pairs.popleft()

    def _pair_for(self, header):
        """The (depth, camera_info) pair nearest the colour stamp, if within sync_slop."""
        stamp = stamp_ns(header.stamp)
        with self._lock:
            pairs = list(self._pairs)
        if not pairs:
            self._warn(
                'no depth',
                f'no depth yet: nothing synchronised received on {self._topics}; no 3D points',
            )
            return None
        nearest = min(pairs, key=lambda pair: abs(pair[0] - stamp))
        offset = (nearest[0] - stamp) / 1e9
        if abs(offset) > self._slop:
            self._warn(
                'sync',
                f'depth not synchronised with the colour image: the nearest depth '
                f'is {offset:+.3f} s off the frame, more than sync_slop '
                f'({self._slop} s); no 3D points for this frame (are both stamped '
                'by the same clock?)',
            )
            return None
        return nearest[1:]

    def points_for(
        self,
        header,
        colour_size: tuple[int, int],
        detections,
        settings: 'DepthSettings',
        lookup=None,
    ) -> list[dict]:
        """Per detection, the QueryResult fields has_point, point, has_target_point,
        target_point, for the colour frame with this header and size (width, height)."""
        geometry = self.measure(header, colour_size, detections, settings, lookup)
        return self.fields(geometry, header, len(detections))

    def measure(
        self,
        header,
        colour_size: tuple[int, int],
        detections,
        settings: 'DepthSettings',
        lookup=None,
    ) -> FrameGeometry:
        """The frame's geometry (gem_ros/frame_result.py): each found detection's point in the
        camera's frame, the depth view; `lookup(tf_frame)` gives its transforms (the node's
        TF buffer at the frame's stamp)."""
        geometry = FrameGeometry(header.frame_id, [None] * len(detections), None, lookup)
        pair = self._pair_for(header)
        if pair is None:
            return geometry
        depth_msg, info = pair
        self._check_size(depth_msg, colour_size)
        try:
            geometry.view = depth_view(depth_msg, info, settings.depth_scale)
        except ValueError as exc:
            self._warn('depth', f'bad depth image: {exc}; no 3D points')
            return geometry
        depth_m, K = geometry.view
        for i, det in enumerate(detections):
            if not det.found:  # nothing to point at
                continue
            xyz, reason = peak_to_point(
                depth_m,
                (det.peak_x, det.peak_y),
                det.mask,
                K,
                colour_size,
                settings.depth_window,
                settings.depth_min,
                settings.depth_max,
            )
            if xyz is None:
                self._warn('depth', f'no 3D point for {det.query!r}: {reason}')
            geometry.points[i] = xyz
        return geometry

    def fields(self, geometry: FrameGeometry, header, count: int) -> list[dict]:
        """QueryResult's point fields of the first `count` detections: the camera-frame point,
        and with target_frame the same point there (one TF lookup per frame, shared with
        every other reader of the geometry)."""
        out = []
        target = self._target_frame if geometry.lookup is not None else ''
        for i in range(count):
            fields = no_point()
            xyz = geometry.points[i]
            if xyz is not None:
                fields.update(has_point=True, point=Point(x=xyz[0], y=xyz[1], z=xyz[2]))
            if xyz is not None and target:
                try:
                    x, y, z = geometry.point_in(i, target)
                except TransformUnavailable as exc:
                    self._warn('tf', f'{exc}; target points left out')
                else:
                    fields.update(
                        has_target_point=True,
                        target_point=PointStamped(
                            header=Header(stamp=header.stamp, frame_id=target),
                            point=Point(x=x, y=y, z=z),
                        ),
                    )
            out.append(fields)
        return out

    def _check_size(self, depth_msg: Image, colour_size) -> None:
        """Says once per pair of sizes that depth and colour differ (peaks are scaled)."""
        depth_size = (depth_msg.width, depth_msg.height)
        if (
            depth_size != tuple(colour_size)
            and (depth_size, tuple(colour_size)) not in self._size_pairs_reported
        ):
            self._size_pairs_reported.add((depth_size, tuple(colour_size)))
            self._log.warning(
                f'depth is {depth_size[0]}x{depth_size[1]} but the colour image is '
                f'{colour_size[0]}x{colour_size[1]}: peaks are scaled to the depth image, which '
                'must show the same view (depth aligned to the colour camera, e.g. '
                'aligned_depth_to_color)'
            )

    def _warn(self, kind: str, text: str) -> None:
        """At most one warning of each kind per LOG_PERIOD_S."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -LOG_PERIOD_S) >= LOG_PERIOD_S:
            self._last_log[kind] = now
            try:
                self._log.warning(text)
            except Exception:  # noqa: BLE001 - e.g. shutting down: lose the line, not the frame
                pass
