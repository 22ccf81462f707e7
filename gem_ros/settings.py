"""The settings of a GEM model and of each frame: names, defaults, ranges, written once.

`ModelSettings` is what `load_model` builds a model from; `FrameSettings` what `locate` uses
for each image. The node's parameter table (gem_ros/ros/parameters.py, and from it the launch
arguments) and the command lines' flags (gem_ros/cli.py, gem_ros/eval/cli.py) are made from
these fields and their metadata, so a setting has one name, one default and one range
everywhere. No torch here: the table can be read without loading a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Optional

from .queries import parse_queries

# The patch tokens a model gives (gem_ros/gem/vision.py has each one's formula): GEM, plain
# CLIP, three training-free successors that change CLIP's last block only, and SC-CLIP
# (gem_ros/gem/scclip.py: outlier repair and multi-level aggregation over the blocks too).
METHODS = ("gem", "clip", "naclip", "sclip", "clearclip", "scclip")
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
# What runs the visual side (gem_ros/gem/backends.py); text encoding is always PyTorch.
BACKENDS = ("torch", "onnxruntime", "tensorrt")
RANDOM_WEIGHTS = "none"  # pretrained value for random weights ('' and None are read as it)
DEFAULT_TEMPLATE = "a photo of a {}."
# The model-input budget, in pixels fed to the ViT: twice 448x448 (1568 tokens of 16 px),
# which covers a 2:1 frame at input_size 448 and which ViT-B-16 runs in well under 1 GB of
# activations, a Jetson Orin 8 GB included. Frames whose input would exceed it are fed smaller.
MAX_INPUT_PIXELS = 2 * 448 * 448
MAX_INPUT_SIDE = 2048
PRESENCE_RULES = ("image", "off")
REFINEMENTS = ("none", "pamr")
MAX_PAMR_DILATION = 64  # = gem_ros.gem.refine.MAX_DILATION
# What a query must beat to count as present (see gem_ros/gem/presence.py): generic words for
# what fills a frame when the queried thing is not in it. A query equal to one of them does
# not compete with itself.
# On the softmax over queries: the paper's VOC protocol (gem_ros.gem.postprocess, the eval).
DEFAULT_BACKGROUND_THRESHOLD = 0.8
PRESENCE_ASKING = ("all", "single")  # the presence protocol's ways to ask (gem_ros.eval)
DEFAULT_BACKGROUND_PROMPTS = "background; wall; floor; ceiling; ground; sky; texture; surface"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _setting(
    default,
    help: str,
    *,
    range: Optional[tuple] = None,
    choices: tuple = (),
    yaml_bool: bool = False,
):
    """yaml_bool: YAML (ROS parameter files and `-p name:=value`) reads `off` as false and
    `on` as true; such a setting takes those booleans as its 'off' and default choices."""
    metadata = {"help": help, "range": range, "choices": choices, "yaml_bool": yaml_bool}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ModelSettings:
    """What a model is built from; changing any of these means building another model."""

    model: str = _setting(
        "ViT-B-16",
        "open_clip model name (e.g. ViT-B-16, ViT-B-32) or path of an open_clip JSON model config",
    )
    pretrained: str = _setting(
        "openai",
        "open_clip pretrained tag (e.g. openai), path of a checkpoint file, or "
        f"'{RANDOM_WEIGHTS}' for random weights",
    )
    method: str = _setting(
        "gem",
        "'gem': GEM's self-self attention path; 'clip': plain CLIP patch tokens (the "
        "baseline); 'naclip', 'sclip', 'clearclip': those methods' last block (NACLIP: k-k "
        "attention with a Gaussian neighbourhood; SCLIP: q-q plus k-k attention; ClearCLIP: "
        "q-q attention without residual and MLP); 'scclip': SC-CLIP (outlier patches "
        "repaired, features aggregated by similarity, multi-level)",
        choices=METHODS,
    )
    gem_depth: int = _setting(
        7,
        "GEM only: its path runs over the last gem_depth - 1 ViT blocks (2 to blocks + 1)",
        range=(2, 64),
    )
    ss_attn_iter: int = _setting(1, "GEM only: self-self attention iterations", range=(0, 10))
    ss_attn_temp: float = _setting(
        0.0,
        "GEM only: self-self attention inverse temperature; 0 = adaptive (the paper's rule)",
        range=(0.0, 1000.0),
    )
    naclip_std: float = _setting(
        5.0,
        "NACLIP only: standard deviation of its Gaussian neighbourhood bias, in patches",
        range=(0.1, 100.0),
    )
    scclip_blocks: str = _setting(
        "auto",
        "SC-CLIP only: block indices 'pre,post,start,end' (similarity blocks, multi-level "
        "range); 'auto' = the authors' 8,3,3,10 for 12 blocks, scaled by blocks/12 otherwise",
    )
    scclip_res_cls: float = _setting(
        0.3, "SC-CLIP only: weight of the class token added back", range=(0.0, 10.0)
    )
    scclip_threshold: float = _setting(
        0.4,
        "SC-CLIP only: patch similarities under this are dropped from the aggregation",
        range=(-1.0, 1.0),
    )
    scclip_lof_neighbors: int = _setting(
        30, "SC-CLIP only: neighbours of its outlier detection (LOF)", range=(1, 1000)
    )
    scclip_lof_contamination: float = _setting(
        0.05, "SC-CLIP only: share of patches taken as outliers", range=(0.001, 0.5)
    )
    device: str = _setting("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    precision: str = _setting(
        "fp32",
        "inference precision (fp16 falls back to fp32 on the CPU); auto: fp16 on CUDA, bf16 "
        "on a CPU with native bf16 (AMX or AVX-512 BF16), fp32 otherwise (the log says which)",
        choices=PRECISIONS,
    )
    prompt_template: str = _setting(
        DEFAULT_TEMPLATE, "text prompt for each query; '{}' is replaced by the query"
    )
    backend: str = _setting(
        "torch",
        "what runs the image encoder: 'torch' (PyTorch eager); 'onnxruntime' (the method's "
        "graph exported to ONNX once per input size, cached, run by ONNX Runtime: CUDA or "
        "TensorRT execution providers where installed, else the CPU; fp32); 'tensorrt' (a "
        "TensorRT engine built from that graph and cached per GPU; CUDA only; fp16 when "
        "precision is fp16 or auto); graphs and engines are built by the loader for the "
        "sizes the running model served, a new size in the background (torch serves it "
        "meanwhile)",
        choices=BACKENDS,
    )

    def __post_init__(self):
        if self.pretrained in (None, ""):
            object.__setattr__(self, "pretrained", RANDOM_WEIGHTS)
        if self.ss_attn_temp is None:
            object.__setattr__(self, "ss_attn_temp", 0.0)

    @property
    def weights(self) -> Optional[str]:
        """The pretrained tag or file, or None for random weights."""
        return None if self.pretrained.lower() in (RANDOM_WEIGHTS, "random") else self.pretrained

    @property
    def templates(self) -> tuple[str, ...]:
        t = self.prompt_template
        return (t,) if isinstance(t, str) else tuple(t)


@dataclass(frozen=True)
class FrameSettings:
    """What each image is processed with; may change from one frame to the next."""

    input_size: int = _setting(
        448,
        "shorter image side fed to the model, pixels (aspect ratio kept); its square must "
        "fit max_input_pixels",
        range=(16, MAX_INPUT_SIDE),
    )
    max_input_pixels: int = _setting(
        MAX_INPUT_PIXELS,
        "most pixels fed to the model per image (the memory and time "
        "budget): images whose input at input_size would be larger are fed smaller, aspect "
        "kept; aspect ratios too extreme for it are refused",
        range=(256, MAX_INPUT_SIDE**2),
    )
    mask_threshold: float = _setting(
        0.5,
        "a mask pixel is set where the query's min-max normalised heatmap exceeds this",
        range=(0.0, 1.0),
    )
    presence: str = _setting(
        "image",
        "how a query is judged present: 'image': CLIP's image embedding compared with the "
        "query and the background prompts (confidence = the query's softmax share against "
        "them); 'off': every query is found (confidence 1), as before",
        choices=PRESENCE_RULES,
        yaml_bool=True,
    )
    presence_threshold: float = _setting(
        0.5, "a query is found when its presence confidence reaches this", range=(0.0, 1.0)
    )
    background_prompts: str = _setting(
        DEFAULT_BACKGROUND_PROMPTS,
        "what a query competes with for presence: prompts split on ',' and ';'",
    )
    slide: int = _setting(
        0,
        "sliding windows, the successors' inference: the window side in model-input pixels "
        "(their 224; a multiple of the patch size), each window one forward (batched within "
        "max_input_pixels), the windows' maps averaged where they overlap; 0 = off (one "
        "forward over the whole input); presence is judged on the whole input either way",
        range=(0, MAX_INPUT_SIDE),
    )
    slide_stride: int = _setting(
        112, "sliding windows: the step between windows, model-input pixels", range=(16, 2048)
    )
    refine: str = _setting(
        "none",
        "'pamr': masks, peaks, boxes and heatmaps from the maps refined by PAMR (aligned "
        "with the image's edges, at the image's size; the successors' optional step); "
        "'none': the bilinearly upsampled maps",
        choices=REFINEMENTS,
    )
    pamr_steps: int = _setting(10, "PAMR: refinement steps", range=(1, 50))
    pamr_dilations: str = _setting(
        "8, 16", "PAMR: neighbourhood dilations in image pixels, comma-separated (1 to 8 of them)"
    )

    def __post_init__(self):
        object.__setattr__(self, "presence", presence_rule(self.presence))

    def locate_arguments(self) -> dict:
        """These settings as keyword arguments of GemModel.locate."""
        return dict(
            mask_threshold=self.mask_threshold,
            input_size=self.input_size,
            max_input_pixels=self.max_input_pixels,
            presence_rule=self.presence,
            presence_threshold=self.presence_threshold,
            background_prompts=self.background_prompts,
            slide=self.slide,
            slide_stride=self.slide_stride,
            pamr_steps=self.pamr_steps if self.refine == "pamr" else 0,
            pamr_dilations=pamr_dilations(self.pamr_dilations),
        )


@dataclass(frozen=True)
class HoldSettings:
    """Presence held over a camera's frames (gem_ros.gem.hold): the node's, not a single
    image's (`gem-ros locate` and the bag tool decide per frame)."""

    hold: bool = _setting(
        True,
        "hold each query's found/absent over frames (hysteresis on its smoothed confidence "
        "around presence_threshold), so that it does not flicker; false = each frame decides",
    )
    hold_margin: float = _setting(
        0.1,
        "held presence: found when the smoothed confidence reaches presence_threshold + this, "
        "absent when it falls under presence_threshold - this",
        range=(0.0, 0.5),
    )
    hold_window: int = _setting(
        3, "held presence: frames the confidence and the peak are averaged over", range=(1, 30)
    )
    hold_lost_frames: int = _setting(
        3,
        "held presence: a found query is lost after this many frames in a row under "
        "presence_threshold",
        range=(1, 100),
    )

    def rule(self, threshold: float):
        """The gem_ros.gem.hold.HoldRule at this presence threshold, or None when off."""
        from .gem.hold import HoldRule

        if not self.hold:
            return None
        return HoldRule(threshold, self.hold_margin, self.hold_window, self.hold_lost_frames)


