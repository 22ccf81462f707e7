"""From patch logits to what a robot uses: heatmaps, masks, peaks, boxes, label maps.

Everything here works on whole [P, ...] tensors on the model's device and moves only the
final, small results (and the masks) to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gem_ros.settings import DEFAULT_BACKGROUND_THRESHOLD  # noqa: F401 - re-exported

DEFAULT_MASK_THRESHOLD = 0.5  # on the min-max heatmap: the OpenImages-V7 protocol
# Heatmap pixels upsampled at once (queries x H x W): 8 M floats, 32 MB a map in flight; the
# usual 640x480 frame with up to 27 queries takes one group.
CHUNK_PIXELS = 8_000_000


@dataclass
class Detection:
    """What one query found in one image, in the input image's pixel coordinates."""

    query: str
    score: float  # raw cosine similarity at the peak: comparable across queries and frames
    peak_x: int
    peak_y: int
    bbox: tuple[int, int, int, int]  # x, y, width, height of the mask; zeros if empty
    area: int  # mask pixels
    mask: np.ndarray  # [H, W] bool
    peaks: list[tuple[int, int, float]] = field(default_factory=list)  # local maxima (x, y, score)
    heatmap: Optional[np.ndarray] = None  # [H, W] float32 in [0, 1], when asked for
    # Whether the query is judged present (gem_ros.gem.presence). When not, mask, area, bbox
    # and peaks are empty; peak_x/peak_y and the heatmap still say where it would point.
    # [h, w] float32 raw cosines of the model's patch grid, when asked for
    patch_logits: Optional[np.ndarray] = None
    found: bool = True
    confidence: float = 1.0  # presence confidence in [0, 1]; 1 with presence off
    # Whether found/absent is the query's held decision over frames (gem_ros.gem.hold), not
    # this frame's alone.
    held: bool = False

    def mark_absent(self, confidence: float) -> None:
        self.found, self.confidence = False, confidence
        self.mask = np.zeros_like(self.mask)
        self.area, self.bbox, self.peaks = 0, (0, 0, 0, 0), []


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[..., P, h, w] patch logits -> [..., P, H, W], bilinear (align_corners=False), as the
    authors do."""
    lead = logits.shape[:-2]
    out = F.interpolate(
        logits.reshape(-1, 1, *logits.shape[-2:]).float(),
        size=size,
        mode="bilinear",
        align_corners=False,
    )
    return out.view(*lead, *size)


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation over the last two axes. A flat map (range below 1e-6,
    rounding noise of interpolation) gives zeros rather than amplified noise."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 1e-6, (maps - lo) / span.clamp_min(1e-6), 0.0)


def local_peaks(
    logits: torch.Tensor, image_size: tuple[int, int], threshold: float, max_peaks: int
) -> list[list[tuple[int, int, float]]]:
    """Per query, up to `max_peaks` local maxima (3x3) of the patch logits [P, h, w] whose
    min-max value passes `threshold`, strongest first, as patch-centre pixels (x, y, score)."""
    if max_peaks <= 0:
        return [[] for _ in range(logits.shape[0])]
    h, w = logits.shape[-2:]
    height, width = image_size
    is_max = logits == F.max_pool2d(logits[:, None], 3, stride=1, padding=1)[:, 0]
    keep = is_max & (min_max(logits) > threshold)
    scores = torch.where(keep, logits, torch.full_like(logits, -torch.inf)).flatten(1)
    top = scores.topk(min(max_peaks, h * w), dim=1)
    out = []
    for vals, idx in zip(top.values.tolist(), top.indices.tolist()):
        out.append(
            [
                (
                    min(int((i % w + 0.5) * width / w), width - 1),
                    min(int((i // w + 0.5) * height / h), height - 1),
                    v,
                )
                for v, i in zip(vals, idx)
                if v != -np.inf
            ]
        )
    return out


def detections(
    queries: Sequence[str],
    logits: torch.Tensor,
    image_size: tuple[int, int],
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    max_peaks: int = 5,
    return_heatmaps: bool = False,
    dense: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    grid: Optional[tuple[int, int]] = None,
    return_grid: bool = False,
) -> list[Detection]:
    """Detections of one image from its logits [P, h, w] (cosines): the patch grid's, or
    denser ones (sliding windows).

    `dense` maps a chunk of them to their [p, H, W] maps at the image's size (sliding
    windows' upsampling, PAMR: GemModel._dense_maps); by default they are upsampled
    bilinear. Peaks and the patch grids (`return_grid`: Detection.patch_logits) come from
    the maps at the patch `grid`: the logits themselves by default, else the dense maps
    averaged down to it, so that refined maps give refined peaks and heatmaps.

    Queries are mapped in groups of at most CHUNK_PIXELS pixels, so the float maps in flight
    stay bounded whatever the query count; the [P, H, W] bool masks (one byte a pixel) are
    the only full-size output.
    """
    height, width = image_size
    per_chunk = max(1, CHUNK_PIXELS // (height * width))
    out: list[Detection] = []
    for start in range(0, len(queries), per_chunk):
        chunk = logits[start : start + per_chunk]
        raw = upsample(chunk, image_size) if dense is None else dense(chunk)  # [p, H, W]
        on_grid = chunk if dense is None else F.adaptive_avg_pool2d(raw[None], grid)[0]
        dets = _detections_of_chunk(
            queries[start : start + per_chunk],
            raw,
            image_size,
            mask_threshold,
            return_heatmaps,
            local_peaks(on_grid.float(), image_size, mask_threshold, max_peaks),
        )
        if return_grid:
            for det, patch in zip(dets, on_grid.float().cpu().numpy()):
                det.patch_logits = patch
        out += dets
    return out


def to_host(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors on the CPU, after one wait. From CUDA each is copied without blocking into
    page-locked (pinned) host memory, so the copies run as DMA and the stream is waited on
    once, not once per tensor; the caching host allocator reuses those blocks once their
    arrays are freed, so a steady stream of frames allocates no new pinned memory. CPU
    tensors are returned as they are: no copy."""
    if not tensors or tensors[0].device.type != "cuda":
        return list(tensors)
    out = []
    for tensor in tensors:
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        out.append(host.copy_(tensor, non_blocking=True))
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return out


