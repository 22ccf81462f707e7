"""A frame's path from pixels to detections (`GemModel.locate_batch`), and the successors'
sliding windows and PAMR on that path (`slide_logits`).

Where tensors live: each chunk's [B, 3, h, w] pixels are born in `GemModel.preprocess`, give
patch tokens [B, h/p, w/p, D] (one forward, with the image embeddings presence judges), and
each image's [P, h/p, w/p] logits (its own queries' text) die in `postprocess.detections`,
whose exits to the CPU are small (gem_ros/gem/model.py says which).

`model` below is a GemModel (not imported: it imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import DEFAULT_BACKGROUND_PROMPTS
from . import postprocess, presence, refine, windows
from .inputs import InputBudgetError, check_image
from .postprocess import Detection
from .text import check_queries

# Images in one forward of locate_batch (the cameras' frames of one shape): with
# max_input_pixels per image, the per-batch bound on activations.
MAX_BATCH_IMAGES = 4


@dataclass(frozen=True)
class LocateOptions:
    """How `locate` and `locate_batch` turn maps into detections (their keyword arguments)."""

    mask_threshold: float = postprocess.DEFAULT_MASK_THRESHOLD
    input_size: Optional[int] = None
    max_peaks: int = 5
    return_heatmaps: bool = False
    max_input_pixels: Optional[int] = None
    presence_rule: str = "image"  # "image": each query judged against the backgrounds; "off"
    presence_threshold: float = 0.5
    background_prompts: Sequence[str] | str = DEFAULT_BACKGROUND_PROMPTS
    return_patch_logits: bool = False  # each query's [h/p, w/p] patch cosines (a few KB)
    max_batch: int = MAX_BATCH_IMAGES
    slide: int = 0  # > 0: each image's maps from sliding windows of this side
    slide_stride: int = 112
    pamr_steps: int = 0  # > 0: maps refined by PAMR at the image's size
    pamr_dilations: Sequence[int] = refine.PAMR_DILATIONS


@dataclass
class _Text:
    """The text side of one locate_batch call, encoded once for all its images."""

    lists: list[list[str]]  # each image's checked queries
    per_image: list[torch.Tensor]  # each image's [P_i, D] query embeddings
    backgrounds: list[str]
    background: Optional[torch.Tensor]  # [B, D] when presence is judged, else None


def locate_batch(
    model,
    images: Sequence[np.ndarray],
    queries: Sequence[str] | Sequence[Sequence[str]],
    options: LocateOptions,
    tokens_out: Optional[list] = None,
) -> list[list[Detection]]:
    """GemModel.locate_batch (its docstring says what); every image's budget is checked
    before any pixel is copied. tokens_out: a list of len(images) that each image's patch
    tokens ([h/p, w/p, D] float32 numpy) and image embedding ([D]) are put in, as a pair (the
    map of dense features); forwards run for them with no query too."""
    lists = _query_lists(images, queries)
    union = list(dict.fromkeys(q for checked in lists for q in checked))
    if not union and tokens_out is None:
        return [[] for _ in images]
    if options.presence_rule not in ("image", "off"):
        raise ValueError(f"presence_rule must be 'image' or 'off', got {options.presence_rule!r}")
    judge = options.presence_rule == "image" and bool(union)
    backgrounds = model.check_backgrounds(options.background_prompts) if judge else []
    sizes = [check_image(image) for image in images]
    shapes = [
        model.input_shape(*size, options.input_size, options.max_input_pixels) for size in sizes
    ]
    if options.slide:
        for shape in shapes:
            check_slide(model.patch_size, shape, options.slide, options.slide_stride)
    if options.pamr_steps:
        refine.check_pamr(options.pamr_steps, options.pamr_dilations)
    text = _encode(model, lists, union, backgrounds)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    out: list = [None] * len(images)
    step = max(1, options.max_batch)
    for indices in groups.values():
        for at in range(0, len(indices), step):
            chunk = indices[at : at + step]
            chunk_out = _locate_chunk(model, images, sizes, chunk, text, options, tokens_out)
            for i, dets in zip(chunk, chunk_out):
                out[i] = dets
    return out


def _query_lists(images, queries) -> list[list[str]]:
    """Each image's checked queries: one list for all, or one list per image."""
    if queries and not isinstance(queries[0], str):
        if len(queries) != len(images):
            raise ValueError(f"{len(queries)} query lists for {len(images)} images")
        return [check_queries(q) for q in queries]
    return [check_queries(queries)] * len(images)


