"""What runs a GemModel's image encoder: one interface, the model calls `backend(pixels)`.

- `TorchBackend`: the PyTorch module (gem_ros/gem/vision.py) under the model's autocast.
- `OnnxRuntimeBackend`: the same function exported to ONNX (gem_ros/gem/export.py) once per
  input size, kept in a cache folder keyed by everything that changes the graph, and run by
  ONNX Runtime; CUDA and TensorRT execution providers where the model's device is CUDA and
  they are installed, else the CPU. At most MAX_SESSIONS input sizes are held (a camera has
  one).

Both take normalised pixels [B, 3, H, W] and return (patch tokens [B, H/p, W/p, D],
image embedding [B, D] or None), L2-normalised, float32, on the model's device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MAX_SESSIONS = 4
ONNXRUNTIME_MISSING = (
    "backend 'onnxruntime' needs ONNX Runtime and onnx, which are not installed: pip install "
    "onnxruntime onnx (onnxruntime-gpu for CUDA), or keep backend 'torch'"
)


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_dir() -> Path:
    """GEM_ROS_GRAPH_CACHE, else $XDG_CACHE_HOME/gem_ros/onnx (~/.cache/gem_ros/onnx)."""
    if os.environ.get("GEM_ROS_GRAPH_CACHE"):
        return Path(os.environ["GEM_ROS_GRAPH_CACHE"])
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "gem_ros" / "onnx"


class TorchBackend:
    name = "torch"

    def __init__(self, model):
        self._model = model

    def __call__(self, pixels: torch.Tensor, image: bool):
        with self._model.autocast():
            tokens, embedding = self._model.encoder(pixels, image)
        if embedding is not None:
            embedding = F.normalize(embedding.float(), dim=-1)
        return F.normalize(tokens.float(), dim=-1), embedding


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model, cache_dir: Optional[Path] = None):
        if not onnxruntime_available():
            raise RuntimeError(ONNXRUNTIME_MISSING)
        import onnxruntime

        self._ort = onnxruntime
        self._model = model
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._sessions: OrderedDict[tuple[int, int], object] = OrderedDict()
        self.providers = self._providers(model.device)

    def _providers(self, device: torch.device) -> list:
        available = self._ort.get_available_providers()
        wanted = ["CPUExecutionProvider"]
        if device.type == "cuda":
            index = {"device_id": device.index or 0}
            cuda = [("CUDAExecutionProvider", index)]
            trt = [("TensorrtExecutionProvider", {**index, "trt_fp16_enable": False})]
            wanted = [
                p for p in trt + cuda if p[0] in available
            ] + wanted  # TensorRT first, then CUDA, then the CPU for what they lack
        return wanted

    def graph_path(self, input_hw: tuple[int, int]) -> Path:
        """Where the graph for this input size lives: one file per graph-changing setting."""
        key = {
            "model": self._model.name,
            "settings": asdict(self._model.settings),
            "input": list(input_hw),
            "weights": _weights_fingerprint(self._model),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"{self._model.name}-{self._model.method}-{digest}.onnx"

    def _session(self, input_hw: tuple[int, int]):
        session = self._sessions.get(input_hw)
        if session is not None:
            self._sessions.move_to_end(input_hw)
            return session
        path = self.graph_path(input_hw)
        if not path.is_file():
            from .export import export_onnx

            log.info("exporting the %s graph for %dx%d to %s", self._model.method, *input_hw, path)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.onnx")
            export_onnx(self._model, partial, input_hw)
            partial.with_suffix(".json").replace(path.with_suffix(".json"))
            partial.replace(path)  # whole graphs only: a reader never sees half of one
        session = self._ort.InferenceSession(str(path), providers=self.providers)
        self._sessions[input_hw] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def __call__(self, pixels: torch.Tensor, image: bool):
        session = self._session(tuple(pixels.shape[-2:]))
        feed = {session.get_inputs()[0].name: pixels.float().cpu().numpy()}
        tokens, embedding = session.run(None, feed)
        device = self._model.device
        tokens = torch.from_numpy(tokens).to(device)
        return tokens, (torch.from_numpy(embedding).to(device) if image else None)


def _weights_fingerprint(model) -> str:
    """A short hash of the visual weights: a graph is never reused for other weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.clip.visual.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().float().flatten()
        digest.update(flat[:: max(1, flat.numel() // 64)].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def make_backend(name: str, model, cache_dir: Optional[Path] = None):
    if name == "torch":
        return TorchBackend(model)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model, cache_dir)
    raise ValueError(f"backend must be torch or onnxruntime, got {name!r}")
