"""A map of GEM's dense features in 3D, asked any words afterwards (issue 40). No ROS.

    fmap = FeatureMap(voxel_size=0.05, max_voxels=100_000)
    points, feats, colours = lift_patches(tokens, depth_m, K, rgb, depth_min, depth_max)
    fmap.fuse(apply_pose(points, pose), feats, colours, stamp_s, 'front')
    fmap.clear_seen(view_to_camera, depth_m, K)   # free space the camera saw through
    places = fmap.ask(text, backgrounds, logit_scale, max_places=5)

- Lifting: each patch's L2-normalised token (the running method's dense feature, the one a
  frame's heatmaps compare with text) is placed at the median valid depth inside its patch
  (within depth_min/depth_max; fewer than MIN_PATCH_READINGS valid readings: skipped),
  back-projected through the patch centre.
- Fusion: a voxel keeps a feature that follows what was seen there, a running mean over at
  most FOLLOW_FRAMES observations (so an old view fades within a few frames: a surface that
  changes colour or a thing put in its place answers for what is there now), renormalised;
  its count, last time seen, camera and mean colour.
- A moved object stops answering where it was: each frame clears the voxels it sees through
  (in the view, in front of the measured depth by more than `margin`): after `miss_limit`
  such frames in a row a voxel is removed; an observation in between resets its count.
- Bounded: at most `max_voxels`; when full, the voxels seen longest ago go first. Features are
  stored in float16 (D * 2 bytes a voxel; ask's scores differ from float32 by under 1e-3).
- Views: each fused frame's CLIP image embedding is kept (at most `max_views`, the oldest
  dropped), and each voxel remembers the last VIEWS_PER_VOXEL views that saw it.
- Asking, as a frame decides (gem_ros/gem/presence.py, then the heatmap's mask): a query is
  in a view when the view's image embedding prefers it over the background prompts (its
  softmax share at the model's logit scale at least `threshold`); no view with it: "nothing
  like that in the map". Among the voxels those views saw, the query's cosine with each
  voxel's feature, min-max normalised over them, at least `mask_threshold` marks its voxels;
  places are groups of such voxels at most PLACE_REACH_M apart (neighbouring patches land
  about a patch apart, so voxels of one thing need not touch), ranked by their views' best
  presence times their likeness (mean heat times the log of their size). Why not per voxel
  against the background prompts alone: patch features' absolute similarities are not
  calibrated (with the scene CLIP every voxel, a red one included, prefers "wall" to "red" by
  0.2 cosine), while the image embedding's presence is (it found every coloured square
  present, and no other).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from gem_ros.map_voxels import VIEWS_PER_VOXEL, Views, Voxels, centres_of, keys_of, touching
from gem_ros.owned_files import ours, replace_atomically

FOLLOW_FRAMES = 4  # a voxel's feature is the mean of at most this many recent observations
MIN_PATCH_READINGS = 4  # valid depth readings a patch needs to be placed
# Voxels of a query this near each other are one place: neighbouring patches land about a
# patch apart (ViT-B-16 at 448 on 640x480 frames: 6.5 cm at 2 m, 10 cm at 3 m).
PLACE_REACH_M = 0.12
# A map file: this line, one line of JSON (what made the map), then numpy's npz of its arrays.
FILE_SIGNATURE = b'gem_ros feature map 1\n'
VOXEL_ARRAYS = ('keys', 'features', 'counts', 'last_seen', 'cameras', 'colours', 'seen_by')
ARRAYS = VOXEL_ARRAYS + ('camera_names', 'view_ids', 'view_embeddings', 'view_stamps')


class MapFileError(ValueError):
    """A map file that cannot be used here, said plainly."""


class ForeignMapFile(MapFileError):
    """What is at the map file's path is not a map file: it is left as it is."""


@dataclass
class Place:
    """A group of touching voxels of a query."""

    position: tuple  # (x, y, z) in the map frame: the heat-weighted centre around its peak
    score: float  # the query's presence in the best view that saw the place (0.5 .. 1)
    voxels: int
    last_seen: float  # stamp, seconds
    camera: str
    likeness: float = 0.0  # the mean heat of its voxels times the log of their number