def _encode(model, lists, union: list[str], backgrounds: list[str]) -> _Text:
    # One text lookup for queries and background prompts: the cache's per-frame fast path.
    rivals = [b for b in backgrounds if b not in union]
    if not union:  # tokens only (the map): no text
        return _Text(lists, [None] * len(lists), [], None)
    text = model._encode(union + rivals)  # [P + B', D]
    row = {q: i for i, q in enumerate(union + rivals)}
    background = torch.stack([text[row[b]] for b in backgrounds]) if backgrounds else None
    same = all(checked is lists[0] for checked in lists)
    per_image = [
        text[: len(union)] if same else text[[row[q] for q in checked]] for checked in lists
    ]
    return _Text(lists, per_image, backgrounds, background)


def _locate_chunk(model, images, sizes, chunk, text: _Text, options, tokens_out=None):
    """The detections of the images `chunk` (indices into `images`, one input shape): one
    forward over their whole inputs gives the patch maps and the image embeddings presence
    judges (with sliding windows, only where presence is judged)."""
    o = options
    pixels = torch.cat(
        [model.preprocess(images[i], o.input_size, o.max_input_pixels) for i in chunk]
    )
    judge = text.background is not None
    keep = tokens_out is not None
    whole = not o.slide or judge or keep
    tokens, embedding = model.features(pixels, image=judge or keep) if whole else (None, None)
    grid = (pixels.shape[-2] // model.patch_size, pixels.shape[-1] // model.patch_size)
    for j, i in enumerate(chunk):
        one = pixels[j : j + 1]
        kept = [] if keep and o.slide else None  # the windows' tokens, for the map
        if o.slide and text.lists[i]:
            logits = window_logits(
                model, one, text.per_image[i], o.slide, o.slide_stride, o.max_input_pixels, kept
            )[0]  # fmt: skip
        elif text.lists[i]:
            logits = torch.einsum("hwd,pd->phw", tokens[j], text.per_image[i])
        if keep:
            # With sliding windows the map keeps what they see (their tokens averaged on the
            # input's grid), as the frame's own heatmaps do; else the whole input's.
            dense_tokens = _window_tokens(model, one, o, kept)[0] if o.slide else tokens[j]
            tokens_out[i] = (
                dense_tokens.float().cpu().numpy(),
                embedding[j].float().cpu().numpy(),
            )
        if not text.lists[i]:
            yield []
            continue
        dense = (
            _dense_maps(pixels[j : j + 1], sizes[i], o.pamr_steps, o.pamr_dilations)
            if o.slide or o.pamr_steps
            else None
        )
        dets = postprocess.detections(
            text.lists[i], logits, sizes[i], o.mask_threshold, o.max_peaks,
            o.return_heatmaps, dense=dense, grid=grid, return_grid=o.return_patch_logits,
        )  # fmt: skip
        if judge:
            conf = presence.confidences(
                embedding[j], text.per_image[i], text.background, model.logit_scale,
                text.lists[i], text.backgrounds,
            ).tolist()  # fmt: skip
            for det, c in zip(dets, conf):
                if c >= o.presence_threshold:
                    det.confidence = c
                else:
                    det.mark_absent(c)
        yield dets


def check_slide(patch: int, shape: tuple[int, int], crop: int, stride: int) -> None:
    """ValueError for a window side that is not a multiple of the patch size, and
    InputBudgetError for more than MAX_WINDOWS windows over this input."""
    if crop % patch:
        raise ValueError(f"slide {crop} must be a multiple of the patch size {patch}")
    n = windows.window_count(*shape, crop, stride)
    if n > windows.MAX_WINDOWS:
        raise InputBudgetError(
            f"sliding windows of {crop} at stride {stride} over a {shape[1]}x{shape[0]} "
            f"input are {n} windows, more than {windows.MAX_WINDOWS}: raise slide_stride "
            "or lower input_size"
        )


def _per_forward(model, pixels, crop, max_input_pixels) -> int:
    """How many windows one forward runs: as many as max_input_pixels allows."""
    budget = max_input_pixels or model.max_input_pixels
    return max(1, budget // (min(crop, pixels.shape[-2]) * min(crop, pixels.shape[-1])))


def window_logits(model, pixels, text, crop, stride, max_input_pixels, kept=None):
    """[B, 3, h, w] -> [B, P, h, w]: the windows' patch cosines with `text` [P, D],
    averaged; as many windows per forward as max_input_pixels allows. kept: a list that
    gets each forward's window tokens (for `_window_tokens`)."""

    def forward(crops):
        tokens = model.patch_tokens(crops)
        if kept is not None:
            kept.append(tokens)
        return torch.einsum("nhwd,pd->nphw", tokens, text)

    per_forward = _per_forward(model, pixels, crop, max_input_pixels)
    return windows.slide(forward, pixels, crop, stride, per_forward)


def _window_tokens(model, pixels, o, kept=None) -> torch.Tensor:
    """[1, 3, h, w] -> [1, h/p, w/p, D]: the windows' tokens averaged on the input's grid;
    those `window_logits` kept, else one pass of windows for them (a frame with no query)."""
    p = model.patch_size
    if kept:
        height, width = pixels.shape[-2:]
        return windows.average_tokens(
            torch.cat(kept).float(), 1, height, width, o.slide, o.slide_stride, p
        )
    per_forward = _per_forward(model, pixels, o.slide, o.max_input_pixels)
    return windows.slide_tokens(model.patch_tokens, pixels, o.slide, o.slide_stride, per_forward, p)


def _dense_maps(pixels, size, pamr_steps, dilations):
    """A chunk of queries' logits -> their maps at the image's `size`: bilinear
    (align_corners=False), then PAMR on the input resized to that size (bilinear), as
    SCLIP's forward_slide; a frame over refine.MAX_PAMR_PIXELS is refined at that many
    pixels (refine.pamr_size) and its refined maps upsampled to `size`. The resized
    input is made once, at the first chunk."""
    at = refine.pamr_size(size)
    image = []

    def dense(logits: torch.Tensor) -> torch.Tensor:
        if not pamr_steps:
            return postprocess.upsample(logits, size)
        if not image:
            image.append(
                F.interpolate(pixels.float(), size=at, mode="bilinear", align_corners=False)
            )
        maps = postprocess.upsample(logits, at)
        maps = refine.pamr(image[0], maps[None], pamr_steps, dilations)[0]
        return maps if at == tuple(size) else postprocess.upsample(maps, size)

    return dense


def slide_logits(
    model, pixels, queries, crop, stride, out_size, pamr_steps, pamr_dilations
) -> torch.Tensor:
    """GemModel.slide_logits (its docstring says what)."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [B, 3, H, W], got {list(pixels.shape)}")
    if crop:
        check_slide(model.patch_size, tuple(pixels.shape[-2:]), crop, stride)
    if pamr_steps:
        refine.check_pamr(pamr_steps, pamr_dilations)
    pixels = pixels.to(model.device)
    text = model._encode(check_queries(queries))
    if crop:
        logits = window_logits(model, pixels, text, crop, stride, None)
    else:
        logits = torch.einsum("bhwd,pd->bphw", model.patch_tokens(pixels), text)
    size = tuple(out_size) if out_size is not None else tuple(pixels.shape[-2:])
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    if pamr_steps:
        image = F.interpolate(pixels.float(), size=size, mode="bilinear", align_corners=False)
        logits = refine.pamr(image, logits, pamr_steps, pamr_dilations)
    return logits
