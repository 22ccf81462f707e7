"""The node's cameras and the frames between them and the engine.

A frame's path through ROS: a camera's subscription calls `offer` (executor thread), which
hands a `Frame` to the engine as that camera's; the engine's convert stage calls
`convert` (the message to RGB) and its publish stage `measure` (the frame's geometry: depth,
points, TF, once) and `publish` (the frame's own camera publishes its FrameResult, under its
own header, and the memory observes it). Frames are taken only while started (the
managed node's active state); a frame that started under an earlier start is not published.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sensor_msgs.msg import CompressedImage

from gem_ros.ros.camera import Camera
from gem_ros.ros.image_conversion import compressed_msg_to_rgb
from gem_ros.ros.parameters import camera_names
from gem_ros.ros.transforms import TransformUnavailable
from gem_ros.threads import cut

IDLE_LOG_PERIOD_S = 30.0  # 'frames skipped because ...' lines


@dataclass(frozen=True, eq=False)
class Frame:
    """One image message on its way through the engine."""

    msg: object  # sensor_msgs Image or CompressedImage
    to_rgb: Callable  # its converter (image_conversion)
    activation: int  # the start it came in under: published only while that one lasts
    camera: Camera

    def describe(self) -> str:
        """'stamp 12.000000500, frame_id 'camera''."""
        header = self.msg.header
        return f'stamp {header.stamp.sec}.{header.stamp.nanosec:09d}, frame_id {header.frame_id!r}'


class CameraFrames:
    def __init__(self, node, engine, names, use_depth: bool, log):
        """names: the `cameras` parameter's value (empty: one camera on `image`)."""
        self._node, self._engine, self._log = node, engine, log
        # The cameras, in the order named; one engine and one model serve them all.
        self.cameras = {name: Camera(node, name, use_depth) for name in camera_names(names)}
        self.taking = False  # subscribed to the cameras (active)
        self._activation = 0  # counts starts and stops: which frames are current
        if len(self.cameras) > 1:
            node.get_logger().info(
                f'{len(self.cameras)} cameras: '
                + ', '.join(c.image_topic for c in self.cameras.values())
            )

    @property
    def frames_in(self) -> int:
        return sum(c.frames_in for c in self.cameras.values())

    def start(self, image_qos, compressed: bool) -> None:
        """Subscribe the cameras' (and depth) topics: frames are processed and published."""
        self._activation += 1
        for camera in self.cameras.values():
            camera.start(self.offer, image_qos, compressed)
        self.taking = True

    def stop(self) -> None:
        """Unsubscribe the cameras' topics; a frame in flight is not published."""
        self.taking = False
        self._activation += 1
        for camera in self.cameras.values():
            camera.stop()

    def offer(self, camera: Camera, msg, to_rgb) -> None:
        """A camera's frame (executor thread) to the engine, under that camera's name."""
        camera.last_frame_time = time.monotonic()
        camera.frames_in += 1
        # Patch grids are copied out of the model only when something reads them.
        mask_format = self._engine.settings.outputs.mask_format
        self._engine.want_patch_logits = any(
            c.wants_patch_grids(mask_format) for c in self.cameras.values()
        )
        skipped = self._engine.offer(Frame(msg, to_rgb, self._activation, camera), camera.name)
        if skipped:
            self._log(
                'info',
                'idle',
                f'{skipped}: frames are skipped until '
                + (
                    'queries are set (queries topic, ~/set_queries or the queries parameter)'
                    if skipped == 'no active queries'
                    else 'one is'
                ),
                IDLE_LOG_PERIOD_S,
            )

    def convert(self, frame: Frame, max_pixels: int):
        """The engine's converter (worker thread): a frame message to RGB, errors named."""
        msg, to_rgb = frame.msg, frame.to_rgb
        try:
            if to_rgb is compressed_msg_to_rgb:  # a JPEG decodes on the model's GPU, if it can
                model = self._engine.model
                return to_rgb(msg, max_pixels, model.device if model is not None else None)
            return to_rgb(msg, max_pixels)
        except ValueError as exc:
            kind = 'compressed image' if isinstance(msg, CompressedImage) else 'image'
            raise ValueError(f'{exc} ({kind}, frame_id {cut(msg.header.frame_id, 40)!r})') from exc

    def measure(self, result):
        """The engine's measure (worker thread): the frame's geometry, from its camera's depth,
        its transforms from the node's TF buffer at the frame's stamp (None: no depth)."""
        header = result.frame.msg.header

        def lookup(tf_frame: str):
            transforms = self._node.transforms  # made by a first ~/locate that asks for one
            if transforms is None:
                raise TransformUnavailable(f'no TF buffer for {tf_frame!r} (tf2_ros missing)')
            return transforms.lookup(tf_frame, header.frame_id, header.stamp)

        return result.frame.camera.measure(result, lookup)

    def publish(self, result) -> None:
        """The engine's output (worker thread): the frame's camera publishes it."""
        frame = result.frame
        if not self.taking or frame.activation != self._activation:
            return  # stopped while this frame ran (and maybe started again since)
        frame.camera.publish(result)

    def consume(self, result) -> None:
        """The engine's consumer (worker thread): the memory of sightings observes a frame's
        published queries, the map of dense features takes its patch tokens."""
        frame, node = result.frame, self._node
        if not self.taking or frame.activation != self._activation or result.geometry is None:
            return
        if node.memory is not None and result.active:
            node.memory.observe(frame.camera.name, frame.msg.header, result)
        if node.feature_map is not None and result.tokens is not None:
            node.feature_map.observe(frame.camera.name, result)