def lift_patches(
    tokens: np.ndarray,
    depth_m: np.ndarray,
    K: np.ndarray,
    rgb: Optional[np.ndarray] = None,
    depth_min: float = 0.1,
    depth_max: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [M, 3] in the camera's optical frame, features [M, D] float32, colours [M, 3]
    uint8) of the patches of a frame with valid depth. tokens: [h, w, D] L2-normalised patch
    tokens; depth_m: [H, W] metres aligned to the colour image (NaN or 0: no reading); K: the
    depth grid's intrinsics; rgb: [H', W', 3] uint8 for the voxels' colour (None: grey)."""
    h, w, dim = tokens.shape
    height, width = depth_m.shape
    rows, cols, pixels = _patch_pixels(h, w, height, width)
    # Each patch's readings as one sorted row, +inf where a reading is out of range or
    # missing (NaN fails both tests; an inf reading stays inf) or the patch lacks the pixel.
    readings = np.append(depth_m.astype(np.float32, copy=False).ravel(), np.nan)[pixels]
    with np.errstate(invalid='ignore'):
        readings[~((readings >= depth_min) & (readings <= depth_max))] = np.inf
    readings.sort(axis=-1)
    counts = np.count_nonzero(readings < np.inf, axis=-1)
    z = _valid_median(readings, counts)
    keep = counts >= MIN_PATCH_READINGS
    ii, jj = np.nonzero(keep)
    zs = z[ii, jj].astype(np.float64)
    u = (cols[jj] + cols[jj + 1]) / 2.0 - 0.5  # the patch centre, pixel-centre convention
    v = (rows[ii] + rows[ii + 1]) / 2.0 - 0.5
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (v - cy) * zs / fy
    x = (u - cx - skew * y / zs) * zs / fx
    points = np.stack([x, y, zs], axis=1)
    features = tokens[ii, jj].astype(np.float32).reshape(-1, dim)
    if rgb is None:
        colours = np.full((len(ii), 3), 128, np.uint8)
    else:
        rh, rw = rgb.shape[:2]
        colours = rgb[
            np.clip(((v + 0.5) * rh / height).astype(int), 0, rh - 1),
            np.clip(((u + 0.5) * rw / width).astype(int), 0, rw - 1),
        ]
    return points, features, colours


@functools.lru_cache(maxsize=4)
def _patch_pixels(h: int, w: int, height: int, width: int):
    """(the patches' row edges [h + 1] and column edges [w + 1] on a height x width grid,
    [h, w, most pixels of a patch]: each patch's pixels as indices into the flat image,
    height * width where a patch has fewer): the same for every frame of a stream, so
    made once (0.5 ms a frame at 320x240 when made each time)."""
    rows = (np.arange(h + 1) * height) // h
    cols = (np.arange(w + 1) * width) // w
    ph, pw = int(np.diff(rows).max()), int(np.diff(cols).max())
    r = rows[:-1, None] + np.arange(ph)  # [h, ph]: pixel rows of each patch row
    c = cols[:-1, None] + np.arange(pw)  # [w, pw]
    inside = (r < rows[1:, None])[:, None, :, None] & (c < cols[1:, None])[None, :, None, :]
    flat = r[:, None, :, None] * width + c[None, :, None, :]  # [h, w, ph, pw]
    return rows, cols, np.where(inside, flat, height * width).reshape(h, w, ph * pw)


def _valid_median(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[h, w]: the median of each sorted row's first `counts` values (NaN where none):
    numpy's nanmedian over such short rows goes through masked arrays, 3 ms a frame."""
    below = np.maximum(counts - 1, 0) // 2
    lo = np.take_along_axis(values, below[..., None], -1)[..., 0]
    hi = np.take_along_axis(values, np.maximum(counts // 2, below)[..., None], -1)[..., 0]
    with np.errstate(invalid='ignore'):
        return np.where(counts > 0, (lo + hi) / 2, np.nan)


def apply_pose(points: np.ndarray, pose) -> np.ndarray:
    """[M, 3] points through a pose ((x, y, z) translation, (x, y, z, w) rotation)."""
    (tx, ty, tz), (qx, qy, qz, qw) = pose
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    rotation = np.array(
        [
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
            [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
            [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
        ]
    )
    return points @ rotation.T + np.array([tx, ty, tz])


def invert_pose(pose):
    """The pose taking points back: p -> R^T (p - t)."""
    (tx, ty, tz), (qx, qy, qz, qw) = pose
    conjugate = (-qx, -qy, -qz, qw)
    back = apply_pose(np.array([[-tx, -ty, -tz]]), ((0.0, 0.0, 0.0), conjugate))[0]
    return tuple(float(c) for c in back), conjugate


def _cosines(features: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """[K, N] float32: K text embeddings [K, D] against float16 features [N, D]. torch's
    half product with the texts first, so each feature row is read once: 9 ms at
    100k x 512 and 9 texts on the developers' CPU (texts second: 27 ms; numpy's float16
    product for one text: 276 ms)."""
    import torch

    half = torch.from_numpy(np.ascontiguousarray(features))
    texts = torch.from_numpy(np.ascontiguousarray(texts, dtype=np.float16))
    return (texts @ half.T).float().numpy()


def query_text(model, query: str, background_prompts) -> tuple[np.ndarray, np.ndarray]:
    """(the query's text embedding [D], the background prompts' [B, D]) for `ask`, encoded by
    the model's text tower (cached); a prompt equal to the query is not its rival (as a
    frame's presence rule)."""
    prompts = model.check_backgrounds(background_prompts)
    text = model.encode_text([query] + prompts).cpu().numpy()
    rivals = [p.lower() != query.strip().lower() for p in prompts]
    return text[0], text[1:][rivals]


class FeatureMap:
    """A sparse voxel map of features and the views that saw them; thread-safe (fused on the
    frame path, asked from another thread)."""

    def __init__(
        self,
        voxel_size: float = 0.05,
        max_voxels: int = 100_000,
        miss_limit: int = 3,
        margin: Optional[float] = None,
        max_views: int = 4096,
    ):
        if not (voxel_size > 0 and max_voxels >= 1 and miss_limit >= 1 and max_views >= 1):
            raise ValueError(
                f'bad map budget: voxel_size {voxel_size}, max_voxels {max_voxels}, '
                f'miss_limit {miss_limit}, max_views {max_views}'
            )
        self.voxel_size = float(voxel_size)
        self.max_voxels = int(max_voxels)
        self.miss_limit = int(miss_limit)
        # Depth noise and a surface's own voxel: nearer than this is not 'seen through'.
        self.margin = 2.0 * voxel_size if margin is None else float(margin)
        self._lock = threading.Lock()
        self._voxels = Voxels()
        self._views = Views(max_views)
        self._camera_names: list[str] = []
        # The last ask's (rows, heat): ~/map_cloud colours the voxels by it.
        self.last_heat: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self._voxels)

    @staticmethod
    def bytes_per_voxel(dim: int) -> int:
        """What one voxel holds: its feature in float16, its fields and its views, plus the
        index's entry (about 100 bytes in a dict of Python ints)."""
        return 2 * dim + 8 + 4 + 2 + 8 + 2 + 3 + 8 * VIEWS_PER_VOXEL + 100

    # --- fusion ---------------------------------------------------------------------------
    def take_view(self, tokens, view, rgb, pose, stamp: float, camera: str, **options) -> int:
        """One frame into the map, as every host feeds it (the node, `gem-ros bag --map`):
        its patch tokens [h, w, D] lifted at their depth (view: (depth [H, W] in metres, K of
        that grid), FrameGeometry's; rgb the image the model saw), moved by `pose` (camera ->
        map frame), the free space it saw through cleared, then fused. options: embedding
        (the frame's image embedding), depth_range ((min, max) metres). The voxels touched."""
        depth_m, K = view
        embedding = options.get('embedding')
        depth_range = options.get('depth_range', (0.0, float('inf')))
        points, features, colours = lift_patches(tokens, depth_m, K, rgb, *depth_range)
        self.clear_seen(invert_pose(pose), depth_m, K)
        return self.fuse(apply_pose(points, pose), features, colours, stamp, camera, embedding)

    def fuse(self, points, features, colours, stamp: float, camera: str, embedding=None) -> int:
        """Observations (points [M, 3] in the map frame, L2-normalised features [M, D],
        colours [M, 3]) into their voxels, seen by a view of image embedding `embedding` [D]
        (None: by none); the voxels touched."""
        if len(points) == 0:
            return 0
        # One observation per voxel and frame: the mean of the frame's points in it (sums
        # over runs of sorted keys: np.add.at took twice as long).
        keys = keys_of(points, self.voxel_size)
        order = np.argsort(keys, kind='stable')
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        unique = ordered[starts]
        summed = np.add.reduceat(features[order].astype(np.float32, copy=False), starts)
        summed /= np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)
        colour = np.add.reduceat(colours[order].astype(np.float32), starts)
        colour /= np.diff(np.r_[starts, len(keys)])[:, None]
        with self._lock:
            if self._voxels.dim != features.shape[1]:
                self._voxels = Voxels(features.shape[1])
            v = self._voxels
            rows = v.rows_for(unique)
            # float32 throughout: a float64 weight made every product below float64.
            follow = np.minimum(v['counts'][rows] + 1, FOLLOW_FRAMES).astype(np.float32)
            weight = (1 / follow)[:, None]
            new = v['features'][rows].astype(np.float32) * (1 - weight) + summed * weight
            new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
            v['features'][rows] = new.astype(np.float16)
            v['colours'][rows] = (v['colours'][rows] * (1 - weight) + colour * weight).astype(
                np.uint8
            )
            v['counts'][rows] += 1
            v['misses'][rows] = 0
            v['last_seen'][rows] = stamp
            v['cameras'][rows] = self._camera_id(camera)
            if embedding is not None:
                view = self._views.add(embedding, stamp)
                v['seen_by'][rows] = np.concatenate(
                    [v['seen_by'][rows][:, 1:], np.full((len(rows), 1), view)], 1
                )
            v.evict(self.max_voxels)
        return len(unique)

    def clear_seen(self, to_camera, depth_m: np.ndarray, K: np.ndarray) -> int:
        """Free space seen in a frame: each voxel that projects into the depth image in front
        of its reading by more than `margin` gets a miss; `miss_limit` in a row remove it.
        to_camera: the pose from the map frame into the camera's optical frame. The voxels
        removed."""
        with self._lock:
            v = self._voxels
            if not len(v):
                return 0
            p = apply_pose(centres_of(v['keys'], self.voxel_size), to_camera)
            h, w = depth_m.shape
            z = p[:, 2]
            with np.errstate(divide='ignore', invalid='ignore'):  # behind: dropped below
                u = K[0, 0] * p[:, 0] / z + K[0, 2]
                r = K[1, 1] * p[:, 1] / z + K[1, 2]
            rows = np.flatnonzero((z > 1e-6) & (u >= 0) & (u < w) & (r >= 0) & (r < h))
            reading = depth_m[r[rows].astype(int), u[rows].astype(int)]
            through = np.isfinite(reading) & (reading > 0) & (reading > z[rows] + self.margin)
            seen = rows[through]
            v['misses'][seen] += 1
            gone = seen[v['misses'][seen] >= self.miss_limit]
            v.remove(gone)
            return len(gone)

    # --- asking ---------------------------------------------------------------------------
    def presence(self, text: np.ndarray, backgrounds: np.ndarray, logit_scale: float):
        """(view ids, the query's presence in each): its softmax share against the
        background prompts on the view's image embedding (gem_ros/gem/presence.py's rule)."""
        with self._lock:
            ids, emb = self._views.ids.copy(), self._views.embeddings
            if emb is None or not len(ids) or emb.shape[1] != len(text):
                return ids, np.zeros(0, np.float32)
            emb = emb.astype(np.float32)
        z_query = logit_scale * (emb @ text)
        z_back = logit_scale * (emb @ backgrounds.T)
        rivals = np.logaddexp.reduce(z_back, axis=1) if z_back.shape[1] else -np.inf
        return ids, 1.0 / (1.0 + np.exp(-(z_query - rivals)))

    def heat(
        self, text: np.ndarray, backgrounds: np.ndarray, views: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, heat): the voxels `views` saw, and how much more each one's feature is
        like the query than like its likest background prompt, min-max normalised over
        them (a frame's heatmap, over the views, against the presence rule's rivals)."""
        with self._lock:
            v = self._voxels
            if v.dim != len(text):  # empty, or another model's (refused when read)
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            seen = np.isin(v['seen_by'], views)
            rows = np.flatnonzero(functools.reduce(np.logical_or, seen.T))  # any(1): 7x slower
            if not len(rows):
                return rows, np.zeros(0, np.float32)
            # Only the seen voxels' features, where they are a small part of a large map
            # (a query present in a few views); else the whole map, with no copy.
            few = len(rows) < len(v) // 2
            cos = _cosines(v['features'][rows] if few else v['features'],
                           np.vstack([text, backgrounds]))  # fmt: skip
        # The margin, not the cosine: what every text shares (a patch's likeness to words
        # at all) lifts broad stretches of wall for any query; the rivals take it away.
        # benchmarks/map.py, scene CLIP: 11 of 15 balls found with the cosine, 14 with this.
        rivals = functools.reduce(np.maximum, cos[1:]) if len(cos) > 1 else 0.0
        margin = cos[0] - rivals if few else (cos[0] - rivals)[rows]
        span = float(margin.max() - margin.min())
        return rows, (margin - margin.min()) / span if span > 0 else np.ones_like(margin)

    def ask(
        self,
        text: np.ndarray,
        backgrounds: np.ndarray,
        logit_scale: float,
        max_places: int = 5,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> list[Place]:
        """The places of a query (its L2-normalised text embedding [D]; the background
        prompts' [B, D]), best first; [] when no view has it ("nothing like that")."""
        ids, confidence = self.presence(text, backgrounds, logit_scale)
        present = confidence >= threshold
        if not present.any():
            return []
        rows, heat = self.heat(text, backgrounds, ids[present])
        self.last_heat = (rows, heat)
        hot = heat >= mask_threshold
        rows, heat = rows[hot], heat[hot]
        if not len(rows):
            return []
        by_view = dict(zip(ids[present].tolist(), confidence[present].tolist()))
        with self._lock:
            v = self._voxels
            keys, seen_by = v['keys'][rows], v['seen_by'][rows]
            last_seen, cameras = v['last_seen'][rows], v['cameras'][rows]
            names = list(self._camera_names)
        centres = centres_of(keys, self.voxel_size)
        places = []
        reach = max(1, round(PLACE_REACH_M / self.voxel_size))
        for members in touching(keys, reach):
            weights = heat[members]
            best = members[int(np.argmax(weights))]
            score = max(by_view.get(int(i), 0.0) for i in seen_by[members].ravel())
            # Where it is: the heat-weighted centre around its peak (a frame's peak point),
            # not of the whole group, which may run on into lukewarm wall.
            peak = members[np.abs(centres[members] - centres[best]).max(1) <= PLACE_REACH_M]
            places.append(
                Place(
                    tuple(float(c) for c in (centres[peak] * heat[peak, None]).sum(0)
                          / heat[peak].sum()),
                    float(score), len(members), float(last_seen[members].max()),
                    names[cameras[best]] if names else '',
                    float(weights.mean()) * math.log1p(len(members)),
                )
            )  # fmt: skip
        # Ranked by presence, then by how much the place looks like the query: its mean heat
        # times the log of its size. (Size alone put the broad lukewarm wall regions of a
        # present colour's views above the ball itself, even with perfect features:
        # benchmarks/map.py's oracle found the right best place 7 times in 15, 15 with this.)
        places.sort(key=lambda p: p.score * p.likeness, reverse=True)
        return places[: max(1, max_places)]

    def cloud(self, heat_of: Optional[tuple] = None):
        """(centres [N, 3], colours [N, 3] uint8): the voxels, coloured by what the camera
        saw, or by a query's heat (rows, heat) on a ramp from blue (0) to red (1)."""
        with self._lock:
            centres = centres_of(self._voxels['keys'], self.voxel_size)
            colours = self._voxels['colours'].copy()
        if heat_of is not None:
            rows, heat = heat_of
            rows, heat = rows[rows < len(colours)], heat[rows < len(colours)]
            colours[:] = (0, 0, 96)
            colours[rows] = np.stack([255 * heat, 64 + 0 * heat, 255 * (1 - heat)], 1)
        return centres, colours

    # --- storage --------------------------------------------------------------------------
    def state(self) -> dict:
        """Every array of the map (for its file)."""
        with self._lock:
            state = {name: self._voxels[name].copy() for name in VOXEL_ARRAYS}
            views = self._views
            state['camera_names'] = np.array(self._camera_names, dtype=str)
            state['view_ids'] = views.ids.copy()
            state['view_embeddings'] = (
                views.embeddings.copy() if views.embeddings is not None else
                np.zeros((0, state['features'].shape[1]), np.float16)
            )  # fmt: skip
            state['view_stamps'] = views.stamps.copy()
        return state

    def restore(self, state: dict) -> None:
        """The map from `state()`'s arrays (checked by the file's reader)."""
        with self._lock:
            voxels = Voxels(state['features'].shape[1])
            voxels.restore({**state, 'misses': np.zeros(len(state['keys']), np.int16)})
            voxels.evict(self.max_voxels)
            self._voxels = voxels
            self._views.restore(state['view_ids'], state['view_embeddings'], state['view_stamps'])
            self._camera_names = [str(c) for c in state['camera_names']]

    def _camera_id(self, camera: str) -> int:
        if camera not in self._camera_names:
            self._camera_names.append(camera)
        return self._camera_names.index(camera)


def save_map(path: Path, fmap: FeatureMap, made_by: dict) -> None:
    """`fmap` to `path`, atomically (the old file or the whole new one), with `made_by`
    (map frame, model, weights, method, voxel size: what the features mean). PathRefused
    (gem_ros.owned_files), nothing changed, when something not ours is at `path`."""
    from gem_ros.owned_files import PathRefused

    path = Path(path)
    if path.exists() and not (path.is_file() and ours(path, (FILE_SIGNATURE,))):
        raise PathRefused(f'{path} holds something gem_ros did not write: left as it is')
    state = fmap.state()

    def write(out) -> None:
        out.write(FILE_SIGNATURE)
        out.write(json.dumps({**made_by, 'voxels': len(state['keys'])}).encode() + b'\n')
        np.savez(out, **state)

    replace_atomically(path, write)


def load_map(path: Path, fmap: FeatureMap, made_by: dict, max_bytes: int) -> int:
    """`path` into `fmap`; the voxels read. ForeignMapFile: not a map file. MapFileError: a
    map of another frame, model, weights, method or voxel size (its features mean nothing
    here), too large, or damaged; with the reason."""
    path = Path(path)
    if not ours(path, (FILE_SIGNATURE,)):
        raise ForeignMapFile(f'{path} is not a gem_ros feature map: left as it is')
    size = path.stat().st_size
    if size > max_bytes:
        raise MapFileError(
            f'{path} is {size >> 20} MiB, over the {max_bytes >> 20} MiB a map of '
            'map_max_voxels takes'
        )
    try:
        # Read from the file as it lies (not through a copy of its bytes): the arrays are
        # the only copy of the map in memory while it is read.
        with open(path, 'rb') as f:
            f.seek(len(FILE_SIGNATURE))
            header = json.loads(f.readline(1 << 16))
            for key, value in made_by.items():
                if header.get(key) != value:
                    raise MapFileError(
                        f'{path} was made with {key} {header.get(key)!r}, not {value!r}: '
                        'its features mean nothing here'
                    )
            with np.load(f, allow_pickle=False) as npz:
                state = {name: npz[name] for name in ARRAYS}
        _check_state(state)
    except MapFileError:
        raise
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MapFileError(f'{path} cannot be read: {type(exc).__name__}: {exc}') from exc
    fmap.restore(state)
    return len(fmap)


def _check_state(state: dict) -> None:
    """ValueError for arrays that do not fit together (a damaged or edited file)."""
    n = len(state['keys'])
    shapes = {name: state[name].shape[:1] for name in VOXEL_ARRAYS}
    if any(shape != (n,) for shape in shapes.values()):
        raise ValueError(f'the arrays disagree on the number of voxels: {shapes}')
    if state['features'].ndim != 2 or not np.isfinite(state['features']).all():
        raise ValueError('features are not a finite [voxels, width] array')
    if state['seen_by'].shape != (n, VIEWS_PER_VOXEL) or state['colours'].shape != (n, 3):
        raise ValueError('seen_by or colours have the wrong shape')
    if n and int(state['cameras'].max()) >= len(state['camera_names']):
        raise ValueError('a voxel names a camera the file does not have')
    views = len(state['view_ids'])
    if state['view_embeddings'].shape != (views, state['features'].shape[1]) or state[
        'view_stamps'
    ].shape != (views,):
        raise ValueError('the views do not fit together')
