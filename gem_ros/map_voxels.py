"""The storage under the map of dense features (gem_ros/feature_map.py): voxels as parallel
numpy arrays keyed by their packed coordinates, the views (fused frames' image embeddings)
that saw them, and which voxels touch. No locking here: FeatureMap holds its lock around
every call.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

COORD_BITS = 21  # voxel coordinates packed in one int64 key: +-2^20 voxels per axis
_OFFSET = 1 << (COORD_BITS - 1)
VIEWS_PER_VOXEL = 4  # the last views (fused frames) that saw a voxel
# Each voxel's fields: (dtype, trailing shape); `features` is [N, D] in float16.
FIELDS = {
    'keys': (np.int64, ()),
    'counts': (np.int32, ()),
    'misses': (np.int16, ()),
    'last_seen': (np.float64, ()),
    'cameras': (np.int16, ()),
    'colours': (np.uint8, (3,)),
    'seen_by': (np.int64, (VIEWS_PER_VOXEL,)),  # view ids, -1: none
}


def keys_of(points: np.ndarray, voxel_size: float) -> np.ndarray:
    cells = np.floor(points / voxel_size).astype(np.int64)
    cells = np.clip(cells + _OFFSET, 0, (1 << COORD_BITS) - 1)
    return (cells[:, 0] << (2 * COORD_BITS)) | (cells[:, 1] << COORD_BITS) | cells[:, 2]


def centres_of(keys: np.ndarray, voxel_size: float) -> np.ndarray:
    mask = (1 << COORD_BITS) - 1
    cells = np.stack(
        [(keys >> (2 * COORD_BITS)) & mask, (keys >> COORD_BITS) & mask, keys & mask], 1
    )
    return (cells - _OFFSET + 0.5) * voxel_size


class Voxels:
    """Parallel arrays, one row per voxel, and the index from key to row.

    The arrays have room for more rows than are used (`len(self)`), so a frame's new voxels
    are written in place and removed ones are filled from the end: a full map's frame touches
    its own rows only. (Concatenating and masking copied the whole map, 120 MB at 100k
    ViT-B-16 voxels, twice a frame, doubling the node's memory while it did.) Room grows by
    doubling (np.zeros: pages not yet written take no memory); rows past `len(self)` hold
    stale values until reused."""

    def __init__(self, dim: int = 0):
        self._arrays = {
            name: np.zeros((0, *shape), dtype) for name, (dtype, shape) in FIELDS.items()
        }
        self._arrays['features'] = np.zeros((0, dim), np.float16)
        self._used = 0
        self.index: dict[int, int] = {}

    def __len__(self) -> int:
        return self._used

    def __getitem__(self, name: str) -> np.ndarray:
        """The used rows of a field: a view, written through."""
        return self._arrays[name][: self._used]

    @property
    def dim(self) -> int:
        return self._arrays['features'].shape[1]

    def rows_for(self, keys: np.ndarray) -> np.ndarray:
        """The rows of these voxels, new ones appended (zero feature, no views)."""
        keys = keys.tolist()
        known = [self.index.get(k, -1) for k in keys]
        fresh = list(dict.fromkeys(k for k, row in zip(keys, known) if row < 0))
        if not fresh:
            return np.array(known, np.int64)
        start, end = self._used, self._used + len(fresh)
        self._make_room(end)
        for name, array in self._arrays.items():
            array[start:end] = -1 if name == 'seen_by' else 0
        self._arrays['keys'][start:end] = fresh
        self.index.update((k, start + i) for i, k in enumerate(fresh))
        self._used = end
        return np.array([self.index[k] for k in keys], np.int64)

    def _make_room(self, rows: int) -> None:
        room = len(self._arrays['keys'])
        if rows <= room:
            return
        room = max(rows, 2 * room)
        for name, array in self._arrays.items():
            grown = np.zeros((room, *array.shape[1:]), array.dtype)
            grown[: self._used] = array[: self._used]
            self._arrays[name] = grown

    def remove(self, rows: np.ndarray) -> None:
        """Drop these rows: the last used rows that stay move into their places."""
        rows = np.unique(np.asarray(rows, np.int64))
        if not len(rows):
            return
        keys = self._arrays['keys']
        for key in keys[rows].tolist():
            del self.index[key]
        used = self._used - len(rows)
        gone = np.zeros(self._used, bool)
        gone[rows] = True
        holes = np.nonzero(gone[:used])[0]
        movers = np.nonzero(~gone[used:])[0] + used
        for array in self._arrays.values():
            array[holes] = array[movers]
        self.index.update(zip(keys[holes].tolist(), holes.tolist()))
        self._used = used

    def evict(self, max_voxels: int) -> None:
        """Over max_voxels: the voxels seen longest ago go."""
        over = len(self) - max_voxels
        if over > 0:
            self.remove(np.argsort(self['last_seen'], kind='stable')[:over])

    def restore(self, arrays: dict) -> None:
        self._arrays = {n: np.asarray(arrays[n], self._arrays[n].dtype) for n in self._arrays}
        self._used = len(self._arrays['keys'])
        self.index = {int(k): i for i, k in enumerate(self._arrays['keys'])}


class Views:
    """The fused frames' image embeddings (float16), at most `limit`, the oldest dropped;
    ids count up for good, so a voxel's view id never names another view."""

    def __init__(self, limit: int):
        self.limit = limit
        self.ids = np.zeros(0, np.int64)
        self.embeddings: Optional[np.ndarray] = None
        self.stamps = np.zeros(0, np.float64)
        self._next = 0

    def add(self, embedding: np.ndarray, stamp: float) -> int:
        emb = embedding.astype(np.float16)[None]
        if self.embeddings is None or self.embeddings.shape[1] != emb.shape[1]:
            self.embeddings = np.zeros((0, emb.shape[1]), np.float16)
        view = self._next
        self._next += 1
        self.ids = np.append(self.ids, view)[-self.limit :]
        self.embeddings = np.concatenate([self.embeddings, emb])[-self.limit :]
        self.stamps = np.append(self.stamps, stamp)[-self.limit :]
        return view

    def restore(self, ids, embeddings, stamps) -> None:
        self.ids = np.asarray(ids, np.int64)[-self.limit :]
        self.embeddings = np.asarray(embeddings, np.float16)[-self.limit :]
        self.stamps = np.asarray(stamps, np.float64)[-self.limit :]
        self._next = int(self.ids.max()) + 1 if len(self.ids) else 0


def touching(keys: np.ndarray, reach: int = 1) -> list[np.ndarray]:
    """Groups of voxels (indices into `keys`) at most `reach` voxels apart along each axis
    (1: touching by faces, edges or corners)."""
    index = {int(k): i for i, k in enumerate(keys)}
    span = range(-reach, reach + 1)
    steps = [
        (dx << (2 * COORD_BITS)) + (dy << COORD_BITS) + dz
        for dx in span
        for dy in span
        for dz in span
        if dx or dy or dz
    ]
    group = [-1] * len(keys)
    groups = []
    for start in range(len(keys)):
        if group[start] >= 0:
            continue
        group[start] = len(groups)
        members, stack = [start], [start]
        while stack:
            key = int(keys[stack.pop()])
            for step in steps:
                other = index.get(key + step)
                if other is not None and group[other] < 0:
                    group[other] = len(groups)
                    members.append(other)
                    stack.append(other)
        groups.append(np.array(members))
    return groups
