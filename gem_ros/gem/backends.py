"""What runs a GemModel's image encoder: one interface, the model calls `backend(pixels)`.

- `TorchBackend`: the PyTorch module (gem_ros/gem/vision.py) under the model's autocast.
- `OnnxRuntimeBackend`: the same function exported to ONNX (gem_ros/gem/export.py) once per
  input size, run by ONNX Runtime with its inputs and outputs bound to torch tensors (no host
  copies on a GPU); CUDA and TensorRT execution providers where the model's device is CUDA
  and they are installed, else the CPU, and the log says which run.
- `TensorRTBackend`: an engine built by TensorRT from that graph (a strongly typed network
  from the mixed fp16 graph when the model's precision is fp16), run on a CUDA stream of its
  own. CUDA only.

Graphs and engines are built on the thread that loads the model, for the input sizes given to
`prepare` (the loader passes the sizes the running model served); on a live path the export
itself runs in a child process at low priority (gem_ros/gem/export_apart.py), which cannot
hold the serving model's interpreter. A frame of a size not built
yet is served by the torch path while that size builds on a thread of its own: an export and
an engine build take minutes on a Jetson, and the node keeps answering meanwhile.

The cache folder keys graphs on what changes a graph (the method's own settings, the input
size, the weights, the code and library versions, the opset, the graph's precision) and
engines on the graph plus the builder's configuration and the GPU (compute capability and SM
count: every Orin module's name is "Orin"). It is bounded (GEM_ROS_GRAPH_CACHE_MAX_MB, default
4096): the least recently used files go first, with a log line.

All take normalised pixels [B, 3, H, W] and return (patch tokens [B, H/p, W/p, D],
image embedding [B, D] or None), L2-normalised, float32, on the model's device.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .export import INPUT as INPUT_NAME
from .export import OPSET, export_onnx, versions, weights_fingerprint
from .export import OUTPUTS as OUTPUT_NAMES
from .export_apart import export_apart

log = logging.getLogger(__name__)

MAX_SESSIONS = 4  # input sizes held at once (a camera has one)
# An engine's largest batch: what the node runs (one frame per forward). TensorRT reserves
# the activations of the largest profile shape per execution context, so batch 8 cost
# gigabytes on an 8 GB Orin for nothing. Larger batches run in slices of this.
MAX_BATCH = 1
TRT_WORKSPACE = 1 << 30  # bytes TensorRT may use while building: fits a Jetson Orin 8 GB
DEFAULT_CACHE_MB = 4096  # each input size leaves a graph (~350 MB for ViT-B-16) and an engine
# The settings that change a method's graph; every other ModelSettings field changes text,
# device or runtime only (NOT_GRAPH_SETTINGS), or is keyed another way (the model's name,
# the weights by their fingerprint).
GRAPH_SETTINGS = {
    "gem": ("gem_depth", "ss_attn_iter", "ss_attn_temp"),
    "clip": (),
    "naclip": ("naclip_std",),
    "sclip": (),
    "clearclip": (),
    "scclip": (
        "scclip_blocks",
        "scclip_res_cls",
        "scclip_threshold",
        "scclip_lof_neighbors",
        "scclip_lof_contamination",
    ),
}
NOT_GRAPH_SETTINGS = (
    "model",
    "pretrained",
    "method",
    "device",
    "precision",
    "prompt_template",
    "backend",
)
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
    """A backend that runs the exported graph of each input size. Sizes are built by
    `prepare` (the loader's thread) or, for a size first seen in a frame, on a thread of their
    own while the torch path serves that size; at most MAX_SESSIONS runners are kept."""

    name = ""
    graph_precision = "fp32"
    # True on a live path (the engine's worker): a size first seen in a frame builds on a
    # thread of its own, the torch path serving it meanwhile, and every export runs in a
    # child process (export_apart). False (offline callers, the CLI): it builds on the
    # caller's thread, which waits.
    build_in_background = False
    stop: Optional[threading.Event] = None  # set by the live path's owner: exports give up

    def __init__(self, model, cache_dir: Optional[Path] = None, max_batch: int = MAX_BATCH):
        self._model = model
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.max_batch = max(1, int(max_batch))
        self._torch = TorchBackend(model)  # serves a size until its graph is built
        self._runners: OrderedDict[tuple[int, int], object] = OrderedDict()
        self._lock = threading.Lock()  # _runners, _building, _failed
        self._building: dict[tuple[int, int], threading.Thread] = {}
        self._failed: dict[tuple[int, int], str] = {}

    # --- the cache ------------------------------------------------------------------------
    def graph_key(self, input_hw: tuple[int, int]) -> dict:
        """What the graph for this input size is made from, and nothing else: a new text
        template or `cuda` for `cuda:0` reuses it, new code or weights do not."""
        settings = self._model.settings
        return {
            "model": self._model.name,
            "method": self._model.method,
            "settings": {k: getattr(settings, k) for k in GRAPH_SETTINGS[self._model.method]},
            "input": list(input_hw),
            "weights": weights_fingerprint(self._model),
            "precision": self.graph_precision,
            "opset": OPSET,
            "versions": versions(),
        }

    def graph_path(self, input_hw: tuple[int, int]) -> Path:
        digest = _digest(self.graph_key(input_hw))
        name = f"{self._model.name}-{self._model.method}-{input_hw[0]}x{input_hw[1]}"
        return self.cache_dir / f"{name}-{self.graph_precision}-{digest}.onnx"

    def _graph(self, input_hw: tuple[int, int]) -> Path:
        path = self.graph_path(input_hw)
        if path.is_file():
            _touch(path, path.with_suffix(".json"))
            return path
        log.info(
            "exporting the %s graph for %dx%d (%s) to %s",
            self._model.method,
            *input_hw,
            self.graph_precision,
            path,
        )
        started = time.monotonic()
        if self.build_in_background:  # a live path: the model serving must not wait on it
            export_apart(self._model, path, input_hw, self.graph_precision, self.stop)
        else:
            export_onnx(self._model, path, input_hw, self.graph_precision)  # whole, or nothing
        log.info("exported %s in %.1f s", path.name, time.monotonic() - started)
        bound_cache(self.cache_dir, keep={path, path.with_suffix(".json")})
        return path

    # --- sizes ----------------------------------------------------------------------------
    def prepare(self, input_hw: tuple[int, int]) -> None:
        """Export (and build) the graph of this input size now, on this thread: the loader
        calls it, so the model it hands over serves that size at once. Raises what the export
        or build raised."""
        input_hw = tuple(int(v) for v in input_hw)
        with self._lock:
            if input_hw in self._runners:
                return
        runner = self._make_runner(self._graph(input_hw), input_hw)
        self._keep(input_hw, runner)

    def _keep(self, input_hw, runner) -> None:
        with self._lock:
            self._runners[input_hw] = runner
            self._runners.move_to_end(input_hw)
            while len(self._runners) > MAX_SESSIONS:
                self._runners.popitem(last=False)

    def _ready(self, input_hw: tuple[int, int]):
        """The runner of this size, or None while it builds in the background (started here
        on the first frame of the size). A size whose build failed stays on the torch path,
        said once in the log."""
        with self._lock:
            runner = self._runners.get(input_hw)
            if runner is not None:
                self._runners.move_to_end(input_hw)
                return runner
            if input_hw in self._building or input_hw in self._failed:
                return None
            if not self.build_in_background:
                thread = None
            else:
                thread = threading.Thread(
                    target=self._build_in_background,
                    args=(input_hw,),
                    name=f"gem-{self.name}-build-{input_hw[0]}x{input_hw[1]}",
                    daemon=True,
                )
                self._building[input_hw] = thread
        if thread is None:
            self.prepare(input_hw)
            return self._ready(input_hw)
        log.info(
            "%dx%d frames: building the %s graph in the background; the torch path serves "
            "them until it is ready",
            *input_hw,
            self.name,
        )
        thread.start()
        return None

    def _build_in_background(self, input_hw: tuple[int, int]) -> None:
        try:
            self.prepare(input_hw)
            log.info("%dx%d frames: the %s graph is ready and serves them", *input_hw, self.name)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the torch path serving
            with self._lock:
                self._failed[input_hw] = f"{type(exc).__name__}: {exc}"
            log.error(
                "%dx%d frames: building the %s graph failed, the torch path serves them: %s",
                *input_hw,
                self.name,
                self._failed[input_hw],
            )
        finally:
            with self._lock:
                self._building.pop(input_hw, None)

    def wait_for_builds(self, timeout: Optional[float] = None) -> bool:
        """Until no size is building in the background (tests, benchmarks); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._building.values())
            if not threads:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            threads[0].join(left)

    def __call__(self, pixels: torch.Tensor, image: bool):
        runner = self._ready(tuple(int(v) for v in pixels.shape[-2:]))
        if runner is None:
            return self._torch(pixels, image)
        with self._on_device():
            outputs = [self._run(runner, chunk) for chunk in pixels.split(self.max_batch)]
        tokens = torch.cat([o[0] for o in outputs]) if len(outputs) > 1 else outputs[0][0]
        if not image:
            return tokens, None
        return tokens, (torch.cat([o[1] for o in outputs]) if len(outputs) > 1 else outputs[0][1])

    def _on_device(self):
        """Where the runtime's calls run: the model's GPU (cuda:N with N > 0 too)."""
        device = self._model.device
        if device.type == "cuda":
            return torch.cuda.device(device)
        return contextlib.nullcontext()

    def _make_runner(self, graph: Path, input_hw: tuple[int, int]):
        raise NotImplementedError

    def _run(self, runner, pixels: torch.Tensor):
        raise NotImplementedError


