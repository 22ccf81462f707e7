"""The tiny test CLIP of test/fixtures (the GEM reference's model) and a test picture."""

import socket
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG, WEIGHTS = str(FIXTURES / "gem-tiny-test.json"), str(FIXTURES / "gem-tiny-test.pt")


def two_colour_image(h=240, w=320):
    """Left half red, right half blue."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    img[:, w // 2 :] = (30, 30, 200)
    return img


def hub_reachable() -> bool:
    """Whether the model hub answers (tests of the offline messages skip when it does)."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False
