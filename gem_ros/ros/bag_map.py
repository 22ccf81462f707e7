"""`gem-ros bag BAG --map OUT.gemmap`: the node's map of dense features built from a recording,
with the node's code from the frame on, and asked afterwards by `gem-ros map ask OUT.gemmap`.

    side = BagMap(path, args, colour_topics)      # opens the depth, camera_info and TF streams
    side.advance(log_time_ns)                     # before each colour frame goes to the engine
    engine = Engine(..., measure=side.measure, consume=side.consume)
    side.save(model)                              # OUT.gemmap, atomically

Every colour frame the bag tool runs (all, or every Nth) feeds the map, with or without
queries (the engine runs the image tower alone when none is given). Its geometry comes from
the bag's own streams, read beside the frames in recording order up to LOOKAHEAD_S past each
frame, so a depth image recorded just after its colour frame and the transforms around its
stamp are there:
- depth: `--depth-topic`, or the only Image topic whose name says depth; camera_info:
  `--info-topic`, or the CameraInfo topic beside the depth topic, or the only one;
- /tf and /tf_static into a tf2 buffer (the last TF_CACHE_S seconds of /tf, so a long bag
  takes bounded memory);
- each frame takes the depth nearest its stamp within sync_slop, the transform from its
  frame_id to --map-frame at its stamp, and goes through `FeatureMap.take_view`, as the
  node's frames do (gem_ros/ros/map_input.py): the same frames give the same map.
A frame without depth or transform is counted and said (once per reason), not fused.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from pathlib import Path
from typing import Optional

from gem_ros.feature_map import FeatureMap, save_map
from gem_ros.frame_result import FrameGeometry
from gem_ros.geometry import TransformUnavailable

log = logging.getLogger('gem-ros')

LOOKAHEAD_S = 1.0  # side messages read this far (recording time) past a colour frame
DEPTH_KEPT = 64  # depth images kept for pairing (4 s at 15 Hz): memory bounded
TF_CACHE_S = 60.0
MAP_NAME = 'map.gemmap'  # a set's map per bag: OUT/<name>/map.gemmap
TF_TOPICS = ('/tf', '/tf_static')
DEPTH_TYPE, INFO_TYPE = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo'
# The node's parameters the bag tool takes as flags (--map-frame, ...), with their defaults
# and checks.
NODE_SETTINGS = ('map_frame', 'map_voxel_size', 'map_max_voxels', 'depth_scale', 'sync_slop',
                 'depth_min', 'depth_max')  # fmt: skip


class MapInputError(ValueError):
    """A bag the map cannot be built from, said plainly."""


def add_map_arguments(p) -> None:
    """`gem-ros bag`'s map flags; defaults and ranges are the node's parameters'."""
    from gem_ros.ros.parameters import PARAMETERS_BY_NAME as SPECS

    g = p.add_argument_group('map of dense features (gem_ros/ros/bag_map.py)')
    g.add_argument(
        '--map',
        nargs='?',
        const='',
        metavar='OUT.gemmap',
        help='also build the map of dense features (what ~/ask_map asks) into this file; '
        f'with -o and no file: OUT/{MAP_NAME} (for several bags, one per bag); -q is then '
        'optional',
    )
    g.add_argument('--depth-topic', help='the depth image (default: the only one named depth)')
    g.add_argument('--info-topic', help='its camera_info (default: the one beside it)')
    for name in NODE_SETTINGS:
        spec = SPECS[name]
        default = 'map' if name == 'map_frame' else spec.default
        g.add_argument(
            '--' + name.replace('_', '-'),
            type=type(default),
            default=default,
            help=f'{spec.description} (default: %(default)s)',
        )


def check_map_arguments(args, several: bool) -> None:
    """The map flags against the rest, before anything runs (MapInputError)."""
    from gem_ros.ros.parameters import PARAMETERS_BY_NAME, check_value

    if args.map is None:
        return
    if several and args.map:
        raise MapInputError(
            f'with several bags each map is OUT/<name>/{MAP_NAME}: pass --map alone'
        )
    if not args.map and not args.out:
        raise MapInputError('--map needs a file (--map OUT.gemmap), or -o to put it in')
    if args.map and Path(args.map).exists() and not Path(args.map).is_file():
        raise MapInputError(f'--map {args.map}: something other than a file is there')
    for name in NODE_SETTINGS:  # the node's ranges are rclpy's to enforce; here, ours
        value, bounds = getattr(args, name), PARAMETERS_BY_NAME[name].range
        problem = check_value(name, value)
        if bounds and not bounds[0] <= value <= bounds[1]:
            problem = f'{name} must be within {bounds[0]} .. {bounds[1]}, got {value}'
        if problem:
            raise MapInputError(f"--{name.replace('_', '-')}: {problem}")
    if not args.map_frame.strip():
        raise MapInputError('--map-frame must name a TF frame')


