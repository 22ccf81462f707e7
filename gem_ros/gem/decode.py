"""JPEG frames decoded on the GPU, where torch can (torchvision's nvJPEG `decode_jpeg`).

A compressed camera stream costs the CPU its decode (a 720p JPEG: several ms on a desktop
core, more on a Jetson's Arm cores) and then a host-to-device copy of the decoded pixels.
Decoded on the GPU, only the compressed bytes cross the bus, and the pixels are born where
the model reads them: `GemModel.preprocess` takes the [H, W, 3] uint8 CUDA tensor as it
takes a numpy image. What is drawn on the CPU (overlays, heatmap images) copies it back only
while someone subscribes to them (`as_host`).

    decode = jpeg_decoder(torch.device("cuda"))   # None where the GPU cannot decode
    rgb = decode(data) if decode is not None else cv2_decode(data)

Callers check the size the JPEG header declares before decoding (the budget comes first).
torchvision deprecated its image decoders in 0.29 in favour of TorchCodec; JetPack's and
PyPI's builds still carry them, and where one does not, the probe fails and frames decode on
the CPU, which the log says once.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import numpy as np
import torch

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def jpeg_decoder(device: torch.device) -> Optional[Callable[[bytes], torch.Tensor]]:
    """bytes of a JPEG -> [H, W, 3] uint8 RGB tensor on `device`, for a CUDA device whose
    torchvision decodes there (checked once per device on a small JPEG, the reason logged
    where it cannot); None otherwise (the CPU path decodes). Decoding errors are ValueError."""
    if device.type != "cuda":
        return None
    try:
        from torchvision.io import encode_jpeg

        decode = torchvision_decoder(device)
        probe = decode(encode_jpeg(torch.full((3, 16, 16), 128, dtype=torch.uint8)).numpy())
        if tuple(probe.shape) != (16, 16, 3):
            raise RuntimeError(f"the probe decoded to {tuple(probe.shape)}")
    except Exception as exc:  # noqa: BLE001 - no torchvision, no nvJPEG, an old GPU, ...
        _log.info("JPEG frames are decoded on the CPU: %s cannot decode them (%s)", device, exc)
        return None
    return decode


def torchvision_decoder(device: torch.device) -> Callable[[bytes], torch.Tensor]:
    """torchvision's decode_jpeg on `device` (nvJPEG on CUDA), as jpeg_decoder's callable."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data) -> torch.Tensor:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            chw = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as exc:  # nvJPEG's (and libjpeg's) word for a corrupt file
            raise ValueError(f"{device} cannot decode this JPEG: {exc}") from exc
        return chw.permute(1, 2, 0)  # [H, W, 3], a view: preprocess permutes back

    return decode


def as_host(rgb) -> np.ndarray:
    """An [H, W, 3] uint8 image as a numpy array: a GPU-decoded frame copied back (for
    drawing), a numpy one as it is."""
    if isinstance(rgb, torch.Tensor):
        return np.ascontiguousarray(rgb.cpu().numpy())
    return rgb
