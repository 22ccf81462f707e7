"""GemModel: an open_clip CLIP with GEM's patch tokens, answering text queries.

Where tensors live (on the model's device unless said otherwise):
- A frame's tensors are born in `preprocess` (the uint8 image, copied once to the device,
  resized and normalised) and go through `vision.PatchTokenEncoder` ([1, 3, h, w] ->
  patch tokens [1, h/p, w/p, D]) and `patch_logits` ([1, P, h/p, w/p]); they die in
  `postprocess.detections`, whose only exits to the CPU are the [P, H, W] bool masks, one
  [6, P] tensor of peaks, areas and boxes, the [P] peak scores, the local peaks' few values
  and, when asked for, the [P, H, W] heatmaps. `segment` exits with the [H, W] label map.
- Long-lived: the text embeddings ([D] per (templates, query); `text.TextEmbeddingCache`,
  at most 4096 entries, least recently used dropped), the positional embeddings resampled per
  input grid (`vision.PatchTokenEncoder`, at most 8 grids), the mean and std of the pixel
  normalisation, and the weights.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import DEFAULT_BACKGROUND_PROMPTS, MAX_INPUT_PIXELS, ModelSettings
from . import postprocess, presence, refine, windows
from .backends import TorchBackend
from .postprocess import Detection
from .scclip import ScclipConfig
from .text import (
    QueryError,
    TextEmbeddingCache,
    check_queries,
    check_templates,
    parse_queries,
)
from .vision import PatchTokenEncoder

MAX_IMAGE_PIXELS = 50_000_000  # past this the full-size masks alone take gigabytes
# Images in one forward of locate_batch (the cameras' frames of one shape): with
# max_input_pixels per image, the per-batch bound on activations.
MAX_BATCH_IMAGES = 4
MIN_INPUT_SIDE_PATCHES = 4  # a narrower input says nothing useful: refused, not fed


class InputBudgetError(ValueError):
    """An image whose aspect ratio cannot be fed within the model-input budget."""


# Frames arrive as read-only views of message buffers; they are only read (copied to the
# device and converted), so torch's warning about non-writable arrays does not apply.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class GemModel:
    def __init__(
        self,
        clip: torch.nn.Module,
        tokenizer,
        *,
        name: str,
        settings: ModelSettings = ModelSettings(),
        device: torch.device = torch.device("cpu"),
        autocast_dtype: Optional[torch.dtype] = None,
        input_size: int = 448,
        max_input_pixels: int = MAX_INPUT_PIXELS,
        mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
        std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711),
    ):
        self.clip = clip
        self.name = name
        self.settings = settings
        self.device = torch.device(device)
        self.encoder = PatchTokenEncoder(
            clip.visual,
            settings.method,
            settings.gem_depth,
            settings.ss_attn_iter,
            settings.ss_attn_temp or None,
            settings.naclip_std,
            ScclipConfig.from_settings(settings),
        )
        self.patch_size = self.encoder.patch_size
        self.templates = check_templates(settings.templates)
        self.input_size = input_size
        self.max_input_pixels = max_input_pixels
        self.autocast_dtype = autocast_dtype
        self.logit_scale = float(clip.logit_scale.detach().exp().clamp(max=100))
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self._text = TextEmbeddingCache(
            clip.encode_text, tokenizer, getattr(clip, "context_length", 77), self.device
        )
        # What runs the image encoder (gem_ros/gem/backends.py); load_model may swap it.
        self.backend = TorchBackend(self)

    @property
    def method(self) -> str:
        return self.encoder.method

    @property
    def precision(self) -> str:
        """The precision the model runs in (what `precision: auto` resolved to)."""
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.autocast_dtype, "fp32")

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # --- text ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_text(self, queries: Sequence[str]) -> torch.Tensor:
        """[P, D] L2-normalised float32 text embeddings, cached per (templates, query)."""
        return self._encode(check_queries(queries))

    @torch.inference_mode()
    def _encode(self, checked: list[str]) -> torch.Tensor:
        with self.autocast():
            return self._text(checked, self.templates)

    def check_queries(self, queries: Sequence[str]) -> list[str]:
        """`queries` trimmed and de-duplicated, or QueryError (blank, too long, too many, more
        tokens than the text encoder takes). Tokenizes only: no text tower, milliseconds."""
        queries = check_queries(queries)
        self._text.check(queries, self.templates)
        return queries

    def prepare_queries(self, queries: Sequence[str]) -> list[str]:
        """check_queries, then encode them ahead of the frames that use them (warms the
        cache, so the first frame after a query change does not pay the text tower)."""
        queries = self.check_queries(queries)
        if queries:
            self._encode(queries)
        return queries

    # --- image ----------------------------------------------------------------------------
    def input_shape(
        self,
        height: int,
        width: int,
        input_size: Optional[int] = None,
        max_input_pixels: Optional[int] = None,
    ) -> tuple[int, int]:
        """Model input size: shorter side -> input_size, aspect kept, multiples of the patch;
        scaled down (aspect kept) where that would exceed max_input_pixels.

        Raises InputBudgetError where even that leaves the shorter side under
        MIN_INPUT_SIDE_PATCHES patches (aspect ratios of about 100:1 at the default budget):
        the budget, not the image, bounds the tokens and memory of a frame.
        """
        side = input_size or self.input_size
        budget = max_input_pixels or self.max_input_pixels
        p = self.patch_size
        scale = side / min(height, width)
        shape = (max(p, round(height * scale / p) * p), max(p, round(width * scale / p) * p))
        if shape[0] * shape[1] <= budget:
            return shape
        # The shorter side in whole patches, the longer one by the aspect ratio, both within
        # the budget.
        short, long = min(height, width), max(height, width)
        short_p = int(short * (budget / (height * width)) ** 0.5 / p)
        long_p = min(round(long / short * short_p), budget // max(1, short_p * p * p))
        shape = (short_p * p, long_p * p) if height <= width else (long_p * p, short_p * p)
        if short_p < MIN_INPUT_SIDE_PATCHES:
            ratio = long / short
            most = budget / (MIN_INPUT_SIDE_PATCHES * p) ** 2
            raise InputBudgetError(
                f"image of {width}x{height} (aspect ratio {ratio:.0f}:1) cannot be fed within "
                f"max_input_pixels {budget}: its shorter side would be under "
                f"{MIN_INPUT_SIDE_PATCHES} patches ({MIN_INPUT_SIDE_PATCHES * p} px); crop it "
                f"to an aspect ratio of at most {most:.0f}:1 or raise max_input_pixels"
            )
        return shape

    @torch.inference_mode()
    def preprocess(
        self,
        image: np.ndarray,
        input_size: Optional[int] = None,
        max_input_pixels: Optional[int] = None,
    ) -> torch.Tensor:
        """RGB uint8 [H, W, 3] (a numpy array, or a tensor such as a frame decoded on the GPU:
        gem_ros.gem.decode) -> normalised float32 [1, 3, h, w] on the model's device."""
        height, width = check_image(image)
        size = self.input_shape(height, width, input_size, max_input_pixels)  # before any copy
        if not isinstance(image, torch.Tensor):
            image = torch.from_numpy(np.ascontiguousarray(image))
        img = image.to(self.device, non_blocking=True)
        x = img.permute(2, 0, 1)[None].float()
        if size != (height, width):
            x = F.interpolate(
                x, size=size, mode="bicubic", antialias=True, align_corners=False
            ).clamp_(0, 255)
        return (x - self._mean) / self._std

    # --- the model ------------------------------------------------------------------------
    @torch.inference_mode()
    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised pixels -> L2-normalised patch tokens [B, H/p, W/p, D]."""
        return self.features(pixels)[0]

    @torch.inference_mode()
    def features(
        self, pixels: torch.Tensor, image: bool = False
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """L2-normalised patch tokens [B, H/p, W/p, D] and, when `image`, CLIP's image
        embedding [B, D] (what `encode_image` gives at this input size), else None."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [B, 3, H, W], got {list(pixels.shape)}")
        p = self.patch_size
        if pixels.shape[-2] % p or pixels.shape[-1] % p:
            raise ValueError(
                f"pixel height and width must be multiples of the patch size {p}, "
                f"got {list(pixels.shape[-2:])}"
            )
        return self.backend(pixels.to(self.device), image)

    @torch.inference_mode()
    def patch_logits(self, pixels: torch.Tensor, queries: Sequence[str]) -> torch.Tensor:
        """[B, P, H/p, W/p] cosine similarity of each patch token with each query."""
        return self._logits(pixels, check_queries(queries))

    def _logits(self, pixels: torch.Tensor, checked: list[str]) -> torch.Tensor:
        text = self._encode(checked)  # [P, D]
        return torch.einsum("bhwd,pd->bphw", self.patch_tokens(pixels), text)

    @torch.inference_mode()
    def heatmaps(
        self, pixels: torch.Tensor, queries: Sequence[str], size: Optional[tuple[int, int]] = None
    ) -> torch.Tensor:
        """[B, P, H, W]: logits bilinearly upsampled to `size` (default: the input's), min-max
        normalised per query, as the authors' heatmaps."""
        logits = self.patch_logits(pixels, queries)
        return postprocess.min_max(postprocess.upsample(logits, size or tuple(pixels.shape[-2:])))

    @torch.inference_mode()
    def locate(
        self,
        image: np.ndarray,
        queries: Sequence[str],
        mask_threshold: float = postprocess.DEFAULT_MASK_THRESHOLD,
        input_size: Optional[int] = None,
        max_peaks: int = 5,
        return_heatmaps: bool = False,
        max_input_pixels: Optional[int] = None,
        presence_rule: str = "image",
        presence_threshold: float = 0.5,
        background_prompts: Sequence[str] | str = DEFAULT_BACKGROUND_PROMPTS,
        return_patch_logits: bool = False,
        **pipeline,
    ) -> list[Detection]:
        """One Detection per query for an RGB uint8 image, in its pixel coordinates.

        With presence_rule "image", each query gets a presence `confidence` (see
        `gem.presence`) and is `found` when it reaches `presence_threshold`; a query not found
        has an empty mask and no peaks. With "off" every query is found (confidence 1).
        `return_patch_logits` adds each query's [h/p, w/p] patch cosines (a few KB).
        `pipeline`: the successors' sliding windows and PAMR (slide, slide_stride,
        pamr_steps, pamr_dilations: see locate_batch).
        """
        return self.locate_batch(
            [image],
            queries,
            mask_threshold,
            input_size,
            max_peaks,
            return_heatmaps,
            max_input_pixels,
            presence_rule,
            presence_threshold,
            background_prompts,
            return_patch_logits,
            **pipeline,
        )[0]

    @torch.inference_mode()
    def locate_batch(
        self,
        images: Sequence[np.ndarray],
        queries: Sequence[str] | Sequence[Sequence[str]],
        mask_threshold: float = postprocess.DEFAULT_MASK_THRESHOLD,
        input_size: Optional[int] = None,
        max_peaks: int = 5,
        return_heatmaps: bool = False,
        max_input_pixels: Optional[int] = None,
        presence_rule: str = "image",
        presence_threshold: float = 0.5,
        background_prompts: Sequence[str] | str = DEFAULT_BACKGROUND_PROMPTS,
        return_patch_logits: bool = False,
        max_batch: int = MAX_BATCH_IMAGES,
        slide: int = 0,
        slide_stride: int = 112,
        pamr_steps: int = 0,
        pamr_dilations: Sequence[int] = refine.PAMR_DILATIONS,
    ) -> list[list[Detection]]:
        """`locate` for several images (the cameras' newest frames), their detections in the
        same order: images whose model input shape is the same run as one forward, at most
        `max_batch` at once (the per-batch budget, on top of max_input_pixels per image), and
        the text embeddings are shared. Every image's budget is checked before any pixel is
        copied (InputBudgetError).

        `queries` is one list for every image, or one list per image (cameras with queries
        of their own): the forward does not depend on them, so images of one input shape
        batch together whatever they ask, and each image's outputs are those of its own
        queries, in its order (each query's outputs are its own: the same as alone).

        `slide` > 0: each image's maps come from sliding windows of that side over its input
        (`slide_logits`; presence is still judged on the whole input); `pamr_steps` > 0:
        masks, peaks, boxes and heatmaps come from the maps refined by PAMR at the image's
        size (gem_ros.gem.refine). Windows and PAMR keep each forward within
        max_input_pixels and each stack within refine.MAX_STACK_VALUES."""
        if queries and not isinstance(queries[0], str):
            if len(queries) != len(images):
                raise ValueError(f"{len(queries)} query lists for {len(images)} images")
            lists = [check_queries(q) for q in queries]
        else:
            lists = [check_queries(queries)] * len(images)
        union = list(dict.fromkeys(q for checked in lists for q in checked))
        if not union:
            return [[] for _ in images]
        if presence_rule not in ("image", "off"):
            raise ValueError(f"presence_rule must be 'image' or 'off', got {presence_rule!r}")
        judge = presence_rule == "image"
        backgrounds = self.check_backgrounds(background_prompts) if judge else []
        sizes = [check_image(image) for image in images]
        shapes = [self.input_shape(*size, input_size, max_input_pixels) for size in sizes]
        if slide:
            for shape in shapes:
                self._check_slide(shape, slide, slide_stride)
        if pamr_steps:
            refine.check_pamr(pamr_steps, pamr_dilations)
        # One text lookup for queries and background prompts: the cache's per-frame fast path.
        rivals = [b for b in backgrounds if b not in union]
        text = self._encode(union + rivals)  # [P + B', D]
        row = {q: i for i, q in enumerate(union + rivals)}
        background = torch.stack([text[row[b]] for b in backgrounds]) if judge else None
        same = all(checked is lists[0] for checked in lists)
        query_text = [
            text[: len(union)] if same else text[[row[q] for q in checked]] for checked in lists
        ]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
        out: list = [None] * len(images)
        for indices in groups.values():
            for at in range(0, len(indices), max(1, max_batch)):
                chunk = indices[at : at + max(1, max_batch)]
                pixels = torch.cat(
                    [self.preprocess(images[i], input_size, max_input_pixels) for i in chunk]
                )
                # One forward over the whole inputs: the patch maps, and the image embeddings
                # presence judges (with sliding windows, only where presence is judged).
                whole = not slide or judge
                tokens, embedding = self.features(pixels, image=judge) if whole else (None, None)
                grid = (pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size)
                for j, i in enumerate(chunk):
                    if not lists[i]:
                        out[i] = []
                        continue
                    if slide:
                        logits = self._window_logits(
                            pixels[j : j + 1], query_text[i], slide, slide_stride,
                            max_input_pixels,
                        )[0]  # fmt: skip
                    else:
                        logits = torch.einsum("hwd,pd->phw", tokens[j], query_text[i])
                    dense = (
                        self._dense_maps(pixels[j : j + 1], sizes[i], pamr_steps, pamr_dilations)
                        if slide or pamr_steps
                        else None
                    )
                    dets = postprocess.detections(
                        lists[i], logits, sizes[i], mask_threshold, max_peaks,
                        return_heatmaps, dense=dense, grid=grid,
                        return_grid=return_patch_logits,
                    )  # fmt: skip
                    if judge:
                        self._judge(dets, embedding[j], query_text[i], background,
                                    lists[i], backgrounds, presence_threshold)  # fmt: skip
                    out[i] = dets
        return out

    def _check_slide(self, shape: tuple[int, int], crop: int, stride: int) -> None:
        """ValueError for a window side that is not a multiple of the patch size, and
        InputBudgetError for more than MAX_WINDOWS windows over this input."""
        if crop % self.patch_size:
            raise ValueError(f"slide {crop} must be a multiple of the patch size {self.patch_size}")
        n = windows.window_count(*shape, crop, stride)
        if n > windows.MAX_WINDOWS:
            raise InputBudgetError(
                f"sliding windows of {crop} at stride {stride} over a {shape[1]}x{shape[0]} "
                f"input are {n} windows, more than {windows.MAX_WINDOWS}: raise slide_stride "
                "or lower input_size"
            )

    def _window_logits(self, pixels, text, crop, stride, max_input_pixels) -> torch.Tensor:
        """[B, 3, h, w] -> [B, P, h, w]: the windows' patch cosines with `text` [P, D],
        averaged; as many windows per forward as max_input_pixels allows."""
        budget = max_input_pixels or self.max_input_pixels
        side = min(crop, pixels.shape[-2]) * min(crop, pixels.shape[-1])

        def forward(crops):
            return torch.einsum("nhwd,pd->nphw", self.patch_tokens(crops), text)

        return windows.slide(forward, pixels, crop, stride, max(1, budget // side))

    def _dense_maps(self, pixels, size, pamr_steps, dilations):
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

    @torch.inference_mode()
    def slide_logits(
        self,
        pixels: torch.Tensor,
        queries: Sequence[str],
        crop: int = 224,
        stride: int = 112,
        out_size: Optional[tuple[int, int]] = None,
        pamr_steps: int = 0,
        pamr_dilations: Sequence[int] = refine.PAMR_DILATIONS,
    ) -> torch.Tensor:
        """SCLIP's forward_slide: [B, 3, h, w] normalised pixels -> [B, P, H, W] cosines.
        Windows of `crop` at `stride` (gem_ros.gem.windows; crop 0: one forward over the
        whole input, as GEM and `locate` without slide), bilinear to `out_size` (default the
        input's; the image's size before it was resized for the model), then PAMR on the
        input resized to it where pamr_steps > 0."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be [B, 3, H, W], got {list(pixels.shape)}")
        if crop:
            self._check_slide(tuple(pixels.shape[-2:]), crop, stride)
        if pamr_steps:
            refine.check_pamr(pamr_steps, pamr_dilations)
        pixels = pixels.to(self.device)
        text = self._encode(check_queries(queries))
        if crop:
            logits = self._window_logits(pixels, text, crop, stride, None)
        else:
            logits = torch.einsum("bhwd,pd->bphw", self.patch_tokens(pixels), text)
        size = tuple(out_size) if out_size is not None else tuple(pixels.shape[-2:])
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        if pamr_steps:
            image = F.interpolate(pixels.float(), size=size, mode="bilinear", align_corners=False)
            logits = refine.pamr(image, logits, pamr_steps, pamr_dilations)
        return logits

    def _judge(self, dets, embedding, query_text, background, queries, backgrounds, threshold):
        """Presence: each detection's confidence, and absent ones marked so."""
        conf = presence.confidences(
            embedding, query_text, background, self.logit_scale, queries, backgrounds
        ).tolist()
        for det, c in zip(dets, conf):
            if c >= threshold:
                det.confidence = c
            else:
                det.mark_absent(c)

    def check_backgrounds(self, prompts: Sequence[str] | str) -> list[str]:
        """Background prompts checked as queries are (a string is split on ',' and ';')."""
        prompts = parse_queries(prompts) if isinstance(prompts, str) else list(prompts)
        prompts = self.check_queries(prompts)
        if not prompts:
            raise QueryError("presence needs at least one background prompt")
        return prompts

    @torch.inference_mode()
    def segment(
        self,
        image: np.ndarray,
        queries: Sequence[str],
        background_threshold: float = postprocess.DEFAULT_BACKGROUND_THRESHOLD,
        input_size: Optional[int] = None,
        max_input_pixels: Optional[int] = None,
    ) -> np.ndarray:
        """[H, W] int64 labels: 0 background, i + 1 query i (the paper's VOC protocol)."""
        queries = check_queries(queries)
        if not queries:
            raise QueryError("segment needs at least one query")
        pixels = self.preprocess(image, input_size, max_input_pixels)
        logits = self._logits(pixels, queries)[0]
        return (
            postprocess.semantic_labels(
                logits, image.shape[:2], self.logit_scale, background_threshold
            )
            .cpu()
            .numpy()
        )


def check_image(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(height, width) of an RGB uint8 [H, W, 3] image (numpy, or a torch tensor), or
    ValueError saying what is wrong."""
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {tuple(image.shape)}")
    if image.dtype != (torch.uint8 if isinstance(image, torch.Tensor) else np.uint8):
        raise ValueError(f"image must be uint8, got {image.dtype}")
    height, width = (int(n) for n in image.shape[:2])
    if height == 0 or width == 0:
        raise ValueError(f"image is empty ({width}x{height})")
    if height * width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image of {width}x{height} is too large (at most "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels)"
        )
    return height, width
