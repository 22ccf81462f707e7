"""Building a GEM model from an open_clip name or JSON config and a tag or checkpoint file.

Weights for a pretrained tag come from open_clip's own download and cache. Offline, a tag
that is not cached fails at once with a message naming the model, the tag and how to pass a
local file, instead of open_clip's minute of network retries.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from dataclasses import fields, replace
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch

from ..settings import MAX_INPUT_PIXELS, ModelSettings, check_setting
from .backends import backend_problem, make_backend
from .model import GemModel

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_NO_WEIGHTS = (None, "", "none", "random")
_KEEP = object()  # load_model's pretrained argument, when not given


class ModelLoadError(RuntimeError):
    """The model could not be built: unknown name or tag, missing or unreadable weights.

    A message that tells how to pass a local weights file says it the Python way; each entry
    point says it its own way with `told(...)` (the CLI: --pretrained PATH, the node:
    pretrained:=PATH)."""

    PYTHON = "load_model(..., pretrained='/path/to/open_clip_pytorch_model.bin')"

    def __init__(self, message: str):
        self.template = message
        super().__init__(message.replace("{local_file}", self.PYTHON))

    def told(self, local_file: str) -> str:
        """The message, naming `local_file` as the way to pass a local weights file."""
        return self.template.replace("{local_file}", local_file)


def load_model(
    settings: ModelSettings | str | None = None,
    pretrained: Optional[str] = _KEEP,
    *,
    cache_dir: Optional[str] = None,
    graph_cache_dir: Optional[str] = None,
    input_size: int = 448,
    max_input_pixels: int = MAX_INPUT_PIXELS,
    **changes,
) -> GemModel:
    """A GEM (or plain CLIP, method="clip") model ready for `locate`/`patch_logits`.

        load_model("ViT-B-16", "openai", method="gem", gem_depth=7, device="cuda")
        load_model(ModelSettings(model="ViT-B-32", precision="fp16"))

    settings: a ModelSettings, or the open_clip model name (ViT-B-16, ViT-B-32, ViT-L-14,
      *-quickgelu, ...) or the path of an open_clip JSON model config (registered under its
      file stem); keyword arguments replace single fields (see ModelSettings for all).
    pretrained: an open_clip pretrained tag ("openai", "laion2b_s34b_b88k", ...), the path of a
      checkpoint file, or 'none' (or None) for random weights.
    input_size, max_input_pixels: the model's defaults for `locate` (FrameSettings).
    graph_cache_dir: where backends 'onnxruntime' and 'tensorrt' keep graphs and engines (default
      ~/.cache/gem_ros/onnx).
    """
    import open_clip  # imported here: it takes seconds, and callers may only want the types

    settings = _checked_settings(settings, pretrained, changes)
    name = _register_model(open_clip, settings.model)
    weights = _resolve_weights(open_clip, name, settings.weights, cache_dir)
    torch_device = _resolve_device(settings.device)
    problem = backend_problem(settings.backend, torch_device)
    if problem:
        raise ModelLoadError(problem)
    precision, why = resolve_precision(settings.precision, torch_device)
    if why:
        log.log(logging.WARNING if settings.precision == "fp16" else logging.INFO, "%s", why)
    if torch_device.type == "cuda" and precision == "fp32":
        fp32_means_fp32()
    try:
        clip = open_clip.create_model(
            name, pretrained=weights, device=torch_device, weights_only=True
        )
    except Exception as exc:  # a bad checkpoint: wrong architecture, corrupt file, ...
        raise ModelLoadError(
            f"could not build open_clip model {name!r} with weights {weights or 'random'}: {exc}"
        ) from exc
    # eval() only: every call runs under inference_mode, and parameters that do not require
    # grad would send nn.MultiheadAttention (the text tower) down torch's inference fast
    # path, which builds the full attention matrix: 1.35x slower text encoding on a CPU.
    clip.eval()
    preprocess_cfg = open_clip.get_model_preprocess_cfg(clip)
    model = GemModel(
        clip,
        open_clip.get_tokenizer(name),
        name=name,
        settings=settings,
        device=torch_device,
        autocast_dtype=PRECISIONS[precision],
        input_size=input_size,
        max_input_pixels=max_input_pixels,
        mean=preprocess_cfg["mean"],
        std=preprocess_cfg["std"],
    )
    if settings.backend != "torch":
        if precision != "fp32" and settings.backend == "onnxruntime":
            log.warning(
                "backend %s runs an fp32 graph: %s applies to text", settings.backend, precision
            )
        model.backend = make_backend(settings.backend, model, cache_dir=graph_cache_dir)
    return model


def _checked_settings(settings, pretrained, changes: dict) -> ModelSettings:
    """load_model's settings, changes and pretrained as one checked ModelSettings, or
    ValueError naming the unknown or invalid setting."""
    if settings is None or isinstance(settings, (str, os.PathLike)):
        changes.setdefault("model", str(settings) if settings is not None else "ViT-B-16")
        settings = ModelSettings()
    if pretrained is not _KEEP:
        changes["pretrained"] = pretrained
    unknown = sorted(set(changes) - {f.name for f in fields(ModelSettings)})
    if unknown:
        raise ValueError(
            f"unknown model settings {unknown}; known: "
            f"{', '.join(f.name for f in fields(ModelSettings))}"
        )
    settings = replace(settings, **changes)
    for f in fields(ModelSettings):
        reason = check_setting(f.name, getattr(settings, f.name))
        if reason:
            raise ValueError(reason)
    return settings


def fp32_means_fp32() -> None:
    """torch's fp32 on CUDA, said explicitly: no TF32 in matrix products or convolutions
    (cuDNN's default allows it for convolutions, so the patch embedding of an "fp32" model ran
    in TF32 on Ampere and later, Orin too). Process-wide, as torch's flags are."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch 2.9 and newer
        matmul.fp32_precision = "ieee"
        cudnn.conv.fp32_precision = "ieee"
    else:
        matmul.allow_tf32 = False
        cudnn.allow_tf32 = False


