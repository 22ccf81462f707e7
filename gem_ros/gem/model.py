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

from ..settings import MAX_INPUT_PIXELS, ModelSettings
from . import locating, postprocess, refine
from .backends import TorchBackend
from .inputs import MAX_IMAGE_PIXELS, InputBudgetError, check_image, input_shape
from .locating import MAX_BATCH_IMAGES, LocateOptions
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

__all__ = ["MAX_BATCH_IMAGES", "MAX_IMAGE_PIXELS", "GemModel", "InputBudgetError", "check_image"]

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

        InputBudgetError where even that leaves the shorter side under
        inputs.MIN_INPUT_SIDE_PATCHES patches: the budget, not the image, bounds the tokens
        and memory of a frame."""
        side = input_size or self.input_size
        budget = max_input_pixels or self.max_input_pixels
        return input_shape(height, width, self.patch_size, side, budget)

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
    def locate(self, image: np.ndarray, queries: Sequence[str], **options) -> list[Detection]:
        """One Detection per query for an RGB uint8 image, in its pixel coordinates.

        `options` are `locating.LocateOptions`' fields: mask_threshold, input_size, max_peaks,
        return_heatmaps, max_input_pixels, presence_rule, presence_threshold,
        background_prompts, return_patch_logits, and the successors' sliding windows and PAMR
        (slide, slide_stride, pamr_steps, pamr_dilations).

        With presence_rule "image", each query gets a presence `confidence` (see
        `gem.presence`) and is `found` when it reaches `presence_threshold`; a query not found
        has an empty mask and no peaks. With "off" every query is found (confidence 1).
        `return_patch_logits` adds each query's [h/p, w/p] patch cosines (a few KB).
        """
        return self.locate_batch([image], queries, **options)[0]

    @torch.inference_mode()
    def locate_batch(
        self,
        images: Sequence[np.ndarray],
        queries: Sequence[str] | Sequence[Sequence[str]],
        tokens_out: Optional[list] = None,
        **options,
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
        max_input_pixels and each stack within refine.MAX_STACK_VALUES.

        `tokens_out`: a list of len(images) that gets each image's (patch tokens [h/p, w/p,
        D], image embedding [D]), float32 numpy (the map of dense features); then images run
        with no query too."""
        return locating.locate_batch(self, images, queries, LocateOptions(**options), tokens_out)

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
        return locating.slide_logits(
            self, pixels, queries, crop, stride, out_size, pamr_steps, pamr_dilations
        )

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