def map_path(args, out: Optional[Path]) -> Optional[Path]:
    """Where this bag's map goes (None: no map)."""
    if args.map is None:
        return None
    return Path(args.map) if args.map else Path(out) / MAP_NAME


def depth_topics(connections, args) -> set:
    """Image topics that are depth, never a camera: --depth-topic, or those named depth."""
    if args.depth_topic:
        return {args.depth_topic}
    return {c.topic for c in connections if c.msgtype == DEPTH_TYPE and 'depth' in c.topic}


class BagMap:
    def __init__(self, path: Path, args, colour_topics):
        import tf2_ros
        from rclpy.duration import Duration
        from rosbags.rosbag2 import Reader

        self._reader = Reader(path)
        self._reader.open()
        try:
            self.depth_topic, self.info_topic = _choose_streams(
                path, self._reader.connections, args, colour_topics
            )
        except MapInputError:
            self._reader.close()
            raise
        self.tf_frame = args.map_frame
        self.depth_scale, self.slop_ns = args.depth_scale, int(args.sync_slop * 1e9)
        self.depth_range = (args.depth_min, args.depth_max)
        self.map = FeatureMap(args.map_voxel_size, args.map_max_voxels)
        wanted = {self.depth_topic, self.info_topic, *TF_TOPICS}
        chosen = [c for c in self._reader.connections if c.topic in wanted]
        self._stream = iter(self._reader.messages(connections=chosen))
        self._waiting = None  # a side message read past the frame it was read for
        self._depths: deque = deque(maxlen=DEPTH_KEPT)  # (stamp ns, Image)
        self._info = None  # the newest camera_info (intrinsics rarely change)
        self._tf = tf2_ros.Buffer(cache_time=Duration(seconds=TF_CACHE_S))
        self._tf_error = tf2_ros.TransformException
        self.fused = 0
        self.missed = Counter()  # why frames were not fused
        log.info(
            'map in %r from depth %s and %s, TF from %s',
            self.tf_frame, self.depth_topic, self.info_topic, ' and '.join(TF_TOPICS),
        )  # fmt: skip

    def advance(self, log_time_ns: int) -> None:
        """Read the side streams up to LOOKAHEAD_S past a colour frame's recording time."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        until = log_time_ns + int(LOOKAHEAD_S * 1e9)
        types = {self.depth_topic: Image, self.info_topic: CameraInfo}
        while True:
            item = self._waiting or next(self._stream, None)
            self._waiting = None
            if item is None:
                return
            connection, time_ns, raw = item
            if time_ns > until:
                self._waiting = item
                return
            topic = connection.topic
            msg = deserialize_message(bytes(raw), types.get(topic, TFMessage))
            if topic == self.depth_topic:
                self._depths.append((_stamp_ns(msg.header.stamp), msg))
            elif topic == self.info_topic:
                self._info = msg
            else:
                for transform in msg.transforms:
                    if topic == '/tf_static':
                        self._tf.set_transform_static(transform, 'bag')
                    else:
                        self._tf.set_transform(transform, 'bag')

    def measure(self, result) -> FrameGeometry:
        """The engine's measure: the frame's depth view and its TF lookup, from the bag."""
        from rclpy.time import Time

        from gem_ros.ros.depth_input import depth_view

        header = result.frame[0].header

        def lookup(tf_frame: str):
            try:
                t = self._tf.lookup_transform(
                    tf_frame, header.frame_id, Time.from_msg(header.stamp)
                )
            except self._tf_error as exc:
                raise TransformUnavailable(f'{type(exc).__name__}: {exc}') from exc
            p, q = t.transform.translation, t.transform.rotation
            return (p.x, p.y, p.z), (q.x, q.y, q.z, q.w)

        geometry = FrameGeometry(header.frame_id, [None] * len(result.detections), None, lookup)
        stamp = _stamp_ns(header.stamp)
        near = min(self._depths, key=lambda d: abs(d[0] - stamp), default=None)
        if near is None or abs(near[0] - stamp) > self.slop_ns or self._info is None:
            return geometry
        try:
            geometry.view = depth_view(near[1], self._info, self.depth_scale)
        except ValueError as exc:
            self._miss(f'bad depth image: {exc}')
        return geometry

    def consume(self, result) -> None:
        """The engine's consumer: the frame's patch tokens into the map, as the node's."""
        from gem_ros.gem.decode import as_host

        geometry = result.geometry
        if result.tokens is None or geometry is None or geometry.view is None:
            self._miss(f'no depth within --sync-slop of the frame on {self.depth_topic}')
            return
        try:
            pose = geometry.pose_to(self.tf_frame)
        except TransformUnavailable as exc:
            self._miss(f'no transform to {self.tf_frame!r}: {exc}')
            return
        tokens, embedding = result.tokens
        stamp = result.frame[0].header.stamp
        self.map.take_view(
            tokens, geometry.view, as_host(result.rgb), pose,
            stamp.sec + stamp.nanosec * 1e-9, result.camera,
            embedding=embedding, depth_range=self.depth_range,
        )  # fmt: skip
        self.fused += 1

    def save(self, model, path: Path) -> str:
        """The map to `path` (atomically), stamped with what made it; why not ('' when
        written, said in the log either way)."""
        from gem_ros.map_command import made_by
        from gem_ros.owned_files import PathRefused

        try:
            save_map(path, self.map, made_by(model, self.tf_frame, self.map.voxel_size))
        except (PathRefused, OSError) as exc:
            log.error('--map %s: not written: %s', path, exc)
            return f'--map {path}: not written: {exc}'
        missed = ', '.join(f'{n} {why}' for why, n in self.missed.most_common())
        log.info(
            '%s: %d voxels from %d frames%s', path, len(self.map), self.fused,
            f' ({missed})' if missed else '',
        )  # fmt: skip
        return ''

    def close(self) -> None:
        self._reader.close()

    def _miss(self, why: str) -> None:
        if why not in self.missed:
            log.warning('a frame is not in the map: %s', why)
        self.missed[why] += 1


