"""From a 2D peak to a 3D point: depth units, robust depth near the peak, back-projection.

Pure numpy, no ROS. Conventions:
- Pixel coordinates are (column, row) with integer values at pixel centres.
- K is the 3x3 pinhole matrix of a *rectified* image (distortion is not applied): the
  camera_info that comes with the depth stream. With depth aligned to the colour camera
  (the usual ROS set-up, e.g. aligned_depth_to_color) that is the colour camera's K.
- The depth image is aligned to the colour image (same view, same optical centre); it may
  have another resolution, in which case peaks, mask samples and K are scaled to the depth
  image's pixel grid (`scale_intrinsics`, `scale_pixel`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np


class TransformUnavailable(RuntimeError):
    """No transform between two TF frames at a stamp, with the reason (tf2's, where it
    looked)."""


# Depth image encodings read: numpy dtype code and metres per unit (REP 118: 16UC1 in
# millimetres, 32FC1 in metres); None: no standard unit, depth_scale must say it.
DEPTH_ENCODINGS = {
    '16UC1': ('u2', 0.001),
    'mono16': ('u2', 0.001),
    '32FC1': ('f4', 1.0),
    '64FC1': ('f8', None),
    '8UC1': ('u1', None),
    'mono8': ('u1', None),
    '16SC1': ('i2', None),
    '32SC1': ('i4', None),
}
METRES_PER_UNIT = {name: unit for name, (_, unit) in DEPTH_ENCODINGS.items() if unit}
DEFAULT_WINDOW = 5  # half-size of the square window around the peak, depth pixels
DEFAULT_MIN_DEPTH = 0.1  # m: closer readings are sensor noise on most RGB-D cameras
DEFAULT_MAX_DEPTH = 10.0  # m
MIN_VALID_PIXELS = 5  # fewer valid readings than this are not trusted for a median


def depth_to_metres(
    depth: np.ndarray, encoding: str, depth_scale: Optional[float] = None
) -> np.ndarray:
    """Depth image in metres (float32); zero, NaN and inf readings become NaN.

    The unit follows the encoding (16UC1/mono16: millimetres, 32FC1: metres); a positive
    `depth_scale` (metres per unit) overrides it, for sensors with other conventions.
    """
    if depth_scale:
        scale = depth_scale
    elif encoding in METRES_PER_UNIT:
        scale = METRES_PER_UNIT[encoding]
    else:
        raise ValueError(
            f'depth encoding {encoding!r} has no known unit (known: '
            f"{', '.join(METRES_PER_UNIT)}); set depth_scale (metres per unit)"
        )
    metres = depth.astype(np.float32) * np.float32(scale)
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def scale_pixel(
    xy: tuple[float, float], from_size: tuple[int, int], to_size: tuple[int, int]
) -> tuple[float, float]:
    """Pixel (x, y) of an image of from_size (w, h) in an image of to_size showing the same
    view. Pixel centres map to pixel centres, hence the half-pixel shifts."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return (xy[0] + 0.5) * sx - 0.5, (xy[1] + 0.5) * sy - 0.5


