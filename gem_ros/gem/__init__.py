"""The GEM core of gem_ros: no ROS in here.

    import gem_ros.gem as gem
    model = gem.load_model("ViT-B-16", "openai", method="gem", gem_depth=7, device="cpu")
    logits = model.patch_logits(pixels, queries)   # [B, P, H/p, W/p] cosines
    heat = model.heatmaps(pixels, queries)         # [B, P, H, W], min-max per query
    dets = model.locate(rgb_image, ["red mug", "person"])  # masks, peaks, boxes, scores

Modules: `settings` (ModelSettings, FrameSettings: every setting's name, default and range),
`ss_attention` (the self-self attention math), `vision` (GEM's parallel path over an
open_clip ViT), `text` (queries and cached text embeddings), `postprocess` (heatmaps, masks,
peaks, label maps), `windows` and `refine` (the successors' sliding windows and PAMR),
`model` (GemModel), `inputs` (image checks, the model input), `locating` (pixels to
detections), `loading` (load_model: names, configs, weights).
"""

from ..settings import (
    DEFAULT_TEMPLATE,
    MAX_INPUT_PIXELS,
    METHODS,
    RANDOM_WEIGHTS,
    FrameSettings,
    ModelSettings,
)
from .inputs import MAX_IMAGE_PIXELS, InputBudgetError, check_image
from .loading import ModelLoadError, check_source, load_model, local_weights
from .locating import MAX_BATCH_IMAGES
from .model import GemModel
from .postprocess import (
    DEFAULT_BACKGROUND_THRESHOLD,
    DEFAULT_MASK_THRESHOLD,
    Detection,
    min_max,
    upsample,
)
from .refine import pamr
from .text import MAX_QUERIES, QueryError, check_queries, parse_queries

__all__ = [
    "DEFAULT_BACKGROUND_THRESHOLD",
    "DEFAULT_MASK_THRESHOLD",
    "DEFAULT_TEMPLATE",
    "MAX_BATCH_IMAGES",
    "MAX_IMAGE_PIXELS",
    "MAX_INPUT_PIXELS",
    "MAX_QUERIES",
    "METHODS",
    "RANDOM_WEIGHTS",
    "Detection",
    "FrameSettings",
    "GemModel",
    "InputBudgetError",
    "ModelLoadError",
    "ModelSettings",
    "QueryError",
    "check_image",
    "check_queries",
    "check_source",
    "load_model",
    "local_weights",
    "min_max",
    "pamr",
    "parse_queries",
    "upsample",
]