def _detections_of_chunk(queries, raw, image_size, mask_threshold, return_heatmaps, peaks):
    """Detections from a chunk of maps [p, H, W] at the image's size."""
    height, width = image_size
    heat = min_max(raw)
    mask = heat > mask_threshold
    flat_peak = raw.flatten(1).argmax(dim=1)
    score = raw.flatten(1).gather(1, flat_peak[:, None])[:, 0]
    del raw
    area = mask.flatten(1).sum(dim=1)
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # [p, H], [p, W]
    # First and last True along each axis, via argmax over a 0/1 ramp.
    y0 = rows.int().argmax(dim=1)
    y1 = height - 1 - rows.flip(1).int().argmax(dim=1)
    x0 = cols.int().argmax(dim=1)
    x1 = width - 1 - cols.flip(1).int().argmax(dim=1)
    # float64 holds the pixel indices and counts exactly (below 2**53), and the scores.
    small = torch.stack([t.double() for t in (flat_peak, area, x0, y0, x1, y1, score)])
    small, masks, *heats = to_host(small, mask, *([heat] if return_heatmaps else []))
    small = small.tolist()
    masks = masks.numpy()
    heats = heats[0].numpy() if heats else [None] * len(queries)
    out = []
    for p, q in enumerate(queries):
        fp, a, bx0, by0, bx1, by1 = (int(col[p]) for col in small[:6])
        bbox = (bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1) if a else (0, 0, 0, 0)
        out.append(
            Detection(
                query=q,
                score=small[6][p],
                peak_x=fp % width,
                peak_y=fp // width,
                bbox=bbox,
                area=a,
                mask=masks[p],
                peaks=peaks[p],
                heatmap=heats[p],
            )
        )
    return out


def labels_with_background(
    scores: torch.Tensor,
    logit_scale: float,
    background_threshold: float = DEFAULT_BACKGROUND_THRESHOLD,
) -> torch.Tensor:
    """[P, H, W] similarities -> [H, W] int64 labels: 0 = background, i + 1 = query i.

    Argmax over queries; background where the softmax of the scaled similarities (CLIP's
    logit scale) stays below the threshold: the paper's VOC protocol.
    """
    best, idx = (scores.float() * logit_scale).softmax(dim=0).max(dim=0)
    return torch.where(best < background_threshold, 0, idx + 1)


def semantic_labels(
    logits: torch.Tensor,
    size: tuple[int, int],
    logit_scale: float,
    background_threshold: float = DEFAULT_BACKGROUND_THRESHOLD,
) -> torch.Tensor:
    """[P, h, w] patch logits -> [H, W] label map of the bilinearly upsampled logits."""
    return labels_with_background(upsample(logits, size), logit_scale, background_threshold)
