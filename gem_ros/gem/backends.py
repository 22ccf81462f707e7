"""What runs a GemModel's image encoder: one interface, the model calls `backend(pixels)`.

- `TorchBackend`: the PyTorch module (gem_ros/gem/vision.py) under the model's autocast.
- `OnnxRuntimeBackend`: the same function exported to ONNX (gem_ros/gem/export.py) once per
  input size, kept in a cache folder keyed by everything that changes the graph, and run by
  ONNX Runtime; CUDA and TensorRT execution providers where the model's device is CUDA and
  they are installed, else the CPU. At most MAX_SESSIONS input sizes are held (a camera has
  one).
- `TensorRTBackend`: an engine built by TensorRT from that graph on first use (fp16 when the
  model's precision is), cached next to it per GPU and TensorRT version. CUDA only.

All take normalised pixels [B, 3, H, W] and return (patch tokens [B, H/p, W/p, D],
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

from .export import INPUT as INPUT_NAME
from .export import OUTPUTS as OUTPUT_NAMES
from .export import export_onnx

log = logging.getLogger(__name__)

MAX_SESSIONS = 4
MAX_TRT_BATCH = 8  # an engine's largest batch; larger batches run in slices
TRT_WORKSPACE = 1 << 30  # bytes TensorRT may use while building: fits a Jetson Orin 8 GB
ONNXRUNTIME_MISSING = (
    "backend 'onnxruntime' needs ONNX Runtime and onnx, which are not installed: pip install "
    "onnxruntime onnx (onnxruntime-gpu for CUDA), or keep backend 'torch'"
)
TENSORRT_MISSING = (
    "backend 'tensorrt' needs TensorRT's Python package and onnx, which are not both "
    "installed: on a Jetson, JetPack's (sudo apt install python3-libnvinfer; a venv made with "
    "--system-site-packages sees it), elsewhere pip install tensorrt onnx; or use backend "
    "'onnxruntime' or 'torch'"
)
TENSORRT_NEEDS_CUDA = (
    "backend 'tensorrt' runs on a CUDA GPU only and this model's device is {device}: set "
    "device cuda (or auto on a machine with a GPU), or use backend 'onnxruntime' or 'torch'"
)


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def tensorrt_available() -> bool:
    try:
        import onnx  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def backend_problem(name: str, device) -> Optional[str]:
    """Why backend `name` cannot run on `device` (a torch.device) here, or None."""
    if name == "onnxruntime" and not onnxruntime_available():
        return ONNXRUNTIME_MISSING
    if name == "tensorrt":
        if not tensorrt_available():
            return TENSORRT_MISSING
        if torch.device(device).type != "cuda":
            return TENSORRT_NEEDS_CUDA.format(device=device)
    return None


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


class _GraphBackend:
    """A backend that runs the exported graph of each input size: exports it on first use
    into the cache folder (whole files only), and keeps at most MAX_SESSIONS runners."""

    name = ""

    def __init__(self, model, cache_dir: Optional[Path] = None):
        self._model = model
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._runners: OrderedDict[tuple[int, int], object] = OrderedDict()

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

    def _graph(self, input_hw: tuple[int, int]) -> Path:
        path = self.graph_path(input_hw)
        if not path.is_file():
            log.info("exporting the %s graph for %dx%d to %s", self._model.method, *input_hw, path)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.onnx")
            export_onnx(self._model, partial, input_hw)
            partial.with_suffix(".json").replace(path.with_suffix(".json"))
            partial.replace(path)  # whole graphs only: a reader never sees half of one
        return path

    def _runner(self, input_hw: tuple[int, int]):
        runner = self._runners.get(input_hw)
        if runner is not None:
            self._runners.move_to_end(input_hw)
            return runner
        runner = self._make_runner(self._graph(input_hw), input_hw)
        self._runners[input_hw] = runner
        while len(self._runners) > MAX_SESSIONS:
            self._runners.popitem(last=False)
        return runner

    def _make_runner(self, graph: Path, input_hw: tuple[int, int]):
        raise NotImplementedError


class OnnxRuntimeBackend(_GraphBackend):
    name = "onnxruntime"

    def __init__(self, model, cache_dir: Optional[Path] = None):
        if not onnxruntime_available():
            raise RuntimeError(ONNXRUNTIME_MISSING)
        import onnxruntime

        super().__init__(model, cache_dir)
        self._ort = onnxruntime
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

    def _make_runner(self, graph: Path, input_hw: tuple[int, int]):
        return self._ort.InferenceSession(str(graph), providers=self.providers)

    def __call__(self, pixels: torch.Tensor, image: bool):
        session = self._runner(tuple(pixels.shape[-2:]))
        feed = {session.get_inputs()[0].name: pixels.float().cpu().numpy()}
        tokens, embedding = session.run(None, feed)
        device = self._model.device
        tokens = torch.from_numpy(tokens).to(device)
        return tokens, (torch.from_numpy(embedding).to(device) if image else None)


class TensorRTBackend(_GraphBackend):
    """TensorRT engines built from the exported graph on first use, the way NanoOWL and
    clip_trt run CLIP on a Jetson. An engine is specific to the GPU, the TensorRT version and
    the precision: all three name its file, next to its graph. fp16 engines keep the layers
    that overflow or lose the sharpened softmax in fp16 (norms, reductions, divisions, powers,
    softmax) in fp32. Batches up to MAX_TRT_BATCH run at once, larger ones in slices."""

    name = "tensorrt"

    def __init__(self, model, cache_dir: Optional[Path] = None):
        problem = backend_problem("tensorrt", model.device)
        if problem:
            raise RuntimeError(problem)
        import tensorrt

        super().__init__(model, cache_dir)
        self._trt = tensorrt
        self._logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        self.fp16 = model.precision == "fp16"

    def engine_path(self, input_hw: tuple[int, int]) -> Path:
        gpu = torch.cuda.get_device_name(self._model.device)
        slug = "".join(c if c.isalnum() else "_" for c in gpu).strip("_")
        precision = "fp16" if self.fp16 else "fp32"
        graph = self.graph_path(input_hw)
        return graph.with_name(f"{graph.stem}-{slug}-trt{self._trt.__version__}-{precision}.engine")

    def _make_runner(self, graph: Path, input_hw: tuple[int, int]):
        path = self.engine_path(input_hw)
        if not path.is_file():
            log.info("building a TensorRT engine for %dx%d (minutes, once): %s", *input_hw, path)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
            partial.write_bytes(self._build(graph, input_hw))
            partial.replace(path)
        runtime = self._trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not load {path}: delete it to rebuild")
        return engine, engine.create_execution_context()

    def _build(self, graph: Path, input_hw: tuple[int, int]) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch (TensorRT 10's only kind)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(graph)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {graph}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, TRT_WORKSPACE)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            _keep_fp32(trt, network)
        profile = builder.create_optimization_profile()
        shape = (3, *input_hw)
        profile.set_shape(INPUT_NAME, (1, *shape), (1, *shape), (MAX_TRT_BATCH, *shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT could not build an engine from {graph} (see its log)")
        return bytes(serialized)

    def __call__(self, pixels: torch.Tensor, image: bool):
        engine, context = self._runner(tuple(pixels.shape[-2:]))
        pixels = pixels.to(self._model.device, torch.float32).contiguous()
        parts = [self._run(engine, context, chunk) for chunk in pixels.split(MAX_TRT_BATCH)]
        tokens = torch.cat([p[0] for p in parts])
        return tokens, (torch.cat([p[1] for p in parts]) if image else None)

    def _run(self, engine, context, pixels: torch.Tensor):
        context.set_input_shape(INPUT_NAME, tuple(pixels.shape))
        context.set_tensor_address(INPUT_NAME, pixels.data_ptr())
        outputs = []
        for name in OUTPUT_NAMES:
            out = torch.empty(
                tuple(context.get_tensor_shape(name)), dtype=torch.float32, device=pixels.device
            )
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(pixels.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        return outputs


def _keep_fp32(trt, network) -> None:
    """fp16 engine, fp32 where fp16 breaks: L2 norms overflow (a sum of squares of 768
    channels), and the normalised vectors that self-self attention sharpens lose the small
    differences it acts on (the same reason as gem_ros/gem/ss_attention.py's bf16 path)."""
    kinds = {trt.LayerType.REDUCE, trt.LayerType.SOFTMAX, trt.LayerType.NORMALIZATION}
    ops = {trt.ElementWiseOperation.DIV, trt.ElementWiseOperation.POW}
    unary = {trt.UnaryOperation.SQRT}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        keep = layer.type in kinds
        if layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer
            keep = layer.op in ops
        elif layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer
            keep = layer.op in unary
        if keep:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def _weights_fingerprint(model) -> str:
    """A short hash of the visual weights: a graph is never reused for other weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.clip.visual.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().float().flatten()
        digest.update(flat[:: max(1, flat.numel() // 64)].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def make_backend(name: str, model, cache_dir: Optional[Path] = None):
    kinds = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}
    if name not in kinds:
        raise ValueError(f"backend must be one of {tuple(kinds)}, got {name!r}")
    return kinds[name](model) if name == "torch" else kinds[name](model, cache_dir)
