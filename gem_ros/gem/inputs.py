"""What an image may be, and the model input it is resized to: the checks that run before any
pixel is copied, so that the budget, not the image, bounds a frame's tokens and memory."""

from __future__ import annotations

import numpy as np
import torch

MAX_IMAGE_PIXELS = 50_000_000  # past this the full-size masks alone take gigabytes
MIN_INPUT_SIDE_PATCHES = 4  # a narrower input says nothing useful: refused, not fed


class InputBudgetError(ValueError):
    """An image whose aspect ratio cannot be fed within the model-input budget."""


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


def input_shape(height: int, width: int, patch: int, side: int, budget: int) -> tuple[int, int]:
    """Model input size: shorter side -> `side`, aspect kept, multiples of the `patch`; scaled
    down (aspect kept) where that would exceed `budget` pixels.

    Raises InputBudgetError where even that leaves the shorter side under
    MIN_INPUT_SIDE_PATCHES patches (aspect ratios of about 100:1 at the default budget).
    """
    p = patch
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
