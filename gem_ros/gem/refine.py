"""PAMR, pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020, visinf/1-stage-wseg), as
the successors' shared pipeline runs it (SCLIP's `pamr.py`, 10 steps, dilations (8, 16)): it
aligns the 16 px patch maps with the image's edges.

    refined = pamr(image, logits)      # image [B, 3, H, W] normalised, logits [B, P, h, w]

The math (../shared/reference-successors/README.md): the logits are upsampled bilinear
(align_corners=True) to the image; for each dilation d the 8 neighbours at offsets
{-d, 0, d}^2 minus the centre (replicate padding); per channel the affinity to a neighbour is
-|x - x_neighbour| / (1e-8 + 0.1 std), std being the unbiased standard deviation of the
9 x len(dilations) window values (each window's centre included, once per dilation);
averaged over the channels, softmaxed over all neighbours; then `steps` times each pixel's
mask becomes the affinity-weighted sum of its neighbours' (the centre not among them).

Memory: the authors stack every neighbour of every channel and query at full size ([B, P,
8 x len(dilations), H, W]: 1.2 GB for 5 queries of a 1280x720 frame). Here one image, one
channel and as many queries as MAX_STACK_VALUES allows run at a time, and a frame whose
stacks would pass it runs in strips of rows, each with a halo of steps x max(dilations) rows:
a pixel's result depends on nothing farther than that, so the strips give the same result as
the whole (tested), with the largest tensor bounded by the budget whatever the frame's size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

PAMR_STEPS = 10
PAMR_DILATIONS = (8, 16)
# Largest neighbour stack in flight, in values (float32: 4 bytes each): 128 MB.
MAX_STACK_VALUES = 32_000_000
MAX_DILATION = 64  # beyond it the stencil spans most frames: a mistake, not a setting
# The largest size the node refines at (`pamr_size`): 1280 x 720. PAMR's cost grows with the
# pixels (and, in strips, faster: each strip recomputes its halos): on a 2-core EPYC a 720p
# frame of 5 queries takes ~4 s with sliding windows, a 4K frame of 3 queries 150 s. Larger
# frames are refined at this many pixels and their refined maps upsampled bilinear.
MAX_PAMR_PIXELS = 1280 * 720


def pamr_size(size: tuple[int, int], max_pixels: int = MAX_PAMR_PIXELS) -> tuple[int, int]:
    """(height, width) PAMR runs at for an image of `size`: the size itself up to
    `max_pixels`, else the largest of its aspect within them."""
    height, width = size
    if height * width <= max_pixels:
        return height, width
    scale = (max_pixels / (height * width)) ** 0.5
    return max(1, int(height * scale)), max(1, int(width * scale))


def check_pamr(steps: int, dilations: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """(steps, dilations) checked: ValueError naming what is wrong."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 50:
        raise ValueError(f"PAMR steps must be an integer in [0, 50], got {steps!r}")
    dilations = tuple(dilations)
    if not dilations or len(dilations) > 8:
        raise ValueError(f"PAMR needs 1 to 8 dilations, got {len(dilations)}")
    for d in dilations:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DILATION:
            raise ValueError(f"PAMR dilations must be integers in [1, {MAX_DILATION}], got {d!r}")
    return steps, dilations


def pamr(
    image: torch.Tensor,
    logits: torch.Tensor,
    steps: int = PAMR_STEPS,
    dilations: Sequence[int] = PAMR_DILATIONS,
    max_stack_values: int = MAX_STACK_VALUES,
) -> torch.Tensor:
    """image [B, 3, H, W] (normalised like the model input), logits [B, P, h, w] -> refined
    [B, P, H, W] float32 (the logits upsampled, then `steps` PAMR steps)."""
    steps, dilations = check_pamr(steps, dilations)
    if image.ndim != 4 or logits.ndim != 4 or image.shape[0] != logits.shape[0]:
        raise ValueError(
            f"pamr takes image [B, C, H, W] and logits [B, P, h, w], got "
            f"{list(image.shape)} and {list(logits.shape)}"
        )
    image = image.float()
    height, width = image.shape[-2:]
    mask = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=True)
    if steps == 0:
        return mask
    halo, pad = steps * max(dilations), 2 * max(dilations)
    # The largest stack, per row of a strip with its halos: 9 window values per dilation.
    rows = max(halo, max_stack_values // (9 * len(dilations) * (width + pad)) - 2 * halo)
    neighbours = 8 * len(dilations)
    out = torch.empty_like(mask)
    for b in range(image.shape[0]):
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            lo, hi = max(top - halo, 0), min(bottom + halo, height)
            weights = _affinity(image[b, :, lo:hi], dilations)  # [N, h', W]
            # As many queries at once as the budget allows.
            per_query = neighbours * (hi - lo + pad) * (width + pad)
            chunk = max(1, max_stack_values // per_query)
            for first in range(0, mask.shape[1], chunk):
                m = mask[b, first : first + chunk, lo:hi]  # [q, h', W]
                for _ in range(steps):
                    m = _weighted_sum(m, weights, dilations)
                out[b, first : first + chunk, top:bottom] = m[:, top - lo : bottom - lo]
    return out


def _neighbours(x: torch.Tensor, dilations: Sequence[int], centre: bool = False) -> torch.Tensor:
    """[..., H, W] -> [N, ..., H, W]: the value at each of the 8 offsets {-d, 0, d}^2 minus
    (0, 0) per dilation, in SCLIP's kernel order (rows top to bottom, then columns),
    replicate-padded; with `centre`, the 3x3 window's 9 values (the centre in the middle)."""
    height, width = x.shape[-2:]
    flat = x.reshape(1, -1, height, width)
    out = []
    for d in dilations:
        padded = F.pad(flat, [d] * 4, mode="replicate")
        for dy in (0, d, 2 * d):
            for dx in (0, d, 2 * d):
                if (dy, dx) == (d, d) and not centre:
                    continue
                out.append(padded[0, :, dy : dy + height, dx : dx + width].reshape(x.shape))
    return torch.stack(out)


def _weighted_sum(m: torch.Tensor, weights: torch.Tensor, dilations) -> torch.Tensor:
    """One PAMR step: [q, H, W] masks -> each pixel's neighbours' values weighted by
    `weights` [N, H, W] and summed, accumulated neighbour by neighbour (no [N, q, H, W]
    stack: half the memory traffic; the same sum up to float rounding, ~1e-7)."""
    height, width = m.shape[-2:]
    out = torch.zeros_like(m)
    k = 0
    for d in dilations:
        padded = F.pad(m[None], [d] * 4, mode="replicate")[0]
        for dy in (0, d, 2 * d):
            for dx in (0, d, 2 * d):
                if (dy, dx) == (d, d):
                    continue
                out.addcmul_(padded[:, dy : dy + height, dx : dx + width], weights[k])
                k += 1
    return out


def _affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """[C, H, W] -> [N, H, W] softmax weights of each pixel's neighbours."""
    total = None
    for channel in image:
        std = _neighbours(channel, dilations, centre=True).std(0)  # unbiased, as the authors
        neighbours = _neighbours(channel, dilations)
        a = -(channel - neighbours).abs() / (1e-8 + 0.1 * std)
        total = a if total is None else total + a
    return (total / image.shape[0]).softmax(0)