def pamr_dilations(value) -> tuple[int, ...]:
    """'8, 16' -> (8, 16); ValueError for anything else than 1 to 8 integers in range."""
    parts = [p for p in str(value).replace(" ", "").split(",") if p]
    if not 1 <= len(parts) <= 8 or not all(p.isdigit() for p in parts):
        raise ValueError(f"pamr_dilations must be 1 to 8 integers like '8, 16', got {value!r}")
    dilations = tuple(int(p) for p in parts)
    if not all(1 <= d <= MAX_PAMR_DILATION for d in dilations):
        raise ValueError(f"pamr_dilations must be in [1, {MAX_PAMR_DILATION}], got {value!r}")
    return dilations


def presence_rule(value) -> str:
    """'image' or 'off' from the presence setting's value; YAML's false (`off`) is 'off',
    its true (`on`) the default rule."""
    if isinstance(value, bool):
        return PRESENCE_RULES[0] if value else "off"
    return value


SETTINGS = {f.name: f for cls in (ModelSettings, FrameSettings, HoldSettings) for f in fields(cls)}


def check_setting(name: str, value) -> Optional[str]:
    """Why `value` is not acceptable for setting `name`, or None (ranges and types are the
    caller's: ROS enforces them from the descriptors, argparse from the flags)."""
    meta = SETTINGS[name].metadata
    if name == "presence":
        value = presence_rule(value)
    if meta["choices"] and value not in meta["choices"]:
        return f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}"
    if name == "device" and not _DEVICE.fullmatch(str(value).strip().lower()):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    if name == "scclip_blocks" and str(value).strip().lower() != "auto":
        parts = str(value).replace(" ", "").split(",")
        if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
            return (
                f"scclip_blocks must be 'auto' or four integers 'pre,post,start,end', got {value!r}"
            )
    if name == "prompt_template":
        for template in (value,) if isinstance(value, str) else value:
            if template.count("{}") != 1:
                return f"prompt_template needs exactly one '{{}}', got {template!r}"
    if name == "pamr_dilations":
        try:
            pamr_dilations(value)
        except ValueError as exc:
            return str(exc)
    if name == "background_prompts":
        prompts = parse_queries(str(value))
        if not prompts:
            return (
                "background_prompts needs at least one prompt (presence 'off' turns presence off)"
            )
        if len(prompts) > 32 or any(len(q) > 300 for q in prompts):
            return "background_prompts takes at most 32 prompts of at most 300 characters"
    return None