# CPU flags of native bf16 arithmetic, best first: AMX tiles (Intel Sapphire Rapids and
# newer), AVX-512 BF16 (Intel Cooper Lake, AMD Zen 4). Measured on a Zen 4 (avx512_bf16, 2
# threads, ViT-B-16 at 448): GEM 1.6x and CLIP 2.6x faster in bf16 than in fp32
# (benchmarks/backends.py). Without them torch emulates bf16, which may be slower than fp32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16(cpuinfo: str | None = None) -> Optional[str]:
    """The CPU's native bf16 flag (Linux /proc/cpuinfo), or None."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            flags.update(line.split(":", 1)[1].split())
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


def resolve_precision(precision: str, device: torch.device, bf16_flag: str | None = "probe"):
    """The precision to run for a setting on a device, and why if it is not the one asked
    for (or it was 'auto'): fp16 runs on CUDA only; auto is fp16 on CUDA, bf16 on a CPU with
    native bf16 (AMX or AVX-512 BF16), fp32 otherwise."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16", "precision auto: fp16 on CUDA"
        flag = cpu_bf16() if bf16_flag == "probe" else bf16_flag
        if flag:
            return "bf16", f"precision auto: bf16 (this CPU has {flag})"
        return "fp32", "precision auto: fp32 (this CPU has no native bf16; it would be emulated)"
    if precision == "fp16" and device.type == "cpu":
        return "fp32", "fp16 is not used on the CPU; running in fp32 (bf16 works on CPUs)"
    return precision, ""


def check_source(
    model: str, pretrained: Optional[str], device: str = "auto", backend: str = "torch"
) -> None:
    """ModelLoadError or ValueError if `load_model` would surely fail for these: an unknown
    model name or missing config file, a missing checkpoint file or unknown tag, a device
    that is not there, a backend that is not installed. Builds nothing and touches no network
    (milliseconds once open_clip is imported), so a caller can refuse a setting at once;
    whether a tag's weights are cached or downloadable is only known when loading."""
    import open_clip

    _weights_source(open_clip, _register_model(open_clip, model), pretrained)
    problem = backend_problem(backend, _resolve_device(device))
    if problem:
        raise ModelLoadError(problem)


def local_weights(model: str, pretrained: Optional[str], cache_dir: Optional[str] = None) -> str:
    """Where `load_model` would read these weights from without a network: 'random weights',
    a checkpoint file, or the cached file of a tag; ModelLoadError (naming where the cache
    is) when a tag's weights are not cached. Downloads nothing."""
    import open_clip

    cfg = _weights_source(open_clip, _register_model(open_clip, model), pretrained)
    if cfg is None:
        return "random weights"
    if not isinstance(cfg, dict):
        return cfg
    cached = _cached_weights(cfg, cache_dir)
    if cached is None:
        raise ModelLoadError(
            f"model {model!r}, pretrained tag {pretrained!r}: the weights are not in the local "
            f"cache ({_cache_location(cfg, cache_dir)}); the node downloads them on first use "
            f"where {_weights_host(cfg)} can be reached, or pass a local checkpoint file: "
            "{local_file}"
        )
    return cached