def scale_intrinsics(
    K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
) -> np.ndarray:
    """K of an image of from_size (w, h) rescaled to to_size, consistent with scale_pixel."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    out = np.array(K, dtype=np.float64).reshape(3, 3).copy()
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 1] *= sx
    out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5
    return out


def back_project(u: float, v: float, z: float, K: np.ndarray) -> tuple[float, float, float]:
    """The 3D point (camera optical frame: x right, y down, z forward) at depth z seen at
    pixel (u, v) of the rectified image with matrix K."""
    fx, skew, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    y = (v - cy) * z / fy
    x = (u - cx - skew * y / z) * z / fx
    return float(x), float(y), float(z)


def peak_to_point(
    depth_m: np.ndarray,
    peak_xy: tuple[float, float],
    mask: Optional[np.ndarray],
    K: np.ndarray,
    colour_size: tuple[int, int],
    window: int = DEFAULT_WINDOW,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float = DEFAULT_MAX_DEPTH,
) -> tuple[Optional[tuple[float, float, float]], str]:
    """The 3D point of a colour-image peak, or None and why not.

    depth_m: [h, w] metres (NaN = no reading), aligned to the colour image; K belongs to
    the depth image's pixel grid (see scale_intrinsics); colour_size: (w, h) of the colour
    image the peak and the [H, W] bool mask come from (mask may be None).

    The depth is the median of the valid readings (finite, within [min_depth, max_depth])
    that lie in the query's mask within `window` depth pixels of the peak: one pixel is too
    noisy, and the mask keeps the background next to an object's edge out. With fewer than
    MIN_VALID_PIXELS such readings, the median over the whole window is used instead.
    The point is the back-projection of the (scaled, sub-pixel) peak at that depth.
    """
    if not np.isfinite(K).all():
        return None, 'camera_info K has non-finite entries (NaN or inf)'
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return None, 'camera_info has no intrinsics (K has a zero focal length)'
    if not (np.isfinite(peak_xy[0]) and np.isfinite(peak_xy[1])):
        return None, 'the peak is not a finite pixel'
    h, w = depth_m.shape
    u, v = scale_pixel(peak_xy, colour_size, (w, h))
    iu, iv = min(max(round(u), 0), w - 1), min(max(round(v), 0), h - 1)
    rows = np.arange(max(iv - window, 0), min(iv + window + 1, h))
    cols = np.arange(max(iu - window, 0), min(iu + window + 1, w))
    patch = depth_m[rows[:, None], cols]
    finite = np.isfinite(patch)
    valid = finite & (patch >= min_depth) & (patch <= max_depth)
    needed = min(MIN_VALID_PIXELS, patch.size)
    if finite.sum() < needed:
        return None, (
            f'no depth near the peak: {int(finite.sum())} of {patch.size} readings '
            f'within {window} px are valid (the others are zero or NaN)'
        )
    if valid.sum() < needed:
        return None, (
            f'depth near the peak out of range [{min_depth:g}, {max_depth:g}] m '
            f'(median {np.median(patch[finite]):.3f} m, {int(valid.sum())} of '
            f'{patch.size} readings in range)'
        )
    if mask is not None:
        # Each depth pixel samples the colour-image mask pixel at its centre.
        mask_rows = _nearest(rows, h, colour_size[1])
        mask_cols = _nearest(cols, w, colour_size[0])
        in_mask = valid & mask[mask_rows[:, None], mask_cols]
        if in_mask.sum() >= needed:
            valid = in_mask
    z = float(np.median(patch[valid]))
    point = back_project(u, v, z, K)
    if not np.isfinite(point).all():  # never hand a NaN on as a valid point
        return None, f'the back-projected point is not finite: {point}'
    return point, ''


def _nearest(index: np.ndarray, size: int, other_size: int) -> np.ndarray:
    """Index in an axis of other_size of the pixel whose area holds the centre of pixel
    `index` of an axis of `size`, for the same view."""
    return np.minimum(((index + 0.5) * other_size / size).astype(np.int64), other_size - 1)


def apply_transform(
    point: tuple[float, float, float],
    translation: tuple[float, float, float],
    rotation_xyzw: tuple[float, float, float, float],
) -> tuple[float, float, float]:
    """R p + t for a rotation given as a unit quaternion (x, y, z, w), as in
    geometry_msgs/Transform."""
    q = np.asarray(rotation_xyzw, dtype=np.float64)
    q = q / np.linalg.norm(q)
    xyz, qw = q[:3], q[3]
    p = np.asarray(point, dtype=np.float64)
    # Rodrigues' form of q p q*: p + 2w (v x p) + 2 v x (v x p)
    c = np.cross(xyz, p)
    rotated = p + 2.0 * qw * c + 2.0 * np.cross(xyz, c)
    return tuple(float(a) for a in rotated + np.asarray(translation, dtype=np.float64))


def invert_transform(
    translation: tuple[float, float, float], rotation_xyzw: tuple[float, float, float, float]
) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """The inverse of p -> R p + t: p -> R^T (p - t), as (translation, rotation xyzw)."""
    x, y, z, w = rotation_xyzw
    conjugate = (-x, -y, -z, w)
    back = apply_transform(tuple(-c for c in translation), (0.0, 0.0, 0.0), conjugate)
    return back, conjugate


def point_visible(
    point: tuple[float, float, float],
    depth_m: np.ndarray,
    K: np.ndarray,
    margin: float,
    window: int = 1,
) -> bool:
    """Whether a camera-frame point lies in the depth image's view with nothing in front of
    it: it projects inside the image, in front of the camera, and the median valid reading
    around its pixel is no nearer than its own depth less `margin`. No valid reading there
    (a hole, out of range) is not evidence of anything: False. K belongs to depth_m's grid."""
    x, y, z = point
    if not (np.isfinite(point).all() and np.isfinite(K).all()) or z <= 0:
        return False
    h, w = depth_m.shape
    u, v = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
    if not (0 <= u < w and 0 <= v < h):
        return False
    iu, iv = int(u), int(v)
    patch = depth_m[max(iv - window, 0) : iv + window + 1, max(iu - window, 0) : iu + window + 1]
    readings = patch[np.isfinite(patch) & (patch > 0)]
    return readings.size > 0 and float(np.median(readings)) >= z - margin