class OnnxRuntimeBackend(_GraphBackend):
    name = "onnxruntime"

    def __init__(self, model, cache_dir: Optional[Path] = None, max_batch: int = MAX_BATCH):
        if not onnxruntime_available():
            raise RuntimeError(ONNXRUNTIME_MISSING)
        import onnxruntime

        super().__init__(model, cache_dir, max_batch)
        self._ort = onnxruntime
        self._logged_providers = False

    def providers(self, input_hw: tuple[int, int]) -> list:
        """TensorRT first, then CUDA, then the CPU for what they lack (CUDA devices only);
        TensorRT's engines cached in the cache folder, for this size's batch range."""
        available = self._ort.get_available_providers()
        device = self._model.device
        wanted = ["CPUExecutionProvider"]
        if device.type != "cuda":
            return wanted
        index = {"device_id": device.index or 0}
        shape = lambda batch: f"{INPUT_NAME}:{batch}x3x{input_hw[0]}x{input_hw[1]}"  # noqa: E731
        trt = {
            **index,
            "trt_fp16_enable": False,  # the fp32 graph; fp16 is backend tensorrt's
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.cache_dir / "ort-tensorrt"),
            "trt_timing_cache_enable": True,
            "trt_profile_min_shapes": shape(1),
            "trt_profile_opt_shapes": shape(1),
            "trt_profile_max_shapes": shape(self.max_batch),
        }
        chosen = [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", index)]
        return [p for p in chosen if p[0] in available] + wanted

    def _make_runner(self, graph: Path, input_hw: tuple[int, int]):
        wanted = self.providers(input_hw)
        session = self._ort.InferenceSession(str(graph), providers=wanted)
        used = session.get_providers()
        if not self._logged_providers:
            self._logged_providers = True
            log.info("onnxruntime runs on %s", ", ".join(used))
        if self._model.device.type == "cuda" and used == ["CPUExecutionProvider"]:
            log.warning(
                "onnxruntime has no CUDA support here (providers available: %s): the graph runs "
                "on the CPU; pip install onnxruntime-gpu, or use backend 'torch' or 'tensorrt'",
                ", ".join(self._ort.get_available_providers()),
            )
        on_gpu = any(p in used for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        return session, (self._model.device if on_gpu else torch.device("cpu"))

    def _run(self, runner, pixels: torch.Tensor):
        """Inputs and outputs bound to torch tensors on the device the session runs on: no
        host copies on a GPU (a CUDA model on a CPU-only onnxruntime copies, and was warned
        of). ONNX Runtime orders its work on its own stream: torch's is synchronised first,
        so the pixels are written when it reads them."""
        session, device = runner
        pixels = pixels.to(device, torch.float32).contiguous()
        binding = session.io_binding()
        kind, index = device.type, device.index or 0
        binding.bind_input(
            INPUT_NAME, kind, index, np.float32, tuple(pixels.shape), pixels.data_ptr()
        )
        batch, p = pixels.shape[0], self._model.patch_size
        width = int(self._model.clip.visual.output_dim)  # the text embedding's
        shapes = {
            OUTPUT_NAMES[0]: (batch, pixels.shape[2] // p, pixels.shape[3] // p, width),
            OUTPUT_NAMES[1]: (batch, width),
        }
        outputs = {}
        for name, shape in shapes.items():
            tensor = torch.empty(shape, dtype=torch.float32, device=device)
            binding.bind_output(name, kind, index, np.float32, shape, tensor.data_ptr())
            outputs[name] = tensor
        if kind == "cuda":
            torch.cuda.current_stream(device).synchronize()
        session.run_with_iobinding(binding)
        model_device = self._model.device
        return tuple(outputs[name].to(model_device) for name in OUTPUT_NAMES)


class TensorRTBackend(_GraphBackend):
    """TensorRT engines built from the exported graph, the way NanoOWL and clip_trt run CLIP
    on a Jetson. An fp16 engine is a strongly typed network from the mixed fp16 graph
    (gem_ros/gem/graph_precision.py): every tensor's precision is the graph's. Where this
    TensorRT has no strongly typed networks (before 9.1), the FP16 flag with fp32 pinned on
    the layers that overflow. fp32 engines clear TF32. Each engine runs on a CUDA stream of its
    own, ordered after torch's current stream on the way in and before it on the way out."""

    name = "tensorrt"

    def __init__(self, model, cache_dir: Optional[Path] = None, max_batch: int = MAX_BATCH):
        problem = backend_problem("tensorrt", model.device)
        if problem:
            raise RuntimeError(problem)
        import tensorrt

        self.fp16 = model.precision == "fp16"
        self.graph_precision = "fp16" if self.fp16 else "fp32"
        super().__init__(model, cache_dir, max_batch)
        self._trt = tensorrt
        self._logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        self._stream = None  # made on first use, on the model's device

    def builder_config(self) -> dict:
        """Everything of the build that changes the engine, besides the graph and the GPU."""
        return {
            "precision": self.graph_precision,
            "strongly_typed": self.strongly_typed,
            "pinned": [] if self.strongly_typed or not self.fp16 else sorted(_PINNED),
            "max_batch": self.max_batch,
            "workspace": TRT_WORKSPACE,
            "tf32": False,
            "tensorrt": self._trt.__version__,
        }

    @property
    def strongly_typed(self) -> bool:
        return hasattr(self._trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")

    def engine_path(self, input_hw: tuple[int, int]) -> Path:
        props = torch.cuda.get_device_properties(self._model.device)
        gpu = {"capability": [props.major, props.minor], "sms": props.multi_processor_count}
        graph = self.graph_path(input_hw)
        digest = _digest({"graph": graph.name, "build": self.builder_config(), "gpu": gpu})
        sm = f"sm{props.major}{props.minor}x{props.multi_processor_count}"
        return graph.with_name(f"{graph.stem}-trt{self._trt.__version__}-{sm}-{digest}.engine")

    def _make_runner(self, graph: Path, input_hw: tuple[int, int]):
        with self._on_device():
            path = self.engine_path(input_hw)
            if path.is_file():
                _touch(path)
            else:
                log.info(
                    "building a TensorRT engine for %dx%d (minutes, once): %s", *input_hw, path
                )
                started = time.monotonic()
                partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
                partial.write_bytes(self._build(graph, input_hw))
                partial.replace(path)
                log.info("built %s in %.0f s", path.name, time.monotonic() - started)
                bound_cache(self.cache_dir, keep={path, graph, graph.with_suffix(".json")})
            runtime = self._trt.Runtime(self._logger)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not load {path}: delete it to rebuild")
            return engine, engine.create_execution_context()

    def _build(self, graph: Path, input_hw: tuple[int, int]) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        flags = 0  # explicit batch (TensorRT 10's only kind)
        if self.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(graph)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {graph}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, TRT_WORKSPACE)
        # "fp32" means fp32: TF32 is on by default, and Ampere and later (Orin too) use it.
        config.clear_flag(trt.BuilderFlag.TF32)
        # Each layer's precision readable by the engine inspector (names and formats only).
        if hasattr(trt, "ProfilingVerbosity"):
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if self.fp16 and not self.strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            _keep_fp32(trt, network)
        profile = builder.create_optimization_profile()
        shape = (3, *input_hw)
        profile.set_shape(INPUT_NAME, (1, *shape), (1, *shape), (self.max_batch, *shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT could not build an engine from {graph} (see its log)")
        return bytes(serialized)

    def _run(self, runner, pixels: torch.Tensor):
        engine, context = runner
        device = self._model.device
        pixels = pixels.to(device, torch.float32).contiguous()
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        caller = torch.cuda.current_stream(device)
        context.set_input_shape(INPUT_NAME, tuple(pixels.shape))
        context.set_tensor_address(INPUT_NAME, pixels.data_ptr())
        outputs = []
        for name in OUTPUT_NAMES:
            out = torch.empty(
                tuple(context.get_tensor_shape(name)), dtype=torch.float32, device=device
            )
            context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        _enqueue(context, self._stream, caller, (pixels, *outputs))
        return outputs


def _enqueue(context, stream, caller, tensors) -> None:
    """Run the engine on `stream`, our own: on the legacy default stream TensorRT
    synchronises the host on every call. Ordered after what torch queued on `caller` (the
    pixels), and torch's later work after the engine (the outputs); the tensors are kept
    alive across both streams."""
    stream.wait_stream(caller)
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT failed to run the engine")
    caller.wait_stream(stream)
    for t in tensors:
        t.record_stream(stream)


# Weakly typed fp16 builds only (TensorRT before 9.1): the layers whose fp16 overflows.
_PINNED = ("reduce", "normalization", "sqrt", "pow", "square")


def _keep_fp32(trt, network) -> None:
    """fp16 engine, fp32 where fp16 overflows: the norms' reductions, squares (x·x, which the
    ONNX importer makes of ReduceL2), square roots and powers, and LayerNorm. Divisions and
    softmax stay free: pinning them (GELU's x/√2, attention's softmax) forced reformats that
    blocked TensorRT's fused attention."""
    kinds = {trt.LayerType.REDUCE, trt.LayerType.NORMALIZATION}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        keep = layer.type in kinds
        if layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer
            square = (
                layer.op == trt.ElementWiseOperation.PROD
                and layer.get_input(0) is not None
                and layer.get_input(0).name == layer.get_input(1).name
            )
            keep = layer.op == trt.ElementWiseOperation.POW or square
        elif layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer
            keep = layer.op == trt.UnaryOperation.SQRT
        if keep:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _touch(*paths: Path) -> None:
    """Mark as just used: the cache evicts the least recently used first."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.utime(path)


# The names graph_path and engine_path give: the cache deletes nothing else in its folder.
CACHED_NAME = re.compile(r"-fp(32|16)-[0-9a-f]{16}(\.onnx|\.json|-trt.+-[0-9a-f]{16}\.engine)$")


def cache_limit_bytes() -> int:
    return int(float(os.environ.get("GEM_ROS_GRAPH_CACHE_MAX_MB", DEFAULT_CACHE_MB)) * (1 << 20))


def bound_cache(cache_dir: Path, keep: set = frozenset(), limit: Optional[int] = None) -> list:
    """Delete the least recently used graphs and engines of `cache_dir` until it holds at most
    `limit` bytes (cache_limit_bytes()), never those in `keep` (just made, or in use); the
    files deleted, each said in the log."""
    limit = cache_limit_bytes() if limit is None else limit
    files = []
    for pattern in ("*.onnx", "*.json", "*.engine"):
        for path in Path(cache_dir).glob(pattern):
            if not CACHED_NAME.search(path.name) or not path.is_file() or path.is_symlink():
                continue  # a user's file in a folder they named, or an export in progress
            with contextlib.suppress(OSError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= limit:
            break
        if path in keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
            deleted.append(path)
            log.info(
                "graph cache over %d MB: deleted %s (%d MB, the least recently used)",
                limit >> 20,
                path.name,
                size >> 20,
            )
    return deleted


def make_backend(name: str, model, cache_dir: Optional[Path] = None):
    kinds = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}
    if name not in kinds:
        raise ValueError(f"backend must be one of {tuple(kinds)}, got {name!r}")
    return kinds[name](model) if name == "torch" else kinds[name](model, cache_dir)