def _register_model(open_clip, model: str) -> str:
    path = Path(model).expanduser()
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ModelLoadError(f"model config file not found: {path}")
        open_clip.add_model_config(str(path))
        return path.stem
    if model not in open_clip.list_models():
        close = difflib.get_close_matches(model, open_clip.list_models(), n=5)
        raise ModelLoadError(
            f"unknown open_clip model {model!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + " (or pass the path of an open_clip JSON model config)"
        )
    return model


def _resolve_weights(
    open_clip, name: str, pretrained: Optional[str], cache_dir: Optional[str]
) -> Optional[str]:
    """A local weights file for `pretrained`, or None for random weights."""
    cfg = _weights_source(open_clip, name, pretrained)
    if not isinstance(cfg, dict):
        return cfg
    cached = _cached_weights(cfg, cache_dir)
    if cached:
        return cached
    how = f"model {name!r}, pretrained tag {pretrained!r}: the weights are not in the local cache"
    host = _weights_host(cfg)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or not _reachable(host):
        raise ModelLoadError(
            f"{how} and {host} cannot be reached (offline). Download them on a machine with "
            f"network (they land in open_clip's cache, {_cache_location(cfg, cache_dir)}; copy "
            "it to the same place here) or pass a local checkpoint file: {local_file}"
        )
    log.info("downloading weights for %s/%s from %s", name, pretrained, host)
    try:
        return open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as exc:
        raise ModelLoadError(f"{how} and the download failed: {exc}") from exc


def _weights_source(open_clip, name: str, pretrained: Optional[str]):
    """None (random weights), the path of an existing file, or open_clip's pretrained config
    of a known tag; ModelLoadError otherwise."""
    if pretrained in _NO_WEIGHTS:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if path.suffix in _WEIGHT_SUFFIXES or os.sep in pretrained:
        raise ModelLoadError(f"checkpoint file not found: {path}")
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelLoadError(
            f"open_clip has no pretrained tag {pretrained!r} for model {name!r}"
            f" (known tags: {', '.join(tags) or 'none'}); or pass the path of "
            "a checkpoint file as pretrained"
        )
    return cfg


def _cached_weights(cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    if cfg.get("hf_hub"):
        from huggingface_hub import hf_hub_download

        repo_id, filename = _split_hf_hub(cfg["hf_hub"])
        for candidate in _hf_candidates(filename):
            try:
                return hf_hub_download(
                    repo_id=repo_id, filename=candidate, cache_dir=cache_dir, local_files_only=True
                )
            except Exception:
                continue
        return None
    if cfg.get("url"):
        target = Path(cache_dir or "~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        return str(target) if target.is_file() else None
    return None


def _cache_location(cfg: dict, cache_dir: Optional[str]) -> str:
    if cache_dir:
        return cache_dir
    if cfg.get("hf_hub"):
        return "the Hugging Face cache, $HF_HOME/hub, by default ~/.cache/huggingface/hub"
    return "~/.cache/clip"


def _split_hf_hub(hf_hub: str) -> tuple[str, str]:
    """open_clip's 'org/repo/' or 'org/repo/file.bin' -> (repo_id, filename)."""
    parts = hf_hub.strip("/").split("/")
    filename = "/".join(parts[2:]) or "open_clip_pytorch_model.bin"
    return "/".join(parts[:2]), filename


def _hf_candidates(filename: str) -> list[str]:
    # open_clip prefers a .safetensors twin of a .bin file; look for both in the cache.
    stem, dot, ext = filename.rpartition(".")
    if ext in ("bin", "pth"):
        safe = (
            "open_clip_model.safetensors"
            if filename == "open_clip_pytorch_model.bin"
            else f"{stem}.safetensors"
        )
        return [safe, filename]
    return [filename]


def _weights_host(cfg: dict) -> str:
    if cfg.get("hf_hub"):
        return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    return urlparse(cfg.get("url", "")).hostname or "the weights server"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve_device(device: str) -> torch.device:
    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {device!r} asked for, but CUDA is not available "
                "(use device 'auto' to fall back to the CPU)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return dev
