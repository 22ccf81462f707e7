"""The overlay image people look at (rviz, the CLI): masks tinted per query, peaks marked and
labelled, a legend. Pure numpy/OpenCV; used by the node and by the one-shot command.

Readable by design: an image whose shorter side is under MIN_SIDE pixels is drawn enlarged
(a 224 px frame becomes 672 px), every text sits on a filled box of its query's colour with
black or white text, whichever contrasts, labels are placed where they overlap neither each
other nor the legend, and a query that names a colour ("red mug") is drawn in that colour.
"""

from __future__ import annotations

import re
from typing import Sequence

import cv2
import numpy as np

from .gem.postprocess import Detection

MIN_SIDE = 480  # smaller images are drawn enlarged by a whole factor, so text stays legible
# Colour words and how they are drawn (RGB): a query naming one is drawn in it.
COLOUR_WORDS = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 30),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "purple": (140, 60, 200),
    "violet": (140, 60, 200),
    "pink": (245, 120, 200),
    "brown": (140, 90, 40),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "grey": (140, 140, 140),
    "gray": (140, 140, 140),
    "cyan": (30, 210, 220),
    "magenta": (220, 40, 200),
}
# Other queries: distinct hues (Okabe-Ito), skipping those close to a colour already in use.
PALETTE = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (255, 255, 255),
]
NOT_FOUND = (150, 150, 150)
_WORD = re.compile(r"[a-z]+")


def query_colours(queries: Sequence[str]) -> list[tuple[int, int, int]]:
    """One RGB colour per query: the colour it names, else the next palette colour that is
    not close to one already used."""
    named = [
        next((COLOUR_WORDS[w] for w in _WORD.findall(q.lower()) if w in COLOUR_WORDS), None)
        for q in queries
    ]
    used = [c for c in named if c is not None]
    out = []
    spare = iter(PALETTE * 4)
    for c in named:
        if c is None:
            for candidate in spare:
                if all(_distance(candidate, u) > 90 for u in used):
                    break
            c = candidate
            used.append(c)
        out.append(c)
    return out


def _distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float32)))