def check_input_budget(input_size: int, max_input_pixels: int) -> Optional[str]:
    """Why input_size does not fit the model-input budget, or None."""
    if input_size * input_size > max_input_pixels:
        return (
            f"input_size {input_size} needs {input_size * input_size} model-input pixels "
            f"for a square image, more than max_input_pixels {max_input_pixels}: lower "
            "input_size or raise max_input_pixels (both at once)"
        )
    return None


def add_arguments(
    parser,
    cls,
    *,
    sweep: tuple[str, ...] = (),
    defaults: Optional[dict] = None,
    title: str = "model",
):
    """argparse flags for the fields of `cls` (--gem-depth for gem_depth, ...), with their
    help, choices and defaults; `sweep` fields take several values (nargs='+')."""
    group = parser.add_argument_group(title)
    defaults = defaults or {}
    for f in fields(cls):
        meta = f.metadata
        default = defaults.get(f.name, f.default)
        kwargs = dict(help=f"{meta['help']} (default: %(default)s)", default=default)
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if type(f.default) in (int, float):
            kwargs["type"] = type(f.default)
        if f.name in sweep:
            kwargs.update(nargs="+", default=[default])
            if meta["choices"]:  # 'all' stands for every choice
                kwargs["choices"] = (*meta["choices"], "all")
                kwargs["help"] = f"{meta['help']}; several, or 'all' (default: %(default)s)"
        if f.name == "prompt_template":
            kwargs.update(
                action="append",
                default=None,
                help=f"{meta['help']}; repeat to average several (default: {DEFAULT_TEMPLATE!r})",
            )
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return group


def from_arguments(cls, args, **overrides):
    """An instance of `cls` from parsed flags made by `add_arguments`."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    if cls is ModelSettings:
        templates = values.get("prompt_template") or [DEFAULT_TEMPLATE]
        values["prompt_template"] = templates[0] if len(templates) == 1 else tuple(templates)
    values.update(overrides)
    return cls(**values)
