"""The node's memory of sightings (gem_ros.memory) in ROS: fed by every camera's frames,
~/recall answered from it, ~/memory_markers drawn from it, memory_file kept.

    memory = NodeMemory(node, MemorySettings(...))      # memory_frame set
    memory.observe(camera.name, header, result)         # worker thread, a FrameResult
    memory.recall(request, response)                    # ~/recall, executor
    memory.close()                                      # saves memory_file

Each frame's camera-frame points (its FrameResult's geometry, measured once) go to
memory_frame through TF at the frame's stamp (the geometry's lookup, bounded by tf_timeout,
made once per frame and TF frame whoever asks: target_frame's, ~/locate's, the memory's). A
frame whose transform is unavailable adds nothing, with a throttled warning.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from geometry_msgs.msg import Point, PointStamped, Pose, PoseArray, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from gem_ros.memory import ForeignFileError, MemoryFileError, SightingMemory, observe
from gem_ros.overlay import query_colours
from gem_ros.owned_files import check_path, read_or_set_aside, save_kept
from gem_ros.ros.guards import answered
from gem_ros.ros.qos import SERVICE_QOS
from gem_ros.ros.transforms import TransformUnavailable
from gem_ros.srv import Recall
from gem_ros.threads import cut

MARKERS_PERIOD_S = 1.0  # ~/memory_markers (ages change) and expiry
SAVE_PERIOD_S = 5.0  # memory_file written at most this often, when something changed
MEMORY_NS = 'gem_memory'
LABELS_NS = 'gem_memory_labels'
MARKER_DIAMETER = 0.08
LOG_PERIOD_S = 5.0
MAX_DROPS_LOGGED = 10  # bad places of a memory file named one by one in the log


@dataclass(frozen=True)
class MemorySettings:
    tf_frame: str
    radius: float
    ttl_s: float
    max_per_query: int
    max_places: int
    miss_frames: int
    file: str


def stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class NodeMemory:
    def __init__(self, node, settings: MemorySettings):
        self._node = node
        self._log = node._log  # the node's throttled log
        self.tf_frame = settings.tf_frame
        self.memory = SightingMemory(
            settings.tf_frame,
            settings.radius,
            settings.ttl_s,
            settings.max_per_query,
            settings.max_places,
            settings.miss_frames,
        )
        self._file = Path(settings.file).expanduser() if settings.file else None
        # Why memory_file is not kept (what is there is not ours), for the log and
        # /diagnostics; '' while it is.
        self.file_problem = ''
        if self._file is not None:
            check_path(self._file, 'memory_file')  # a folder...: refused at start
            self._load()
        self._saved = self.memory.changes
        self._last_save = time.monotonic()
        self._shown: set = set()  # marker ids rviz shows now
        self._markers_pub = node.create_publisher(MarkerArray, '~/memory_markers', 5)
        self._timer = node.create_timer(MARKERS_PERIOD_S, self._tick)
        node.get_logger().info(
            f'memory of sightings in {self.tf_frame!r}: radius {settings.radius} m, '
            f'ttl {settings.ttl_s:g} s, at most {settings.max_per_query} places per query and '
            f'{settings.max_places} in all'
            + (f', kept in {self._file}' if self._file and not self.file_problem else '')
        )

    def _load(self) -> None:
        """memory_file read back. Not a memory file: left as it is, and the memory is not
        kept (file_problem). A memory file that cannot be used: moved aside, never over
        another file. Bad places: dropped, each named in the log."""
        if not self._file.exists():
            return
        logger = self._node.get_logger()
        read, self.file_problem = read_or_set_aside(
            self._file, 'memory_file', 'memory',
            lambda: self.memory.load(self._file, self._now()),
            ForeignFileError, MemoryFileError, logger,
        )  # fmt: skip
        if read is None:
            return
        count, dropped = read
        for reason in dropped[:MAX_DROPS_LOGGED]:
            logger.warning(f'memory_file {self._file}: {reason}: dropped')
        if len(dropped) > MAX_DROPS_LOGGED:
            logger.warning(
                f'memory_file {self._file}: '
                f'{len(dropped) - MAX_DROPS_LOGGED} more bad places dropped'
            )
        gone = self.memory.expire(self._now())
        logger.info(
            f'memory_file {self._file}: {count} places read'
            + (f', {len(dropped)} bad ones dropped' if dropped else '')
            + (f', {gone} of them expired' if gone else '')
        )

    def _now(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    # --- worker thread --------------------------------------------------------------------
    def observe(self, camera: str, header, result) -> None:
        """One frame's sightings (its published queries found, with a point) and misses
        (absent ones whose places were in view), from its FrameResult's geometry."""
        geometry = result.geometry
        points = geometry.points[: result.active]
        if not any(p is not None for p in points) and geometry.view is None:
            return  # no depth for this frame: no evidence either way
        try:
            to_memory = geometry.pose_to(self.tf_frame)  # the target points' lookup, if the same
        except TransformUnavailable as exc:
            self._log('warning', 'memory tf', f'{exc}; no sightings from this frame', LOG_PERIOD_S)
            return
        stamp = stamp_s(header.stamp)
        lag = self._now() - stamp
        if lag > self.memory.ttl_s:
            self._log(
                'warning',
                'memory stamps',
                f'frames are stamped {lag:.0f} s behind the node clock, over memory_ttl_s '
                f'({self.memory.ttl_s:g} s): their sightings expire at once (use_sim_time?)',
                LOG_PERIOD_S,
            )
        observe(self.memory, camera, stamp, result.published, points, to_memory, geometry.view)

    # --- executor thread ------------------------------------------------------------------
    def recall(self, request, response):
        """~/recall: where `query` was seen, best place first."""
        query = request.query.strip()
        now = self._now()
        places = self.memory.places(query, now) if query else []
        response.places = PoseArray(header=Header(frame_id=self.tf_frame))
        response.places.header.stamp = self._node.get_clock().now().to_msg()
        if not places:
            response.seen = False
            response.message = (
                'empty query'
                if not query
                else f'{cut(query, 40)!r} not seen (or forgotten: memory_ttl_s '
                f'{self.memory.ttl_s:g} s, or missed where it was)'
            )
            return response
        best = places[0]
        response.seen = True
        response.point = PointStamped(
            header=Header(stamp=_time(best.last_seen), frame_id=self.tf_frame),
            point=Point(x=best.x, y=best.y, z=best.z),
        )
        response.age = float(max(now - best.last_seen, 0.0))
        response.confidence = float(best.confidence)
        response.sightings = best.sightings
        for p in places:
            response.places.poses.append(_pose(p.x, p.y, p.z))
            response.place_ages.append(float(max(now - p.last_seen, 0.0)))
            response.place_confidences.append(float(p.confidence))
            response.place_sightings.append(p.sightings)
            response.place_cameras.append(p.camera)
        response.message = (
            f'seen {response.age:.1f} s ago by camera {best.camera!r}'
            if best.camera
            else f'seen {response.age:.1f} s ago'
        ) + f' ({best.sightings} sightings; {len(places)} place{"s" * (len(places) != 1)})'
        return response

    def _tick(self) -> None:
        now = self._now()
        self.memory.expire(now)
        self._publish_markers(now)
        if (
            self._kept()
            and self.memory.changes != self._saved
            and time.monotonic() - self._last_save >= SAVE_PERIOD_S
        ):
            self._save()

    def _publish_markers(self, now: float) -> None:
        places = sorted(self.memory.all_places(), key=lambda p: (p.query, p.first_seen))
        if self._markers_pub.get_subscription_count() == 0:
            return
        header = Header(frame_id=self.tf_frame, stamp=self._node.get_clock().now().to_msg())
        colours = dict(zip(*_colour_table(places)))
        markers, shown = [], set()
        for index, p in enumerate(places):
            red, green, blue = (c / 255.0 for c in colours[p.query])
            tint = ColorRGBA(r=red, g=green, b=blue, a=0.8)
            d = MARKER_DIAMETER
            shown.add(index)
            markers.append(
                Marker(
                    header=header, ns=MEMORY_NS, id=index, type=Marker.SPHERE,
                    action=Marker.ADD, pose=_pose(p.x, p.y, p.z),
                    scale=Vector3(x=d, y=d, z=d), color=tint,
                )
            )  # fmt: skip
            markers.append(
                Marker(
                    header=header, ns=LABELS_NS, id=index, type=Marker.TEXT_VIEW_FACING,
                    action=Marker.ADD, pose=_pose(p.x, p.y, p.z + 1.5 * d),
                    scale=Vector3(z=d), color=tint, text=f'{p.query} ({_age(now - p.last_seen)})',
                )
            )  # fmt: skip
        for index in sorted(self._shown - shown):
            markers += [
                Marker(header=header, ns=ns, id=index, action=Marker.DELETE)
                for ns in (MEMORY_NS, LABELS_NS)
            ]
        self._shown = shown
        if markers:
            self._markers_pub.publish(MarkerArray(markers=markers))

    def _save(self) -> None:
        changes = self.memory.changes
        saved, self.file_problem = save_kept(
            self._file, 'memory_file', 'memory', lambda: self.memory.save(self._file),
            self._node.get_logger(), self._log,
        )  # fmt: skip
        if saved:
            self._saved, self._last_save = changes, time.monotonic()

    def close(self) -> None:
        """Write memory_file a last time (the node is stopping)."""
        if self._kept() and self.memory.changes != self._saved:
            self._save()

    def file_state(self) -> str:
        """memory_file as /diagnostics says it."""
        if self._file is None:
            return 'none (memory_file not set)'
        return f'not kept: {self.file_problem}' if self.file_problem else f'kept in {self._file}'

    def _kept(self) -> bool:
        return self._file is not None and not self.file_problem