def draw_overlay(
    image: np.ndarray, detections: Sequence[Detection], alpha: float = 0.45
) -> np.ndarray:
    """A new RGB uint8 image (enlarged when small): `image` with each found query's mask
    tinted and its peak marked and labelled, and a legend (top left) listing every query
    with its confidence, or 'not found'."""
    factor = max(1, -(-MIN_SIDE // max(1, min(image.shape[:2]))))
    if factor == 1:
        out = image.copy()  # drawn on a copy: the frame may be published or kept elsewhere
    else:
        out = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    colours = query_colours([d.query for d in detections])
    for det, c in zip(detections, colours):
        if det.found and det.area:
            mask = det.mask if factor == 1 else np.repeat(np.repeat(det.mask, factor, 0), factor, 1)
            region = out[mask].astype(np.float32)
            out[mask] = (region * (1 - alpha) + np.array(c, np.float32) * alpha).astype(np.uint8)
    scale = max(0.5, min(out.shape[:2]) / 900)
    taken: list[tuple[int, int, int, int]] = []
    # legend first: it claims the top-left corner
    y = 6
    for det, c in zip(detections, colours):
        text = f"{det.query} {det.confidence:.2f}" if det.found else f"{det.query}: not found"
        box = _text_box(text, scale)
        rect = (6, y, 6 + box[0], y + box[1])
        _draw_label(out, text, rect, c if det.found else NOT_FOUND, scale)
        taken.append(rect)
        y = rect[3] + 4
    marker = int(18 * scale) + 6
    thick = max(1, int(round(scale * 2)))
    for det, c in zip(detections, colours):
        if not det.found:
            continue  # nothing to point at: the legend says so
        px, py = det.peak_x * factor + factor // 2, det.peak_y * factor + factor // 2
        cv2.drawMarker(out, (px, py), (0, 0, 0), cv2.MARKER_CROSS, marker + 4, thick + 2)
        cv2.drawMarker(out, (px, py), c, cv2.MARKER_CROSS, marker, thick)
        text = det.query
        w, h = _text_box(text, scale)
        rect = _place((px, py), (w, h), marker // 2 + 4, out.shape, taken)
        cx, cy = min(max(px, rect[0]), rect[2]), min(max(py, rect[1]), rect[3])
        if abs(cx - px) + abs(cy - py) > marker:  # moved away: a leader line back to the peak
            cv2.line(out, (px, py), (cx, cy), (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.line(out, (px, py), (cx, cy), c, thick, cv2.LINE_AA)
        _draw_label(out, text, rect, c, scale)
        taken.append(rect)
    return out


def _text_box(text: str, scale: float) -> tuple[int, int]:
    (w, h), base = cv2.getTextSize(_ascii(text), cv2.FONT_HERSHEY_SIMPLEX, scale, _thickness(scale))
    pad = max(2, int(4 * scale))
    return w + 2 * pad, h + base + 2 * pad


def _place(anchor, size, gap, shape, taken):
    """A label rectangle near `anchor` that overlaps no rectangle of `taken` (the least
    overlapping candidate when none is free), inside the image."""
    (ax, ay), (w, h) = anchor, size
    height, width = shape[:2]
    candidates = []
    for ring in range(4):
        d = gap + ring * (h + 2)
        candidates += [
            (ax + gap, ay - d - h),
            (ax + gap, ay + d),
            (ax - gap - w, ay - d - h),
            (ax - gap - w, ay + d),
            (ax - w // 2, ay - d - h),
            (ax - w // 2, ay + d),
        ]
    best, best_overlap = None, None
    for x, y in candidates:
        x, y = int(np.clip(x, 0, max(0, width - w))), int(np.clip(y, 0, max(0, height - h)))
        rect = (x, y, x + w, y + h)
        overlap = sum(_overlap(rect, t) for t in taken)
        if overlap == 0:
            return rect
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = rect, overlap
    return best


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.6)))


def _ascii(text: str) -> str:
    # Hershey fonts are ASCII only; other characters become '?' rather than garbage.
    return text.encode("ascii", "replace").decode()[:48]


def _draw_label(img, text, rect, fill, scale) -> None:
    """Text on a filled box of `fill`, black or white text by the fill's luminance."""
    x0, y0, x1, y1 = rect
    cv2.rectangle(img, (x0, y0), (x1, y1), fill, cv2.FILLED)
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    pad = max(2, int(4 * scale))
    (_, h), base = cv2.getTextSize(_ascii(text), cv2.FONT_HERSHEY_SIMPLEX, scale, _thickness(scale))
    cv2.putText(
        img,
        _ascii(text),
        (x0 + pad, y0 + pad + h),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        ink,
        _thickness(scale),
        cv2.LINE_AA,
    )


HEATMAP_TILE_MAX = 16  # queries tiled in one heatmap image at most (MAX_QUERIES can be more)


def draw_heatmaps(
    image: np.ndarray, detections: Sequence[Detection], query: str = "", blend: float = 0.5
) -> np.ndarray:
    """The similarity maps people look at (rviz's Image display): each query's patch-grid
    cosines, min-max scaled per query, colour-mapped (turbo: blue low, red high), resized to
    the frame and blended over it (`blend` the map's weight; 1 = the map alone), labelled with
    the query. `query` picks one query's map at the frame's size; '' tiles all of them (the
    first HEATMAP_TILE_MAX) in a grid of the frame's size. Detections need patch_logits."""
    chosen = [d for d in detections if d.query == query] if query else list(detections)
    chosen = chosen[:HEATMAP_TILE_MAX]
    if not chosen:
        return image.copy()
    height, width = image.shape[:2]
    cols = int(np.ceil(np.sqrt(len(chosen))))
    rows = int(np.ceil(len(chosen) / cols))
    tile_h, tile_w = max(1, height // rows), max(1, width // cols)
    out = np.zeros((tile_h * rows, tile_w * cols, 3), np.uint8)
    base = cv2.resize(image, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
    scale = max(0.35, min(1.0, tile_w / 640))
    for k, det in enumerate(chosen):
        grid = np.nan_to_num(np.asarray(det.patch_logits, np.float32))
        low, high = float(grid.min()), float(grid.max())
        unit = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
        levels = cv2.resize((unit * 255).astype(np.uint8), (tile_w, tile_h), cv2.INTER_LINEAR)
        colour = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
        tile = cv2.addWeighted(colour, blend, base, 1.0 - blend, 0.0)
        (tw, th) = _text_box(det.query, scale)
        _draw_label(tile, det.query, (0, 0, min(tw, tile_w - 1), th), (0, 0, 0), scale)
        r, c = divmod(k, cols)
        out[r * tile_h : (r + 1) * tile_h, c * tile_w : (c + 1) * tile_w] = tile
    return out
