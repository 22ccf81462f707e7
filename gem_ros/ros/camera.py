"""One camera of gem_node: its topics in and out, its depth input, its rate gates and
its counts. The node has one per entry of its `cameras` parameter, all served by one engine
and one model (the engine batches their newest frames); with `cameras` empty, one camera
with no name, on the topics a single-camera node always had.

Camera `front` subscribes `front/image` (`front/image/compressed`, `front/depth`,
`front/camera_info` where enabled), relative to the node's namespace and remappable, and
publishes `~/front/results`, `~/front/detections`, `~/front/heatmaps`,
`~/front/heatmap_image`, `~/front/overlay` and `~/front/markers`, each message with its own
frame's header.
"""

from __future__ import annotations

import time
from collections import deque

from rclpy._rclpy_pybind11 import RCLError
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from gem_ros.gem.decode import as_host
from gem_ros.gem.hold import ema
from gem_ros.msg import GemResult, Heatmaps
from gem_ros.overlay import draw_heatmaps, draw_overlay
from gem_ros.ros import messages
from gem_ros.ros.depth_input import DepthInput
from gem_ros.ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb, rgb_to_image_msg
from gem_ros.ros.markers import QueryMarkers
from gem_ros.threads import RateGate

LATENCIES_KEPT = 1000
POINT_JUMP_M = 0.25  # a held query's 3D point farther than this from its average restarts it


def publish(node, publisher, msg) -> None:
    """publisher.publish(msg), a failure logged (throttled) instead of raised."""
    try:
        publisher.publish(msg)
    except RCLError as exc:  # Fast DDS occasionally fails a publish under load
        if node.context.ok():  # else shutting down: a frame in flight has nowhere to go
            node._log('warning', 'publish', f'publishing on {publisher.topic_name} failed: {exc}')


