"""Sliding windows, the successors' inference (SCLIP's `forward_slide`, which NACLIP,
ClearCLIP and SC-CLIP share): square crops at a stride over the model input, each crop one
forward, the crops' maps upsampled to the crop and averaged where they overlap.

    logits = slide(forward, pixels, crop=224, stride=112, per_forward=8)   # [B, P, h, w]

The grid (../shared/reference-successors/README.md): `rows = max(h - crop + stride - 1, 0)
// stride + 1` (columns alike); window (i, j) spans `y1 = i stride`, `y2 = min(y1 + crop,
h)`, then `y1 = max(y2 - crop, 0)`: the last window is pulled back inside the input, so the
windows there overlap more. All windows of an input have one size, so they batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

MAX_WINDOWS = 64  # windows per input: a 2048 px side at crop 224, stride 112 has 18 x 18


def window_boxes(height: int, width: int, crop: int, stride: int) -> list[tuple[int, ...]]:
    """(y1, y2, x1, x2) of each window, row by row."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride + crop, height), min(j * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def window_count(height: int, width: int, crop: int, stride: int) -> int:
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    return rows * cols


def _crops(pixels: torch.Tensor, boxes: list, per_forward: int):
    """Every (image, window) pair, image by image, in groups of at most per_forward:
    yields (the group's pairs, their crops [n, 3, c, c])."""
    if len(boxes) > MAX_WINDOWS:
        raise ValueError(f"{len(boxes)} windows; at most {MAX_WINDOWS}")
    pairs = [(b, box) for b in range(pixels.shape[0]) for box in boxes]
    step = max(1, per_forward)
    for at in range(0, len(pairs), step):
        group = pairs[at : at + step]
        yield (
            group,
            torch.cat([pixels[b : b + 1, :, y1:y2, x1:x2] for b, (y1, y2, x1, x2) in group]),
        )


def slide(
    forward: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    crop: int,
    stride: int,
    per_forward: int,
) -> torch.Tensor:
    """pixels [B, 3, h, w] -> [B, P, h, w]: forward(crops [n, 3, c, c]) -> patch logits [n,
    P, c/p, c/p] run on at most `per_forward` windows at once, each window's upsampled
    bilinear (align_corners=False) to the crop and added in; divided by the count of windows
    over each pixel."""
    batch, _, height, width = pixels.shape
    boxes = window_boxes(height, width, crop, stride)
    total = count = None
    for group, crops in _crops(pixels, boxes, per_forward):
        logits = forward(crops).float()
        logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        if total is None:
            total = logits.new_zeros((batch, logits.shape[1], height, width))
            count = logits.new_zeros((1, 1, height, width))
        for (b, (y1, y2, x1, x2)), window in zip(group, logits):
            total[b, :, y1:y2, x1:x2] += window
    for y1, y2, x1, x2 in boxes:
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def average_tokens(
    window_tokens: torch.Tensor, batch: int, height: int, width: int, crop: int, stride: int,
    patch: int,
) -> torch.Tensor:  # fmt: skip
    """The windows' patch tokens [N, c/p, c/p, D] (every (image, window) pair, in `slide`'s
    order) -> [B, h/p, w/p, D]: averaged on the input's patch grid where windows overlap,
    L2-normalised. The dense features sliding windows give, for the map of features: a patch's
    cosine with a text is then the mean of its windows' cosines (before their upsampling). A
    window whose corner is not on the grid (a stride that is no multiple of the patch) is
    placed at the nearest patch."""
    boxes = window_boxes(height, width, crop, stride)
    rows, cols = height // patch, width // patch
    total = window_tokens.new_zeros((batch, rows, cols, window_tokens.shape[-1]))
    count = window_tokens.new_zeros((rows, cols, 1))
    pairs = [(b, box) for b in range(batch) for box in boxes]
    for tokens, (b, (y1, _, x1, _)) in zip(window_tokens, pairs):
        th, tw = tokens.shape[:2]
        r, c = min(round(y1 / patch), rows - th), min(round(x1 / patch), cols - tw)
        total[b, r : r + th, c : c + tw] += tokens
        if b == 0:
            count[r : r + th, c : c + tw] += 1
    return F.normalize(total / count.clamp(min=1), dim=-1)


def slide_tokens(
    tokens_of: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    crop: int,
    stride: int,
    per_forward: int,
    patch: int,
) -> torch.Tensor:
    """pixels [B, 3, h, w] -> [B, h/p, w/p, D]: tokens_of(crops [n, 3, c, c]) -> [n, c/p, c/p,
    D] on every window (at most `per_forward` at once), then `average_tokens`."""
    batch, _, height, width = pixels.shape
    boxes = window_boxes(height, width, crop, stride)
    kept = [tokens_of(crops) for _, crops in _crops(pixels, boxes, per_forward)]
    return average_tokens(torch.cat(kept).float(), batch, height, width, crop, stride, patch)