def open_map(path: Optional[Path], args, colour_topics) -> tuple[Optional[BagMap], str]:
    """The map's side streams of the bag at `path` (None: a damaged bag read in pieces), or
    why the map cannot be built from it."""
    from gem_ros.ros.transforms import tf2_missing

    why = tf2_missing()
    if why is None and path is None:
        why = 'the map needs a bag that opens whole (this one is damaged)'
    if why is None:
        try:
            return BagMap(path, args, colour_topics), ''
        except (MapInputError, OSError) as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - rosbags' own errors for a bad bag
            why = f'{type(exc).__name__}: {exc}'
    return None, f'--map: {why}'


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _choose_streams(path, connections, args, colour_topics) -> tuple[str, str]:
    """(depth topic, camera_info topic) of the bag, or MapInputError naming what it has."""
    images = sorted(c.topic for c in connections if c.msgtype == DEPTH_TYPE)
    if args.depth_topic and args.depth_topic not in images:
        raise MapInputError(f'{path} has no Image topic {args.depth_topic!r}: {images}')
    depth = depth_topics(connections, args) - set(colour_topics)
    if len(depth) != 1:
        raise MapInputError(
            f'{path}: --map needs one depth image topic: pass --depth-topic (its Image topics: '
            f'{", ".join(images) or "none"})'
        )
    if not any(c.topic in TF_TOPICS for c in connections):
        raise MapInputError(f'{path} has no /tf or /tf_static: --map needs the camera\'s pose')
    (depth_topic,) = depth
    infos = sorted(c.topic for c in connections if c.msgtype == INFO_TYPE)
    if args.info_topic:
        if args.info_topic not in infos:
            raise MapInputError(f'{path} has no CameraInfo topic {args.info_topic!r}: {infos}')
        return depth_topic, args.info_topic
    beside = [t for t in infos if t.rsplit('/', 1)[0] == depth_topic.rsplit('/', 1)[0]]
    if len(beside) == 1 or len(infos) == 1:
        return depth_topic, (beside or infos)[0]
    raise MapInputError(
        f'{path}: --map needs the depth camera_info: pass --info-topic (its CameraInfo '
        f'topics: {", ".join(infos) or "none"})'
    )
