"""The node's map of dense features (gem_ros.feature_map) in ROS: fed by every camera's
frames (their patch tokens, depth and the transform into map_frame at the frame's stamp, all
from the frame's FrameResult), asked through ~/ask_map, drawn on ~/map_cloud, kept in
map_file.

    fmap = NodeMap(node, engine, MapSettings(...))   # map_frame set
    fmap.observe(result)                             # the publish stage, a FrameResult
    fmap.close()                                     # writes map_file

Frames feed the map whether or not a query is active (the engine runs the image tower alone
for them, at most map_rate_hz). Fusion runs on the engine's publish stage, not the inference
thread. An ask encodes its words with the model's text tower (cached) on a thread of its own
and answers on the executor: the executor never waits on it, and the frames wait at most one
text encoding (the text cache's lock).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from gem_ros.feature_map import (
    FeatureMap,
    ForeignMapFile,
    MapFileError,
    load_map,
    query_text,
    save_map,
)
from gem_ros.geometry import TransformUnavailable
from gem_ros.owned_files import check_path, read_or_set_aside, save_kept
from gem_ros.ros.guards import answered
from gem_ros.ros.qos import SERVICE_QOS
from gem_ros.srv import AskMap
from gem_ros.threads import cut

LOG_PERIOD_S = 5.0
SAVE_PERIOD_S = 10.0  # map_file is written at most this often while the map changes
CLOUD_PERIOD_S = 1.0  # ~/map_cloud at most this often, only while subscribed
MAX_ASKS_AT_ONCE = 4  # ~/ask_map calls encoding at once; more are answered 'busy'
MAX_PLACES = 100
DEFAULT_PLACES = 5


@dataclass(frozen=True)
class MapSettings:
    tf_frame: str
    voxel_size: float
    max_voxels: int
    rate_hz: float
    file: str


def map_file_budget(max_voxels: int, dim: int = 1024) -> int:
    """The most bytes a map file of `max_voxels` takes (features up to 1024 wide)."""
    return max_voxels * (2 * dim + 64) + (1 << 20)


class NodeMap:
    def __init__(self, node, engine, settings: MapSettings):
        self._node, self._engine, self._log = node, engine, node._log
        self.tf_frame = settings.tf_frame
        self.rate_hz = settings.rate_hz
        self.map = FeatureMap(settings.voxel_size, settings.max_voxels)
        self._max_voxels = settings.max_voxels
        self._file = Path(settings.file).expanduser() if settings.file else None
        self.file_problem = ''
        self._made_by = None  # the model the map's features are from, once one is loaded
        self._knowing = threading.Lock()
        self._learning = False  # the executor started _know_model's thread
        self._changes = 0
        self._saved = 0
        self._last_save = time.monotonic()
        self._last_fused: dict[str, float] = {}  # camera -> monotonic time (map_rate_hz)
        self._asking = threading.BoundedSemaphore(MAX_ASKS_AT_ONCE)
        if self._file is not None:
            check_path(self._file, 'map_file')  # a folder...: refused at start
        self._cloud_pub = node.create_publisher(PointCloud2, '~/map_cloud', 1)
        self._timer = node.create_timer(CLOUD_PERIOD_S, self._tick)
        node.create_service(
            AskMap,
            '~/ask_map',
            answered(self._on_ask, self._log, '~/ask_map'),
            qos_profile=SERVICE_QOS,
            callback_group=ReentrantCallbackGroup(),
        )
        node.get_logger().info(
            f'map of dense features in {self.tf_frame!r}: voxels of {settings.voxel_size} m, '
            f'at most {settings.max_voxels}, at most {settings.rate_hz:g} frames/s a camera'
            + (f', kept in {self._file}' if self._file else '')
        )

    # --- the publish stage ----------------------------------------------------------------
    def due(self, camera: str) -> bool:
        """Whether a frame of `camera` feeds the map now (map_rate_hz)."""
        last = self._last_fused.get(camera)
        return self.rate_hz <= 0 or last is None or time.monotonic() - last >= 1.0 / self.rate_hz

    def observe(self, camera: str, result) -> None:
        """A frame's patch tokens into the map, where its depth and TF allow."""
        geometry = result.geometry
        if result.tokens is None or geometry is None or geometry.view is None:
            return
        tokens, embedding = result.tokens
        self._last_fused[camera] = time.monotonic()
        self._know_model()
        try:
            pose = geometry.pose_to(self.tf_frame)
        except TransformUnavailable as exc:
            self._log('warning', 'map tf', f'{exc}; the frame is not in the map', LOG_PERIOD_S)
            return
        depth = result.settings.outputs.depth
        header = result.frame.msg.header
        self.map.take_view(
            tokens, geometry.view, _host(result.rgb), pose,
            header.stamp.sec + header.stamp.nanosec * 1e-9, camera,
            embedding=embedding, depth_range=(depth.depth_min, depth.depth_max),
        )  # fmt: skip
        self._changes += 1

    def _know_model(self) -> None:
        """What the features are from (the map file says it; another model's is refused):
        once a model is loaded (the timer, a frame or an ask, whichever comes first),
        map_file is read."""
        with self._knowing:
            self._learn_model()

    def _learn_model(self) -> None:
        model = self._engine.model
        if model is None or self._made_by is not None:
            return
        from gem_ros.map_command import made_by

        self._made_by = made_by(model, self.tf_frame, self.map.voxel_size)
        if self._file is not None and self._file.exists():
            self._load()

    def _load(self) -> None:
        logger = self._node.get_logger()
        budget = map_file_budget(self._max_voxels)
        count, self.file_problem = read_or_set_aside(
            self._file, 'map_file', 'map',
            lambda: load_map(self._file, self.map, self._made_by, budget),
            ForeignMapFile, MapFileError, logger,
        )  # fmt: skip
        if count is not None:
            logger.info(f'map_file {self._file}: {count} voxels read')

    # --- the executor ---------------------------------------------------------------------
    async def _on_ask(self, request, response):
        query = request.query.strip()
        model = self._engine.model
        if not query:
            response.message = 'no query: ask for something, e.g. "fire extinguisher"'
            return response
        if model is None:
            response.message = 'no model loaded yet'
            return response
        if not self._asking.acquire(blocking=False):
            response.message = f'busy: {MAX_ASKS_AT_ONCE} asks are being answered; ask again'
            return response
        reply = Future()
        wanted = min(request.max_places or DEFAULT_PLACES, MAX_PLACES)
        backgrounds = self._engine.settings.frame.background_prompts

        def work() -> None:  # a thread of its own: the text tower, then the map
            try:
                answer = self._answer(model, query, backgrounds, wanted)
            except Exception as exc:  # noqa: BLE001 - every call gets an answer
                answer = f'cannot ask the map for {cut(query, 40)!r}: {exc}'
            finally:
                self._asking.release()
            self._node.call_on_executor(lambda: reply.done() or reply.set_result(answer))

        threading.Thread(target=work, name='gem-ask-map', daemon=True).start()
        answer = await reply
        if isinstance(answer, str):
            response.message = answer
            return response
        return self._fill(response, answer, query)

    def _answer(self, model, query: str, backgrounds, wanted: int):
        self._know_model()  # a map read from map_file is asked before any frame came
        text, rivals = query_text(model, query, backgrounds)
        return self.map.ask(text, rivals, model.logit_scale, wanted)

    def _fill(self, response, places, query: str):
        now = self._node.get_clock().now().nanoseconds * 1e-9
        response.places = PoseArray(header=Header(frame_id=self.tf_frame))
        for place in places:
            pose = Pose(position=Point(x=place.position[0], y=place.position[1],
                                       z=place.position[2]))  # fmt: skip
            pose.orientation.w = 1.0
            response.places.poses.append(pose)
            response.scores.append(place.score)
            response.sizes.append(place.voxels)
            response.ages.append(max(0.0, now - place.last_seen))
            response.cameras.append(place.camera)
        response.found = bool(places)
        if not places:
            response.message = (
                f'nothing like {cut(query, 40)!r} in the map ({len(self.map)} voxels): no '
                'voxel prefers it over the background prompts'
            )
        else:
            best = places[0]
            response.message = (
                f'{len(places)} place{"s" * (len(places) != 1)}; the best (score '
                f'{best.score:.2f}, {best.voxels} voxels) seen {response.ages[0]:.1f} s ago '
                f'by camera {best.camera!r}'
            )
        return response

    def _tick(self) -> None:
        if self._made_by is None and self._engine.model is not None and not self._learning:
            # map_file is read once a model is loaded, whether or not frames come: on a thread
            # of its own (a file of 100k voxels takes a second to read).
            self._learning = True
            threading.Thread(target=self._know_model, name='gem-map-file', daemon=True).start()
        if self._cloud_pub.get_subscription_count():
            self._publish_cloud()
        if (
            self._kept()
            and self._changes != self._saved
            and time.monotonic() - self._last_save >= SAVE_PERIOD_S
        ):
            self._save()

    def _publish_cloud(self) -> None:
        centres, colours = self.map.cloud(self.map.last_heat)
        rgb = (colours[:, 0].astype(np.uint32) << 16) | (colours[:, 1].astype(np.uint32) << 8)
        rgb |= colours[:, 2].astype(np.uint32)
        cloud = np.zeros(len(centres), [('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('rgb', '<u4')])
        cloud['x'], cloud['y'], cloud['z'] = centres[:, 0], centres[:, 1], centres[:, 2]
        cloud['rgb'] = rgb
        fields = [
            PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
            for i, n in enumerate('xyz')
        ] + [PointField(name='rgb', offset=12, datatype=PointField.UINT32, count=1)]
        header = Header(frame_id=self.tf_frame, stamp=self._node.get_clock().now().to_msg())
        self._cloud_pub.publish(
            PointCloud2(header=header, height=1, width=len(cloud), fields=fields,
                        is_bigendian=False, point_step=16, row_step=16 * len(cloud),
                        data=cloud.tobytes(), is_dense=True)
        )  # fmt: skip

    def _save(self) -> None:
        if self._made_by is None:
            return
        changes = self._changes
        saved, self.file_problem = save_kept(
            self._file, 'map_file', 'map', lambda: save_map(self._file, self.map, self._made_by),
            self._node.get_logger(), self._log,
        )  # fmt: skip
        if saved:
            self._saved, self._last_save = changes, time.monotonic()

    def close(self) -> None:
        """Write map_file a last time (the node is stopping)."""
        if self._kept() and self._changes != self._saved:
            self._save()

    def _kept(self) -> bool:
        return self._file is not None and not self.file_problem


def _host(rgb):
    """An RGB frame as numpy (a GPU-decoded frame copied back)."""
    from gem_ros.gem.decode import as_host

    return as_host(rgb)


def map_from_parameters(node, engine, value) -> NodeMap | None:
    """The node's map, where map_frame is set (value(name): a parameter's value); the engine
    then keeps the patch tokens of the frames it is due."""
    if not value('map_frame'):
        return None
    fmap = NodeMap(
        node,
        engine,
        MapSettings(
            tf_frame=value('map_frame'),
            voxel_size=value('map_voxel_size'),
            max_voxels=value('map_max_voxels'),
            rate_hz=value('map_rate_hz'),
            file=value('map_file'),
        ),
    )
    engine.tokens_wanted = fmap.due
    return fmap
