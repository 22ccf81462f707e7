"""Image files as the core takes them (used by the command line and the evaluation)."""

from pathlib import Path

import numpy as np
from PIL import Image


def read_rgb(path: Path) -> np.ndarray:
    """An image file as an [H, W, 3] uint8 RGB array (writable; any mode converted)."""
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))