def _colour_table(places):
    queries = sorted({p.query for p in places})
    return queries, query_colours(queries)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f'{seconds:.0f} s'
    if seconds < 7200:
        return f'{seconds / 60:.0f} min'
    return f'{seconds / 3600:.1f} h'


def _time(seconds: float):
    """A builtin_interfaces Time; clamped to what it can hold (int32 seconds), so that a
    response never fails to serialise."""
    from builtin_interfaces.msg import Time

    seconds = min(max(seconds, 0.0), 2.0**31 - 1) if math.isfinite(seconds) else 0.0
    whole = math.floor(seconds)
    return Time(sec=int(whole), nanosec=min(int((seconds - whole) * 1e9), 999_999_999))


def _pose(x: float, y: float, z: float) -> Pose:
    pose = Pose(position=Point(x=x, y=y, z=z))
    pose.orientation.w = 1.0
    return pose


def memory_from_parameters(node, value) -> NodeMemory | None:
    """The node's memory, where memory_frame is set (value(name): a parameter's value)."""
    if not value('memory_frame'):
        return None
    return NodeMemory(
        node,
        MemorySettings(
            tf_frame=value('memory_frame'),
            radius=value('memory_radius'),
            ttl_s=value('memory_ttl_s'),
            max_per_query=value('memory_max_places_per_query'),
            max_places=value('memory_max_places'),
            miss_frames=value('memory_miss_frames'),
            file=value('memory_file'),
        ),
    )


def add_recall_service(node, memory: NodeMemory | None, log) -> None:
    """~/recall: "where did you see it?", from the memory; without one, the answer says how
    to have one."""

    def on_recall(request, response):
        if memory is None:
            response.message = (
                'no memory: set memory_frame (with use_depth) to remember where things were seen'
            )
            return response
        return memory.recall(request, response)

    node.create_service(
        Recall, '~/recall', answered(on_recall, log, '~/recall'), qos_profile=SERVICE_QOS
    )
