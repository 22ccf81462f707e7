"""A memory of where each queried thing was seen: places in one fixed frame (map, odom).

Pure Python and numpy, no ROS; the node feeds it (gem_ros/ros/memory_input.py) and so does
benchmarks/memory.py, through the same `observe`.

    memory = SightingMemory('map', radius=0.15, ttl_s=600)
    observe(memory, 'front', stamp_s, detections, camera_points, to_memory, view)
    memory.places('red mug', now_s)     # best first
    memory.save(path); memory.load(path, now_s)

- A sighting is one found query with a 3D point: its point in the memory's frame, stamp,
  presence confidence and camera.
- Sightings of one query within `radius` of a place merge into it: count, last seen, best
  confidence, a running mean position (the mean of its last MEAN_WINDOW sightings at most, so
  a place follows a thing that is nudged). Farther ones start a place of their own: two red
  mugs are two places.
- Negative evidence: a frame where the query is absent (its presence decision, held when the
  node holds) and a place of it in view, with nothing in front (depth reaches it), counts a
  miss; `miss_limit` misses in a row remove the place, a sighting in between resets them.
- Places expire `ttl_s` after they were last seen.
- Bounded: at most `max_per_query` places per query (a new one replaces the weakest) and
  `max_places` in all (a new one replaces the one seen longest ago), whatever the queries.
- The file: written atomically, starting with its format's name (gem_ros.owned_files), so
  that a file that is not one is never read as one, nor overwritten; every place read back is
  checked field by field (`place_from`), a bad one dropped with the reason.

Stamps are seconds on the clock of the frames' headers (the node's ROS time); ages are
measured on it too.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional, Sequence

from gem_ros.geometry import apply_transform, invert_transform, point_visible
from gem_ros.owned_files import ours, write_atomically

MEAN_WINDOW = 20  # sightings a place's mean position follows at most
CONFIRMED = 3  # sightings that make a place confirmed (ranked before unconfirmed ones)
FILE_VERSION = 1
# A memory file starts with its format's name; files of before it, with their version.
FILE_FORMAT = 'gem_ros memory'
SIGNATURES = (b'{"format": "gem_ros memory"', b'{"version": 1, "frame": ')
MAX_FILE_BYTES = 64 * 1024 * 1024  # a memory file larger than this is not read


class MemoryFileError(ValueError):
    """A memory file that cannot be used, said plainly."""


class ForeignFileError(MemoryFileError):
    """What is at the memory file's path is not a memory file: it is left as it is."""


@dataclass
class Place:
    query: str
    x: float
    y: float
    z: float
    sightings: int
    first_seen: float
    last_seen: float
    confidence: float  # the best presence confidence of its sightings
    camera: str  # the camera of its last sighting
    misses: int = 0  # frames in a row it was in view and the query absent

    @property
    def position(self) -> tuple[float, float, float]:
        return (self.x, self.y, self.z)

    def rank(self) -> tuple:
        """Best first: confirmed places before unconfirmed, then the most recently seen."""
        return (self.sightings >= CONFIRMED, self.last_seen, self.confidence)


PLACE_FIELDS = {f.name: {'float': float, 'int': int, 'str': str}[f.type] for f in fields(Place)}


# What a place read from a file may hold: a query as long as a query may be, a camera name,
# coordinates within this many metres of the frame's origin, and times not after the node's
# clock by more than FUTURE_SLACK_S.
MAX_QUERY_CHARS = 200
MAX_CAMERA_CHARS = 64
MAX_COORDINATE_M = 1e6
FUTURE_SLACK_S = 60.0
MAX_COUNT = 2**31 - 1


def place_from(entry, now: Optional[float] = None) -> Place:
    """A Place from one entry of a memory file, every field checked; ValueError says which
    field is wrong and why."""
    if not isinstance(entry, dict):
        raise ValueError(f'a {type(entry).__name__}, not an object')
    values = {}
    for name, kind in PLACE_FIELDS.items():
        if name not in entry:
            if name == 'misses':
                values[name] = 0
                continue
            raise ValueError(f'no {name}')
        value = entry[name]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value):
                raise ValueError(f'{name} is {value!r}, not a finite number')
            value = float(value)
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f'{name} is {value!r}, not a whole number')
        elif not isinstance(value, str):
            raise ValueError(f'{name} is {value!r}, not text')
        values[name] = value
    place = Place(**values)
    checks = (
        (not place.query.strip() or len(place.query) > MAX_QUERY_CHARS, 'query'),
        (len(place.camera) > MAX_CAMERA_CHARS, 'camera'),
        (any(abs(c) > MAX_COORDINATE_M for c in place.position), 'x, y, z'),
        (not 1 <= place.sightings <= MAX_COUNT, 'sightings'),
        (not 0 <= place.misses <= MAX_COUNT, 'misses'),
        (not 0.0 <= place.confidence <= 1.0, 'confidence'),
        (not 0.0 <= place.first_seen <= place.last_seen, 'first_seen, last_seen'),
        (now is not None and place.last_seen > now + FUTURE_SLACK_S, 'last_seen (future)'),
    )
    problem = next((name for bad, name in checks if bad), None)
    if problem:
        raise ValueError(f'{problem} out of range in {_short(entry)}')
    return place


