"""`gem-ros bag`: GEM over a recorded ROS 2 bag, every frame, as fast as the model runs.

    gem-ros bag recording/ -q "red mug; person" -o labelled/ [--topic /cam/image_raw]
        [--every 5] [--overlay] [--resume] [--model ... --method ... (as gem-ros locate)]
    gem-ros bag recording/ -q "red mug" -o labelled/ --topic /front/image --topic /left/image
    gem-ros bag a/ b/ fleet/ bags.txt -q "red mug" -o out/ [--ray [ADDRESS]]   (many bags:
        OUT/<name> per bag and OUT/index.jsonl, serially or on Ray: gem_ros/ros/bag_command.py)

Reads a rosbag2 bag (MCAP or sqlite3, with `rosbags`), the image topics given or the only one
there (sensor_msgs/Image or CompressedImage). With several topics each is a camera of the
node: topic /front/image gives camera `front_image`, its outputs on /<node>/front_image/...,
and every line of results.jsonl names its topic. Every frame (or every Nth) goes through the
node's engine (gem_ros/engine.py, offline mode: the same conversion, budgets, model call and
checks as the node's frames) and its results are written as the node publishes them:
- an output bag (MCAP by default) with, per frame, GemResult on /<node>/results,
  vision_msgs/Detection2DArray on /<node>/detections (where vision_msgs is installed) and,
  with --overlay, the overlay image on /<node>/overlay; the input's timestamps (the
  recording time and the header) and frame ids;
- `results.jsonl` inside it: one line per frame, what `gem-ros locate` writes per image.

Nothing is lost: ctrl-c or kill (SIGTERM) finish the frame in flight and close the output,
which then holds every frame finished; `--resume` continues an output where it stopped. A
corrupt or truncated input bag is reported with the frame where it ends, and what was read
is kept.

ROS messages are (de)serialised with rclpy, as the node does; rosbags reads and writes the
bag files, with the message definitions of the installed packages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger('gem-ros')

IMAGE_TYPES = {
    'sensor_msgs/msg/Image': 'raw',
    'sensor_msgs/msg/CompressedImage': 'compressed',
}
JSONL = 'results.jsonl'
EXIT_INTERRUPTED, EXIT_BAD_INPUT = 130, 3


class BagError(ValueError):
    """An input or output the tool cannot use, said plainly."""


def add_bag_arguments(p) -> None:
    """The flags of `gem-ros bag` (its parser: gem_ros/ros/bag_command.py, which adds the set's)."""
    from gem_ros.model_args import add_model_arguments
    from gem_ros.ros.bag_map import add_map_arguments

    p.add_argument(
        'input',
        nargs='+',
        help='the rosbag2 bag (a folder with metadata.yaml); or several, a folder of bags, a '
        'list file (.txt, one bag a line): then OUT is a folder with OUT/<name> per bag',
    )
    p.add_argument(
        '-q',
        '--queries',
        action='append',
        help="queries separated by ',' or ';' (optional with --map)",
    )
    p.add_argument(
        '-o',
        '--out',
        help='the output bag folder (must not exist); with several bags or --ray, the folder of '
        'the output bags and their index.jsonl (optional with --map FILE)',
    )
    p.add_argument(
        '--topic',
        action='append',
        help='image topic; repeat it for several cameras (default: the only image topic)',
    )
    p.add_argument('--every', type=int, default=1, help='every Nth frame (default: every one)')
    p.add_argument('--overlay', action='store_true', help='also write the overlay images')
    p.add_argument(
        '--mask-format',
        choices=('full', 'patch', 'none'),
        default='full',
        help='QueryResult.mask as the node\'s mask_format (default: %(default)s)',
    )
    p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    p.add_argument('--node-name', default='gem', help='topics are /<this>/results, ...')
    p.add_argument('--resume', action='store_true', help='continue an interrupted output')
    p.add_argument('--quiet', action='store_true', help='no progress line')
    add_model_arguments(p)
    add_map_arguments(p)


def check_arguments(args: argparse.Namespace, several: bool = False) -> list:
    """What one bag and a set both need, checked before anything runs: the queries, the
    output and the map's flags."""
    from gem_ros.ros.bag_map import check_map_arguments

    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise BagError(
            'gem-ros bag needs rosbags: pip install "gem_ros[bag]" (rosbags mcap)'
        ) from None
    if args.every < 1:
        raise BagError(f'--every must be 1 or more, got {args.every}')
    if not args.out and (several or args.map is None or args.queries):
        raise BagError(
            '-o is needed: the output bag (with -q), or the folder of outputs (several bags)'
        )
    check_map_arguments(args, several)  # MapInputError is a ValueError, said as one
    return checked_queries(args)


def run(args: argparse.Namespace) -> int:
    """One bag: `-o` is its output bag."""
    from gem_ros.settings import FrameSettings, from_arguments

    queries = check_arguments(args)
    source = _open_input(Path(args.input[0]), args.topic, args)
    out = Path(args.out) if args.out else None
    previous = _take_previous(out, args.resume) if out is not None else None
    frame_settings = from_arguments(FrameSettings, args)
    job = BagJob(args, queries, frame_settings, source, out, previous)
    with StopOnSignals() as stop:
        return job.run(stop)


def checked_queries(args) -> list:
    if not args.queries and args.map is not None:
        return []  # the map alone: the image tower runs, nothing is labelled
    from gem_ros.queries import QueryError, check_queries, parse_queries

    queries = check_queries(parse_queries(';'.join(args.queries)))
    if not queries:
        raise QueryError("no queries: pass -q 'red mug; person'")
    return queries


class Source:
    """The input bag's image topics: `messages()` yields (topic, recording time ns, raw CDR)
    in recording order; `kinds` holds each topic's 'raw' or 'compressed'."""

    def __init__(self, topics: dict, total: int, messages, close=lambda: None, path=None):
        self.kinds = {topic: IMAGE_TYPES[msgtype] for topic, msgtype in topics.items()}
        self.total, self.messages, self.close = total, messages, close
        self.path = path  # the bag, where it opened whole (the map reads its other topics)

    def camera(self, topic: str) -> str:
        """The camera a topic is: '' for a bag's one topic, else its name as a namespace."""
        if len(self.kinds) == 1:
            return ''
        return ''.join(c if c.isalnum() else '_' for c in topic.strip('/')) or 'camera'


def _topic_list(topic) -> Optional[list]:
    return None if topic is None else [topic] if isinstance(topic, str) else list(topic)


def _open_input(path: Path, topic, args) -> Source:
    """The bag's camera topics: `topic`, or the only image topic (not a depth one when the
    map is built: gem_ros/ros/bag_map.py)."""
    from rosbags.rosbag2 import Reader

    from gem_ros.ros.bag_map import depth_topics

    topic = _topic_list(topic)
    if not path.exists():
        raise BagError(f'no bag at {path}')
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises its own types for every kind of bad file
        stream = _truncated_mcap(path, topic, exc)
        if stream is not None:
            return stream
        raise BagError(f'cannot read the bag {path}: {type(exc).__name__}: {exc}') from exc
    images = {(c.topic, c.msgtype) for c in reader.connections if c.msgtype in IMAGE_TYPES}
    if topic is None and args.map is not None:
        images = {i for i in images if i[0] not in depth_topics(reader.connections, args)}
    try:
        topics = _choose(path, images, topic)
    except BagError:
        reader.close()
        raise
    chosen = [c for c in reader.connections if c.topic in topics]
    return Source(
        topics,
        sum(c.msgcount for c in chosen),
        lambda: ((c.topic, t, raw) for c, t, raw in reader.messages(connections=chosen)),
        reader.close,
        path,
    )


def _choose(path, images: set, topics: Optional[list]) -> dict:
    """{topic: message type} of the image topics to read: `topics`, or the only one."""
    names = ', '.join(sorted(t for t, _ in images)) or 'none'
    if topics is not None:
        out = {}
        for topic in topics:
            found = [i for i in images if i[0] == topic]
            if not found:
                raise BagError(f'{path} has no image topic {topic!r}; its image topics: {names}')
            out[topic] = found[0][1]
        return out
    if len(images) != 1:
        raise BagError(f'{path}: pass --topic, one or more of its image topics: {names}')
    return dict(images)


def _truncated_mcap(path: Path, topic, error: Exception) -> Optional[Source]:
    """A recording cut short (the recorder killed, the disk full) has no MCAP summary, which
    rosbags needs; the `mcap` library streams its complete chunks instead. None when it is not
    an MCAP file or `mcap` is not installed."""
    files = [path] if path.is_file() else sorted(path.glob('*.mcap'))
    if len(files) != 1:
        return None
    try:
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader
    except ImportError:
        log.warning('%s: reading a damaged MCAP file needs `pip install mcap`', files[0])
        return None

    def records():
        with open(files[0], 'rb') as f:
            yield from StreamReader(f, emit_chunks=False).records

    schemas, channels = {}, {}
    try:
        for record in records():
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                channels[record.id] = (record.topic, schemas.get(record.schema_id, ''))
    except Exception:  # noqa: BLE001 - where the file ends; the second pass reports it
        pass
    images = {c for c in channels.values() if c[1] in IMAGE_TYPES}
    topics = _choose(files[0], images, topic)
    ids = {i: c[0] for i, c in channels.items() if c[0] in topics}
    log.warning(
        '%s cannot be opened as a whole (%s): reading its complete chunks in order', path, error
    )

    def messages():
        for record in records():  # raises where the file ends: the run says at which frame
            if isinstance(record, Message) and record.channel_id in ids:
                yield ids[record.channel_id], record.log_time, record.data

    return Source(topics, 0, messages)


def _take_previous(out: Path, resume: bool) -> Optional[Path]:
    """The previous output, moved aside for --resume (its frames are copied over); None."""
    if not out.exists():
        if resume:
            log.info('%s does not exist: starting from the first frame', out)
        return None
    if not resume:
        raise BagError(f'{out} exists: --resume continues it, or choose another -o')
    # --resume moves the previous output aside and deletes it once its frames are copied:
    # only what a bag run wrote (its results.jsonl), never a user's folder (issue 39).
    aside = out.with_name(f'{out.name}.resuming')
    for path in (out, aside):
        if os.path.lexists(path) and not _bag_output(path):
            raise BagError(
                f'{path} is not an output of gem-ros bag (no {JSONL} in it): --resume moves '
                'and deletes only those; nothing was changed (choose another -o)'
            )
    if aside.exists():  # a resume that was itself interrupted: keep the newer if it closed
        if not (out / 'metadata.yaml').is_file():
            shutil.rmtree(out)
            return aside
        shutil.rmtree(aside)
    out.rename(aside)
    return aside


def _bag_output(path: Path) -> bool:
    """Whether `path` is a folder a gem-ros bag run wrote (whole or interrupted)."""
    return path.is_dir() and not path.is_symlink() and (path / JSONL).is_file()


class StopOnSignals:
    """ctrl-c and SIGTERM ask to stop after the frame in flight (and stop being fatal)."""

    def __enter__(self) -> threading.Event:
        self.event = threading.Event()
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._old[signum] = signal.signal(signum, self._handle)
        return self.event

    def _handle(self, signum, frame):
        if not self.event.is_set():
            log.warning('stopping after this frame (%s)', signal.Signals(signum).name)
        self.event.set()

    def __exit__(self, *exc):
        for signum, handler in self._old.items():
            signal.signal(signum, handler)


class BagJob:
    """One bag labelled into `out`. `load(settings)` gives the model (default: loads it from
    the flags); a set of bags passes one that loads it once for all of them."""

    def __init__(
        self, args, queries, frame_settings, source: Source, out: Path, previous, load=None
    ):
        from gem_ros.model_args import model_from_args
        from gem_ros.ros.bag_map import map_path

        self.args, self.queries, self.frame_settings = args, queries, frame_settings
        self.source, self.out, self.previous = source, out, previous
        self.load = load or (lambda settings: model_from_args(self.args))
        self.error = ''  # why the run did not finish every frame, for a set's index
        node = args.node_name.strip('/') or 'gem'
        # Per camera (one per input topic), its output topics: /<node>[/<camera>]/<kind>.
        self.cameras = {topic: source.camera(topic) for topic in source.kinds}
        self.topics = {
            camera: {
                k: f'/{node}/{camera}/{k}' if camera else f'/{node}/{k}'
                for k in ('results', 'detections', 'overlay')
            }
            for camera in self.cameras.values()
        }
        self.written = 0
        self.failed = 0
        self.map_path = map_path(args, out)
        self._done: set = set()  # (camera, log time) of frames a previous output holds

    def run(self, stop: threading.Event) -> int:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from gem_ros.engine import Engine, RunSettings
        from gem_ros.ros.image_conversion import compressed_msg_to_rgb
        from gem_ros.settings import ModelSettings, from_arguments
        from gem_ros.threads import ThrottledLog

        # The node's engine, run on this thread: every frame, none dropped.
        def convert(frame, max_pixels: int):
            msg, to_rgb = frame
            if to_rgb is compressed_msg_to_rgb:  # a JPEG decodes on the model's GPU, if it can
                return to_rgb(msg, max_pixels, engine.model.device)
            return to_rgb(msg, max_pixels)

        side = self._open_map()
        if self.error:
            return EXIT_BAD_INPUT
        engine = Engine(
            ThrottledLog(log, 5.0),
            convert,
            self._write,
            load=self.load,
            local_weights_hint='--pretrained /path/to/open_clip_pytorch_model.bin',
            threads=False,
            measure=side and side.measure,
            consume=side and side.consume,
        )
        engine.update_settings(RunSettings(frame=self.frame_settings))
        engine.want_patch_logits = self.args.mask_format == 'patch'
        engine.set_queries(self.queries)
        if side is not None:  # every frame feeds the map, with or without queries
            engine.tokens_wanted = lambda camera: True
        self.error = engine.load_now(from_arguments(ModelSettings, self.args)) or ''
        if self.error:
            self.source.close()
            side and side.close()
            return 2  # the engine said why

        writer = None
        if self.out is not None:
            storage = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
            writer = Writer(self.out, version=8, storage_plugin=storage[self.args.storage])
            writer.open()
            self.writer = writer
            self.connections = _connections(writer, self.topics, self.args.overlay)
            self.jsonl = open(self.out / JSONL, 'a', encoding='utf-8')
        code = 0
        try:
            self._done = self._copy_previous()
            code = self._frames(engine, side, stop)
        finally:
            if writer is not None:
                self.jsonl.close()
                writer.close()
            self.source.close()
            side and side.close()
        if side is not None:  # what was built is kept, interrupted or not
            if not self.queries:  # nothing is published: the frames count as the map's
                self.written = side.fused
            why = side.save(engine.model, self.map_path)
            if why:
                self.error, code = why, EXIT_BAD_INPUT
        if self.previous is not None and code != EXIT_BAD_INPUT:
            shutil.rmtree(self.previous, ignore_errors=True)
        log.info(
            '%s: %d frames %s%s%s',
            self.out or self.map_path,
            self.written,
            'written' if self.out and self.queries else 'run into the map',
            f', {self.failed} without a result (see above)' if self.failed else '',
            '; interrupted: --resume continues it' if code == EXIT_INTERRUPTED else '',
        )
        return code

    def _open_map(self):
        """The map's side streams (gem_ros/ros/bag_map.py) where --map is given; None. A bag
        the map cannot be built from sets self.error."""
        if self.map_path is None:
            return None
        from gem_ros.ros.bag_map import open_map

        side, self.error = open_map(self.source.path, self.args, list(self.source.kinds))
        if self.error:
            log.error('%s', self.error)
            self.source.close()
        return side

    def _copy_previous(self) -> set:
        """With --resume: the previous output's frames, copied; their input log times."""
        if self.previous is None:
            return set()
        from rosbags.rosbag2 import Reader

        done, lines = set(), {}
        if (self.previous / JSONL).is_file():
            for line in (self.previous / JSONL).read_text(encoding='utf-8').splitlines():
                try:
                    record = json.loads(line)
                    camera = self.cameras.get(record.get('topic'), '')
                    lines[camera, record['log_time_ns']] = line
                except (ValueError, KeyError):
                    continue  # a line cut by a kill
        by_topic = {
            c.topic: (camera, k)
            for camera, kinds in self.connections.items()
            for k, c in kinds.items()
        }
        old = None
        try:
            old = Reader(self.previous)
            old.open()
            messages = ((c.topic, t, raw) for c, t, raw in old.messages())
        except Exception as exc:  # killed without closing: what its complete chunks hold
            old = None
            keys, messages = _complete_frames(self.previous, by_topic, self.connections, lines)
            kept = f'keeping the {len(keys)} frames of its complete chunks' if keys else ''
            log.warning(
                'the previous output cannot be read (%s): %s', exc, kept or 'starting again'
            )
        try:
            for topic, timestamp, raw in messages:
                camera, kind = by_topic.get(topic, (None, None))
                if kind is None:
                    continue
                self.writer.write(self.connections[camera][kind], timestamp, raw)
                if kind == 'results':
                    done.add((camera, timestamp))
        except Exception as exc:  # noqa: BLE001 - damaged further on: keep what was copied
            log.warning('the previous output ends early (%s): %d frames kept', exc, len(done))
        finally:
            if old is not None:
                old.close()
        for key in sorted(done, key=lambda k: (k[1], k[0])):
            if key in lines:
                self.jsonl.write(lines[key] + '\n')
        self.written = len(done)
        log.info('resuming: %d frames kept from the previous output', len(done))
        return done

    def _frames(self, engine, side, stop: threading.Event) -> int:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CompressedImage, Image

        from gem_ros.ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb

        readers = {
            topic: (Image, image_msg_to_rgb)
            if kind == 'raw'
            else (CompressedImage, compressed_msg_to_rgb)
            for topic, kind in self.source.kinds.items()
        }
        progress = Progress(self.source.total, self.args.every, self.args.quiet)
        index = -1
        messages = self.source.messages()
        while True:
            if stop.is_set():
                return EXIT_INTERRUPTED
            try:
                topic, timestamp, raw = next(messages)
            except StopIteration:
                break
            except Exception as exc:  # a corrupt or truncated bag: keep what was read
                self.error = (
                    f'the input bag ends at frame {index + 1} (after '
                    f'{_when(self._last_time) if index >= 0 else "its start"}): '
                    f'{type(exc).__name__}: {exc}'
                )
                log.error('%s; the %d frames before it are written', self.error, self.written)
                return EXIT_BAD_INPUT
            index += 1
            self._last_time = timestamp
            camera = self.cameras[topic]
            # A frame a previous output holds is run again only for the map (not written).
            if index % self.args.every or ((camera, timestamp) in self._done and side is None):
                continue
            if side is not None:
                side.advance(timestamp)  # its depth and transforms, read beside it
            msg_type, to_rgb = readers[topic]
            self._current = (index, timestamp, topic)
            try:
                msg = deserialize_message(bytes(raw), msg_type)
            except Exception as exc:
                self._record(index, timestamp, None, error=f'cannot deserialise: {exc}')
                continue
            why = engine.process((msg, to_rgb), camera)
            if why is not None:
                self._record(index, timestamp, msg.header, error=why)
            progress.tick()
        progress.end()
        return 0

    def _write(self, result) -> None:
        """The engine's output for one frame (a FrameResult, this thread): the node's messages
        and a line."""
        from rclpy.serialization import serialize_message

        from gem_ros.gem.decode import as_host
        from gem_ros.overlay import draw_overlay
        from gem_ros.ros import messages
        from gem_ros.ros.image_conversion import rgb_to_image_msg

        header, rgb, detections = result.frame[0].header, result.rgb, result.published
        seconds, settings = result.seconds, result.settings
        index, timestamp, topic = self._current
        if (self.cameras[topic], timestamp) in self._done:
            return  # written before --resume: run again for the map only
        out = {
            'results': lambda: messages.gem_result(
                header,
                detections,
                seconds,
                None,
                self.args.mask_format,
                settings.frame.mask_threshold,
            ),
            'detections': lambda: messages.detection_array(header, detections),
            'overlay': lambda: rgb_to_image_msg(draw_overlay(as_host(rgb), detections), header),
        }
        for kind, connection in self.connections[self.cameras[topic]].items():
            self.writer.write(connection, timestamp, serialize_message(out[kind]()))
        self._record(index, timestamp, header, detections, rgb.shape, seconds)

    def _record(
        self, index, timestamp, header, detections=None, shape=None, seconds=None, error=''
    ):
        from gem_ros.model_args import detection_records

        record = {'frame': index, 'log_time_ns': timestamp}
        if len(self.cameras) > 1:
            record['topic'] = self._current[2]
        if header is not None:
            record['stamp'] = {'sec': header.stamp.sec, 'nanosec': header.stamp.nanosec}
            record['frame_id'] = header.frame_id
        if error:
            self.failed += 1
            record['error'] = error
        else:
            self.written += 1
            record.update(
                width=shape[1],
                height=shape[0],
                inference_seconds=round(seconds, 4),
                queries=detection_records(detections),
            )
        if self.out is None:
            return  # the map alone: no lines
        # Flushed per frame: after a kill the lines say what was finished.
        self.jsonl.write(json.dumps(record, ensure_ascii=False) + '\n')
        self.jsonl.flush()


def _connections(writer, topics_of: dict, overlay: bool) -> dict:
    """Per camera, its output topics' connections in `writer` (topics_of: camera -> kind ->
    topic): results, detections where vision_msgs is installed, overlay if asked."""
    from gem_ros.ros import messages

    typestore = _typestore()
    types = {
        'results': 'gem_ros/msg/GemResult',
        'detections': 'vision_msgs/msg/Detection2DArray',
        'overlay': 'sensor_msgs/msg/Image',
    }
    wanted = ['results']
    if messages.Detection2DArray is not None and types['detections'] in typestore.fielddefs:
        wanted.append('detections')
    else:
        log.info('vision_msgs is not installed: no detections in the output')
    if overlay:
        wanted.append('overlay')
    return {
        camera: {k: writer.add_connection(topics[k], types[k], typestore=typestore) for k in wanted}
        for camera, topics in topics_of.items()
    }


def _complete_frames(folder: Path, by_topic: dict, connections: dict, lines: dict):
    """An output killed before it closed has no MCAP summary, which rosbags needs; its
    chunks written whole (about 1 MiB each) are read with the `mcap` library. The frames in
    them with every kind of message and a line in results.jsonl: (their keys (camera, time), a
    generator of their (topic, time, raw)); nothing without `mcap` or one MCAP file."""
    files = sorted(folder.glob('*.mcap'))
    try:
        from mcap.records import Channel, Message
        from mcap.stream_reader import StreamReader
    except ImportError:
        return set(), iter(())
    if len(files) != 1:
        return set(), iter(())

    def records():
        topics = {}
        with open(files[0], 'rb') as f:
            try:
                for record in StreamReader(f, emit_chunks=False).records:
                    if isinstance(record, Channel):
                        topics[record.id] = record.topic
                    elif isinstance(record, Message) and topics.get(record.channel_id) in by_topic:
                        yield topics[record.channel_id], record.log_time, record.data
            except Exception:  # noqa: BLE001 - where the kill cut the file
                return

    seen = {}
    for topic, timestamp, _ in records():
        camera, kind = by_topic[topic]
        seen.setdefault((camera, timestamp), set()).add(kind)
    keys = {k for k, got in seen.items() if got == set(connections[k[0]]) and k in lines}
    return keys, (m for m in records() if (by_topic[m[0]][0], m[1]) in keys)


def _when(timestamp_ns: int) -> str:
    return f'recording time {timestamp_ns / 1e9:.3f} s'


def _typestore():
    """rosbags' types of this ROS distro, with gem_ros's and vision_msgs' messages added
    from their installed definitions (share/<package>/msg/*.msg)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from gem_ros.doctor import ros_distro

    store = {'humble': Stores.ROS2_HUMBLE, 'kilted': Stores.ROS2_KILTED}.get(
        ros_distro(), Stores.ROS2_JAZZY
    )
    typestore = get_typestore(store)
    for package in ('vision_msgs', 'gem_ros'):
        folder = _msg_folder(package)
        if folder is None:
            continue
        types = {}
        for path in sorted(folder.glob('*.msg')):
            types.update(get_types_from_msg(path.read_text(), f'{package}/msg/{path.stem}'))
        typestore.register(types)
    return typestore


def _msg_folder(package: str) -> Optional[Path]:
    from gem_ros.doctor import share_directory

    share = share_directory(package)
    folder = share / 'msg' if share is not None else None
    if (folder is None or not folder.is_dir()) and package == 'gem_ros':
        folder = Path(__file__).resolve().parents[2] / 'msg'  # a source checkout
    return folder if folder is not None and folder.is_dir() else None


class Progress:
    """'frames 120/600, 4.1 frames/s, ETA 1m57s' on a terminal; nothing otherwise."""

    def __init__(self, total: int, every: int, quiet: bool):
        self.total = (total + every - 1) // every
        self.count = 0
        self.started = time.monotonic()
        self.shown = sys.stderr.isatty() and not quiet

    def tick(self) -> None:
        self.count += 1
        if not self.shown:
            return
        elapsed = time.monotonic() - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if self.total <= 0:  # a damaged bag: its length is unknown
            sys.stderr.write(f'\rframes {self.count}, {rate:.1f} frames/s  ')
        else:
            left = (self.total - self.count) / rate if rate > 0 else 0.0
            sys.stderr.write(
                f'\rframes {self.count}/{self.total}, {rate:.1f} frames/s, '
                f'ETA {int(left // 60)}m{int(left % 60):02d}s  '
            )
        sys.stderr.flush()

    def end(self) -> None:
        if self.shown:
            sys.stderr.write('\n')
