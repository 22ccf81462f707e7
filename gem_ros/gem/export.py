"""The visual side of a GemModel as an ONNX graph, for ONNX Runtime and TensorRT.

One graph per method, settings and input size: normalised pixels [B, 3, H, W] in (fixed H, W;
batch dynamic), out `tokens` [B, H/p, W/p, D] (the L2-normalised patch tokens in text space,
what `patch_logits` compares with the text embeddings) and `embedding` [B, D] (CLIP's
L2-normalised image embedding, for presence). The positional embedding is resampled once, for
that input size, and stored in the graph as a constant; GEM's adaptive temperature stays a
per-image computation of the graph. Opset 17 (TensorRT 10.3 of JetPack 6 parses up to 20).

precision "fp16" writes the mixed graph TensorRT's fp16 engines are built from: products in
fp16, norms and what follows them in fp32, with Cast nodes saying so
(gem_ros/gem/graph_precision.py says why and which).

A sidecar JSON next to the graph holds what is needed to use and reproduce it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import threading
import warnings
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from ..owned_files import PathRefused, ours, replace_atomically

OPSET = 17
INPUT, OUTPUTS = "pixels", ("tokens", "embedding")
GRAPH_PRECISIONS = ("fp32", "fp16")
# The sidecar's first bytes (json.dumps(..., indent=1)): a graph with one beside it is ours.
SIDECAR_SIGNATURES = (b'{\n "format": "gem_ros visual graph"',)
VERSIONED = (("gem_ros", "gem_ros"), ("torch", "torch"), ("open_clip", "open_clip_torch"))


class ExportError(RuntimeError):
    """An export that failed, naming what (the method, the step) and why."""


class _VisualGraph(torch.nn.Module):
    """What the exported graph computes: GemModel.features(pixels, image=True) in fp32."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor):
        tokens, embedding = self.encoder(pixels, True)
        return F.normalize(tokens.float(), dim=-1), F.normalize(embedding.float(), dim=-1)


@contextlib.contextmanager
def _fixed_grid(encoder, grid):
    encoder.fixed_grid = grid
    try:
        yield
    finally:
        encoder.fixed_grid = None


def sidecar(model, input_hw: tuple[int, int], precision: str = "fp32") -> dict:
    """Everything needed to use and reproduce the graph of `model` at `input_hw`."""
    p = model.patch_size
    return {
        "format": "gem_ros visual graph",
        "model": model.name,
        "settings": asdict(model.settings),
        "method": model.method,
        "input": {"name": INPUT, "shape": ["batch", 3, *input_hw], "dtype": "float32"},
        "outputs": list(OUTPUTS),
        "patch_grid": [input_hw[0] // p, input_hw[1] // p],
        "patch_size": p,
        "mean": [float(v) / 255 for v in model._mean.flatten().tolist()],
        "std": [float(v) / 255 for v in model._std.flatten().tolist()],
        "opset": OPSET,
        "precision": precision,
        "versions": versions(),
    }


def versions() -> dict:
    """The versions of what writes the graph: a graph from other code is another graph."""
    return {name: _version(dist) for name, dist in (*VERSIONED, ("onnx", "onnx"))}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def check_graph_target(path: Path) -> None:
    """PathRefused unless `path` and its sidecar (`.json`) are free, or hold a graph and
    sidecar gem_ros exported (the sidecar says so): a user's file is never replaced."""
    path = Path(path)
    side = path.with_suffix(".json")
    if path.suffix == ".json":
        raise PathRefused(f"-o {path}: the graph's sidecar would be the graph; name a .onnx file")
    for target in (path, side):
        if os.path.lexists(target) and (target.is_symlink() or not target.is_file()):
            raise PathRefused(f"{target} is not a regular file: name another file; left as it is")
    if os.path.lexists(side) and not ours(side, SIDECAR_SIGNATURES):
        raise PathRefused(f"{side} holds something gem_ros did not write: left as it is")
    if os.path.lexists(path) and not os.path.lexists(side):
        raise PathRefused(
            f"{path} is not a graph gem_ros exported (no sidecar {side.name} beside it): "
            "left as it is; name another file"
        )


def export_onnx(
    model, path: str | Path, input_hw: tuple[int, int], precision: str = "fp32"
) -> dict:
    """Write `model`'s visual graph for inputs of `input_hw` (multiples of the patch size)
    to `path` and its sidecar to `path` with `.json`; the sidecar. precision: "fp32", or
    "fp16" for the mixed graph of fp16 engines. ExportError says what failed. Both are
    written to `<stem>.<process>.<thread>.partial.*` first and renamed into place, sidecar
    then graph: a reader (another node sharing the graph cache) never sees half of one."""
    path = Path(path)
    p = model.patch_size
    height, width = (int(v) for v in input_hw)
    what = f"export of {model.name} (method {model.method}) at {width}x{height}"
    if precision not in GRAPH_PRECISIONS:
        raise ExportError(f"{what}: precision must be one of {GRAPH_PRECISIONS}, got {precision!r}")
    if height % p or width % p or height <= 0 or width <= 0:
        raise ExportError(f"{what}: height and width must be positive multiples of {p}")
    try:
        import onnx  # noqa: F401 - torch.onnx needs it to write the graph
    except ImportError:
        raise ExportError(f"{what}: the onnx package is not installed (pip install onnx)") from None
    graph = _VisualGraph(model.encoder).eval()
    example = torch.zeros(1, 3, height, width, device=model.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.partial.onnx")
    dynamic = {INPUT: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUTS}}
    # The fused attention fast path has no ONNX form; the exported graph is the same math.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _fixed_grid(model.encoder, (height // p, width // p)), torch.no_grad():
            graph(example)  # resamples the positional embedding for this grid, eagerly
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on constant shapes
                torch.onnx.export(
                    graph,
                    (example,),
                    str(partial),
                    **_torchscript_exporter(),
                    opset_version=OPSET,
                    input_names=[INPUT],
                    output_names=list(OUTPUTS),
                    dynamic_axes=dynamic,
                )
        if precision == "fp16":
            import onnx

            from .graph_precision import to_mixed_fp16

            onnx.save(to_mixed_fp16(onnx.load(str(partial))), str(partial))
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    info = sidecar(model, (height, width), precision)
    text = json.dumps(info, indent=1).encode()
    replace_atomically(path.with_suffix(".json"), lambda f: f.write(text))
    partial.replace(path)
    return info


def _torchscript_exporter(export=None) -> dict:
    """`dynamo=False` (the TorchScript exporter this graph is written for) where
    torch.onnx.export has that keyword; older torch (Jetson wheels lag PyPI's) has only that
    exporter and no keyword."""
    parameters = inspect.signature(export or torch.onnx.export).parameters
    return {"dynamo": False} if "dynamo" in parameters else {}


def weights_fingerprint(model) -> str:
    """A short hash of the visual weights: a graph is never reused for other weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.clip.visual.state_dict().items()):
        digest.update(name.encode())
        flat = tensor.detach().float().flatten()
        digest.update(flat[:: max(1, flat.numel() // 64)].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