def _short(entry: dict) -> str:
    text = json.dumps(entry, default=str)
    return text if len(text) <= 160 else text[:157] + '...'


class SightingMemory:
    """Places per query in the TF frame `tf_frame`; thread-safe (the node's worker feeds it,
    its executor answers ~/recall from it)."""

    def __init__(
        self,
        tf_frame: str,
        radius: float = 0.15,
        ttl_s: float = 600.0,
        max_per_query: int = 16,
        max_places: int = 512,
        miss_limit: int = 5,
        visibility_margin: Optional[float] = None,
    ):
        if not tf_frame:
            raise ValueError('a memory needs a TF frame')
        if not (radius > 0 and ttl_s > 0 and max_per_query >= 1 and max_places >= 1):
            raise ValueError(
                f'bad memory budget: radius {radius}, ttl_s {ttl_s}, '
                f'max_per_query {max_per_query}, max_places {max_places}'
            )
        self.tf_frame = tf_frame
        self.radius = radius
        self.ttl_s = ttl_s
        self.max_per_query = max_per_query
        self.max_places = max_places
        self.miss_limit = miss_limit
        # A reading this much nearer than a place still counts as seeing it (depth noise, the
        # thing's own extent): the radius by default.
        self.visibility_margin = radius if visibility_margin is None else visibility_margin
        self._places: dict[str, list[Place]] = {}
        self._lock = threading.Lock()
        self.changes = 0  # counts every change, for whoever saves it

    # --- evidence -------------------------------------------------------------------------
    def add(
        self,
        query: str,
        point: tuple[float, float, float],
        stamp: float,
        confidence: float,
        camera: str,
    ) -> Place:
        """One sighting: merged into the nearest place of `query` within the radius, or a
        new place (within the budgets). A non-finite point, stamp or confidence is refused."""
        if not all(math.isfinite(c) for c in (*point, stamp, confidence)):
            raise ValueError(
                f'a sighting needs a finite point, stamp and confidence, got {point} at {stamp}, '
                f'confidence {confidence}'
            )
        with self._lock:
            places = self._places.setdefault(query, [])
            near = _nearest(places, point, self.radius)
            if near is not None:
                near.sightings += 1
                weight = 1.0 / min(near.sightings, MEAN_WINDOW)
                near.x += (point[0] - near.x) * weight
                near.y += (point[1] - near.y) * weight
                near.z += (point[2] - near.z) * weight
                near.last_seen = max(near.last_seen, stamp)
                near.confidence = max(near.confidence, confidence)
                near.camera, near.misses = camera, 0
                self.changes += 1
                return near
            place = Place(query, *map(float, point), 1, stamp, stamp, confidence, camera)
            if len(places) >= self.max_per_query:
                places.remove(min(places, key=lambda p: (p.sightings, p.last_seen)))
            elif self._count() >= self.max_places:
                oldest = min(
                    (p for ps in self._places.values() for p in ps), key=lambda p: p.last_seen
                )
                self._places[oldest.query].remove(oldest)
            places.append(place)
            self._drop_empty()
            self.changes += 1
            return place

    def missed(self, query: str, in_view: Callable[[tuple[float, float, float]], bool]) -> int:
        """A frame where `query` was asked and judged absent: each of its places for which
        in_view(position) holds counts a miss, and goes at miss_limit. Returns how many went."""
        with self._lock:
            places = self._places.get(query, [])
            gone = 0
            for place in list(places):
                if not in_view(place.position):
                    continue
                place.misses += 1
                self.changes += 1
                if place.misses >= self.miss_limit:
                    places.remove(place)
                    gone += 1
            self._drop_empty()
            return gone

    def expire(self, now: float) -> int:
        """Drop the places last seen over ttl_s before `now`; how many went."""
        with self._lock:
            before = self._count()
            for query, places in self._places.items():
                self._places[query] = [p for p in places if now - p.last_seen <= self.ttl_s]
            self._drop_empty()
            gone = before - self._count()
            self.changes += bool(gone)
            return gone

    # --- answers --------------------------------------------------------------------------
    def places(self, query: str, now: Optional[float] = None) -> list[Place]:
        """Copies of the places of `query`, best first; those expired at `now` left out."""
        with self._lock:
            found = [
                Place(**asdict(p))
                for p in self._places.get(query, [])
                if now is None or now - p.last_seen <= self.ttl_s
            ]
        return sorted(found, key=Place.rank, reverse=True)

    def all_places(self) -> list[Place]:
        with self._lock:
            return [Place(**asdict(p)) for ps in self._places.values() for p in ps]

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    # --- file -----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Written atomically; PathRefused (nothing changed) when what is at `path` is not a
        memory file (gem_ros.owned_files)."""
        with self._lock:
            content = {
                'format': FILE_FORMAT,
                'version': FILE_VERSION,
                'frame': self.tf_frame,
                'places': [asdict(p) for ps in self._places.values() for p in ps],
            }
        write_atomically(Path(path), json.dumps(content), SIGNATURES)

    def load(self, path: Path, now: Optional[float] = None) -> tuple[int, list[str]]:
        """Read the places of a file written by save(): (places kept, why each dropped place
        was dropped). ForeignFileError when the file is not a memory file (to be left as it
        is); MemoryFileError when it is one that cannot be used (cut short, another version
        or frame); nothing is changed then. Every place is checked field by field (types,
        finite, ranges, not seen after `now` + FUTURE_SLACK_S); places over the budgets are
        left out, the most recently seen kept."""
        path = Path(path)
        if not ours(path, SIGNATURES):
            raise ForeignFileError(f'{path} is not a gem_ros memory file: left as it is')
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise MemoryFileError(f'{path} is over {MAX_FILE_BYTES >> 20} MiB')
            content = json.loads(path.read_text())
            tf_frame, version = content['frame'], content['version']
            entries = content['places']
        except MemoryFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise MemoryFileError(f'{path} cannot be read: {type(exc).__name__}: {exc}') from exc
        if version != FILE_VERSION:
            raise MemoryFileError(f'{path} is version {version!r}, not {FILE_VERSION}')
        if tf_frame != self.tf_frame:
            raise MemoryFileError(
                f'{path} holds places in frame {tf_frame!r}, not memory_frame {self.tf_frame!r}'
            )
        if not isinstance(entries, list):
            raise MemoryFileError(f'{path}: places is a {type(entries).__name__}, not a list')
        places, dropped = [], []
        for i, entry in enumerate(entries):
            try:
                places.append(place_from(entry, now))
            except ValueError as exc:
                dropped.append(f'place {i}: {exc}')
        kept = 0
        for place in sorted(places, key=lambda p: p.last_seen, reverse=True):
            with self._lock:
                mine = self._places.setdefault(place.query, [])
                if len(mine) < self.max_per_query and self._count() < self.max_places:
                    mine.append(place)
                    kept += 1
                self._drop_empty()
        self.changes += 1
        return kept, dropped

    def _count(self) -> int:
        return sum(len(ps) for ps in self._places.values())

    def _drop_empty(self) -> None:
        for query in [q for q, ps in self._places.items() if not ps]:
            del self._places[query]


def _nearest(places: Sequence[Place], point, radius: float) -> Optional[Place]:
    best, best_d2 = None, radius * radius
    for place in places:
        d2 = sum((a - b) ** 2 for a, b in zip(place.position, point))
        if d2 <= best_d2:
            best, best_d2 = place, d2
    return best


def observe(
    memory: SightingMemory,
    camera: str,
    stamp: float,
    detections: Sequence,
    points: Sequence[Optional[tuple[float, float, float]]],
    to_memory: tuple[tuple[float, float, float], tuple[float, float, float, float]],
    view=None,
) -> int:
    """One frame's evidence. detections: each with query, found, confidence; points: per
    detection its 3D point in the camera's frame, or None; to_memory: (translation, rotation
    xyzw) from the camera's frame to the memory's at the frame's stamp; view: (depth [h, w]
    metres, K of the depth grid) of the frame, which lets an absent query's places in view be
    missed (None: no negative evidence). Returns the sightings added."""
    added = 0
    in_view = None
    if view is not None:
        depth_m, K = view
        back = invert_transform(*to_memory)

        def in_view(position):
            camera_point = apply_transform(position, *back)
            return point_visible(camera_point, depth_m, K, memory.visibility_margin)

    for det, point in zip(detections, points):
        if det.found and point is not None:
            memory.add(det.query, apply_transform(point, *to_memory), stamp, det.confidence, camera)
            added += 1
        elif not det.found and in_view is not None:
            memory.missed(det.query, in_view)
    return added
