"""The overlay image people look at (rviz, the CLI): masks tinted per query, peaks marked
and labelled, a legend. Pure numpy/OpenCV; used by the node and by the one-shot command."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .gem.postprocess import Detection

# Distinct, colour-blind-friendly tints (Okabe-Ito), RGB.
PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 255, 255),
]


GREY = (170, 170, 170)


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw_overlay(
    image: np.ndarray,
    detections: Sequence[Detection],
    alpha: float = 0.45,
) -> np.ndarray:
    """A new RGB uint8 image: `image` with each detection's mask tinted, its peak marked and
    labelled with the query and raw score, and a legend in the top-left corner that marks
    queries judged absent as 'not found'."""
    out = image.copy()
    for i, det in enumerate(detections):
        if det.area:
            tint = np.array(colour(i), np.float32)
            region = out[det.mask].astype(np.float32)
            out[det.mask] = (region * (1 - alpha) + tint * alpha).astype(np.uint8)
    scale = max(0.4, min(out.shape[:2]) / 800)
    thick = max(1, int(round(scale * 2)))
    for i, det in enumerate(detections):
        if not det.found:
            continue  # nothing to point at: named in the legend only
        c = colour(i)
        cv2.drawMarker(
            out,
            (det.peak_x, det.peak_y),
            (0, 0, 0),
            cv2.MARKER_CROSS,
            int(24 * scale) + 4,
            thick + 2,
        )
        cv2.drawMarker(out, (det.peak_x, det.peak_y), c, cv2.MARKER_CROSS, int(24 * scale), thick)
        _label(out, f"{det.query} {det.score:.2f}", (det.peak_x + 8, det.peak_y - 8), c, scale)
    for i, det in enumerate(detections):
        text, c = (det.query, colour(i)) if det.found else (f"{det.query}: not found", GREY)
        _label(out, text, (8, int(22 * scale) * (i + 1) + 4), c, scale)
    return out


def _label(img: np.ndarray, text: str, org: tuple[int, int], col, scale: float) -> None:
    # Hershey fonts are ASCII only; other characters become '?' rather than garbage.
    text = text.encode("ascii", "replace").decode()[:48]
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(round(scale * 1.5)))
    (w, h), base = cv2.getTextSize(text, font, scale * 0.6, thick)
    x = int(np.clip(org[0], 0, max(0, img.shape[1] - w)))
    y = int(np.clip(org[1], h + base, max(h + base, img.shape[0] - base)))
    cv2.rectangle(img, (x - 2, y - h - base), (x + w + 2, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, (x, y), font, scale * 0.6, col, thick, cv2.LINE_AA)