class Camera:
    def __init__(self, node, name: str, use_depth: bool):
        self.node = node
        self.name = name
        self._in = f'{name}/' if name else ''  # subscribed topics, relative
        self._out = f'~/{name}/' if name else '~/'  # published topics, private
        make = node.create_publisher
        self.results_pub = make(GemResult, f'{self._out}results', 5)
        self.heatmaps_pub = make(Heatmaps, f'{self._out}heatmaps', 5)
        self.heatmap_image_pub = make(Image, f'{self._out}heatmap_image', 1)
        self.overlay_pub = make(Image, f'{self._out}overlay', 1)
        self.detections_pub = (
            make(messages.Detection2DArray, f'{self._out}detections', 5)
            if messages.Detection2DArray is not None
            else None
        )
        self.markers = QueryMarkers() if use_depth else None
        self.markers_pub = make(MarkerArray, f'{self._out}markers', 5) if use_depth else None
        self._use_depth = use_depth
        self.gates = {'overlay': RateGate(), 'heatmaps': RateGate(), 'heatmap_image': RateGate()}
        self.depth = None
        self._subscriptions: list = []
        # Counts, for /diagnostics and the log.
        self.frames_in = 0
        self.processed = 0
        self.last_frame_time = None  # monotonic time of the last frame offered
        self.started = time.monotonic()  # when its subscriptions were made
        self.latencies: deque = deque(maxlen=LATENCIES_KEPT)
        self.last_result_time = None
        self.diagnosed = (0, 0, 0, time.monotonic())  # frames in, processed, dropped, when
        # Held presence: each found query's smoothed 3D points (point, target point), kept
        # while it stays found; touched by the engine's publish stage only.
        self._smoothed: dict = {}

    @property
    def image_topic(self) -> str:
        return self.node.resolve_topic_name(f'{self._in}image')

    # --- in -------------------------------------------------------------------------------
    def start(self, offer, image_qos, compressed: bool) -> None:
        """Subscribe its image (and compressed image, depth and camera_info); frames go to
        offer(camera, msg, to_rgb)."""
        node = self.node
        self.last_frame_time = None
        self.started = time.monotonic()
        self.diagnosed = (self.frames_in, self.processed, self.diagnosed[2], time.monotonic())
        subs = [
            node.create_subscription(
                Image, f'{self._in}image', lambda m: offer(self, m, image_msg_to_rgb), image_qos
            )
        ]
        if compressed:
            # image_transport's naming: follows a remapping of `image`.
            subs.append(
                node.create_subscription(
                    CompressedImage,
                    self.image_topic + '/compressed',
                    lambda m: offer(self, m, compressed_msg_to_rgb),
                    image_qos,
                )
            )
        self._subscriptions = subs
        if self._use_depth:
            self.depth = DepthInput(node, self._in, node.transforms)

    def stop(self) -> None:
        subs, self._subscriptions = self._subscriptions, []
        for sub in subs:
            self.node.destroy_subscription(sub)
        if self.depth is not None:
            self.depth.close()
            self.depth = None

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    # --- out (the worker thread) ----------------------------------------------------------
    def measure(self, result, lookup):
        """The FrameGeometry of a frame of this camera (None without depth): its detections'
        points from the depth paired with it; `lookup(tf_frame)` its transforms."""
        if self.depth is None:
            return None
        height, width = result.rgb.shape[:2]
        header = result.frame.msg.header
        depth_settings = result.settings.outputs.depth
        return self.depth.measure(
            header, (width, height), result.detections, depth_settings, lookup
        )

    def publish(self, result) -> None:
        """Result, detections, heatmaps, markers and overlay of one frame (a FrameResult, its
        geometry measured); its settings' `outputs` hold the node's output settings (mask
        format, rates, depth settings)."""
        header, rgb, detections = result.frame.msg.header, result.rgb, result.published
        settings, outputs, seconds = result.settings, result.settings.outputs, result.seconds
        self.processed += 1
        self.latencies.append(seconds)
        self.last_result_time = time.monotonic()
        depth, geometry = self.depth, result.geometry
        points = None
        if depth is not None and geometry is not None:
            points = depth.fields(geometry, header, len(detections))
        if points is not None and settings.hold is not None:
            self._smooth_points(detections, points, settings.hold.alpha)
        message = messages.gem_result(
            header, detections, seconds, points, outputs.mask_format, settings.frame.mask_threshold
        )
        self._publish(self.results_pub, message)
        if self.detections_pub is not None:
            self._publish(self.detections_pub, messages.detection_array(header, detections, points))
        grids = detections[0].patch_logits is not None
        if grids and self._due('heatmaps', self.heatmaps_pub, outputs.heatmaps_max_rate):
            self._publish(self.heatmaps_pub, messages.heatmaps(header, detections))
        if grids and self._due('heatmap_image', self.heatmap_image_pub, outputs.heatmaps_max_rate):
            query, blend = outputs.heatmap_image
            image = draw_heatmaps(as_host(rgb), detections, query, blend)
            self._publish(self.heatmap_image_pub, rgb_to_image_msg(image, header))
        if depth is not None:
            markers = self.markers.build(message, in_target_frame=bool(depth.target_frame))
            if markers.markers:
                self._publish(self.markers_pub, markers)
        publish_overlay, overlay_rate = outputs.overlay
        if publish_overlay and self._due('overlay', self.overlay_pub, overlay_rate):
            overlay = draw_overlay(as_host(rgb), detections)  # a GPU-decoded frame copied back
            self._publish(self.overlay_pub, rgb_to_image_msg(overlay, header))

    def _smooth_points(self, detections, points, alpha: float) -> None:
        """Held presence: a found query's 3D points averaged over its frames (as its peak is,
        gem_ros.gem.hold), from the frame it was found on; dropped when it is lost, when its
        queries change, or when the point jumps by over POINT_JUMP_M (another instance)."""
        queries = tuple(d.query for d in detections)
        if self._smoothed.get(None) != queries:
            self._smoothed = {None: queries}
        for det, fields in zip(detections, points):
            if not (det.held and det.found):
                self._smoothed.pop(det.query, None)
                continue
            kept = self._smoothed.setdefault(det.query, {})
            for key, flag, get in (
                ('point', 'has_point', lambda f: f['point']),
                ('target_point', 'has_target_point', lambda f: f['target_point'].point),
            ):
                if not fields[flag]:
                    continue
                point = get(fields)
                new = (point.x, point.y, point.z)
                old = kept.get(key)
                if old is not None and sum((a - b) ** 2 for a, b in zip(old, new)) > (
                    POINT_JUMP_M**2
                ):
                    old = None
                kept[key] = ema(old, new, alpha)
                point.x, point.y, point.z = kept[key]

    def wants_patch_grids(self, mask_format: str) -> bool:
        return (
            mask_format == 'patch'
            or self.heatmaps_pub.get_subscription_count() > 0
            or self.heatmap_image_pub.get_subscription_count() > 0
        )

    def _due(self, kind: str, publisher, max_rate: float) -> bool:
        if publisher.get_subscription_count() == 0:
            return False  # drawing costs time; nobody would see it
        return self.gates[kind].due(max_rate)

    def _publish(self, publisher, msg) -> None:
        publish(self.node, publisher, msg)

    def take_latencies(self) -> list[float]:
        out = []
        while self.latencies:
            out.append(self.latencies.popleft())
        return out
