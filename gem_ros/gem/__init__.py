"""The GEM core of gem_ros: no ROS in here.

    import gem_ros.gem as gem
    model = gem.load_model(model="ViT-B-16", pretrained="openai", method="gem", depth=7,
                           ss_attn_iter=1, ss_attn_temp=None, device="cpu")
    logits = model.patch_logits(pixels, queries)   # [B, P, H/p, W/p] cosines
    heat = model.heatmaps(pixels, queries)         # [B, P, H, W], min-max per query
    dets = model.locate(rgb_image, ["red mug", "person"])  # masks, peaks, boxes, scores

Modules: `ss_attention` (the self-self attention math), `vision` (GEM's parallel path over an
open_clip ViT), `text` (queries and cached text embeddings), `postprocess` (heatmaps, masks,
peaks, label maps), `model` (GemModel), `loading` (load_model: names, configs, weights).
"""
from .loading import ModelLoadError, check_source, load_model
from .model import MAX_IMAGE_PIXELS, MAX_INPUT_PIXELS, GemModel, InputBudgetError, check_image
from .postprocess import (DEFAULT_BACKGROUND_THRESHOLD, DEFAULT_MASK_THRESHOLD, Detection,
                          min_max, upsample)
from .text import DEFAULT_TEMPLATE, MAX_QUERIES, QueryError, check_queries, parse_queries
from .vision import METHODS

__all__ = [
    "DEFAULT_BACKGROUND_THRESHOLD", "DEFAULT_MASK_THRESHOLD", "DEFAULT_TEMPLATE",
    "MAX_IMAGE_PIXELS", "MAX_INPUT_PIXELS", "MAX_QUERIES", "METHODS", "Detection", "GemModel",
    "InputBudgetError", "ModelLoadError", "QueryError", "check_image", "check_queries",
    "check_source", "load_model", "min_max", "parse_queries", "upsample",
]
