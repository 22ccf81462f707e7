"""The parameters of gem_node: names, defaults, descriptions, ranges, and their checks.

One table, used by the node to declare its parameters and by the launch test to check that
the launch file's arguments name real parameters. No torch or model imports here.
"""
import re
from dataclasses import dataclass
from typing import Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

# Plain constants of the core and the conversion (no torch import through these names).
MAX_INPUT_PIXELS = 2 * 448 * 448  # = gem_ros.gem.model.MAX_INPUT_PIXELS (tested)
MAX_INPUT_SIDE = 2048
MAX_IMAGE_PIXELS = 50_000_000  # = gem_ros.gem.model.MAX_IMAGE_PIXELS
DEFAULT_MAX_PIXELS = 3840 * 2160  # = gem_ros.image_conversion.DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object
    description: str
    range: Optional[tuple] = None  # inclusive (from, to), of the default's type
    choices: tuple = ()  # allowed string values, checked when set
    reloads_model: bool = False  # a change rebuilds the model in the background
    read_only: bool = False  # fixed at start-up (subscriptions are made from it)
    dynamic_typing: bool = False

    def descriptor(self) -> ParameterDescriptor:
        description = self.description
        if self.choices:
            description += f" (one of: {', '.join(self.choices)})"
        if self.reloads_model:
            description += '; changing it reloads the model in the background'
        descriptor = ParameterDescriptor(name=self.name, description=description,
                                         read_only=self.read_only,
                                         dynamic_typing=self.dynamic_typing)
        if self.range is not None:
            low, high = self.range
            if isinstance(self.default, float):
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
            else:
                descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        return descriptor


PARAMETERS = (
    ParameterSpec('model', 'ViT-B-16',
                  'open_clip model name (e.g. ViT-B-16, ViT-B-32) or path of an open_clip JSON '
                  'model config', reloads_model=True),
    ParameterSpec('pretrained', 'openai',
                  "open_clip pretrained tag (e.g. openai), path of a checkpoint file, or '' for "
                  'random weights', reloads_model=True),
    ParameterSpec('method', 'gem',
                  "'gem': GEM's self-self attention path; 'clip': plain CLIP patch tokens "
                  '(the baseline)', choices=('gem', 'clip'), reloads_model=True),
    ParameterSpec('gem_depth', 7,
                  'number of last ViT blocks feeding the GEM path (at most blocks + 1)',
                  range=(2, 64), reloads_model=True),
    ParameterSpec('ss_attn_iter', 1, 'self-self attention iterations', range=(0, 10),
                  reloads_model=True),
    ParameterSpec('ss_attn_temp', 0.0,
                  'self-self attention inverse temperature; 0 = adaptive', range=(0.0, 1000.0),
                  reloads_model=True),
    ParameterSpec('device', 'auto', "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'",
                  reloads_model=True),
    ParameterSpec('precision', 'fp32', 'inference precision (fp16 falls back to fp32 on the CPU)',
                  choices=('fp32', 'fp16', 'bf16'), reloads_model=True),
    ParameterSpec('input_size', 448,
                  'shorter image side fed to the model, pixels (aspect ratio kept); its square '
                  'must fit max_input_pixels', range=(16, MAX_INPUT_SIDE)),
    ParameterSpec('max_input_pixels', MAX_INPUT_PIXELS,
                  'most pixels fed to the model per frame (the memory and time budget): frames '
                  'whose input at input_size would be larger are fed smaller, aspect kept; '
                  'aspect ratios too extreme for it are refused', range=(16 * 16, MAX_INPUT_SIDE ** 2)),
    ParameterSpec('max_image_pixels', DEFAULT_MAX_PIXELS,
                  'largest camera frame accepted, width x height in pixels, checked from the '
                  "message's header (compressed: the size its header declares) before any "
                  'copy or decoding', range=(1, MAX_IMAGE_PIXELS)),
    ParameterSpec('prompt_template', 'a photo of a {}.',
                  "text prompt for each query; '{}' is replaced by the query", reloads_model=True),
    ParameterSpec('mask_threshold', 0.5,
                  "a mask pixel is set where the query's min-max normalised heatmap exceeds this",
                  range=(0.0, 1.0)),
    ParameterSpec('max_rate_hz', 0.0, 'most frames processed per second; 0 = unlimited',
                  range=(0.0, 1000.0)),
    ParameterSpec('publish_overlay', True,
                  'publish ~/overlay (drawn only while something subscribes to it)'),
    ParameterSpec('overlay_max_rate_hz', 5.0,
                  'most ~/overlay images per second; 0 = one per processed frame',
                  range=(0.0, 1000.0)),
    ParameterSpec('queries', '',
                  "start-up text queries: a string array, or one string split on ',' and ';'; "
                  'setting it at run time replaces the active queries', dynamic_typing=True),
    ParameterSpec('image_qos', 'sensor_data',
                  "QoS of the image subscriptions: 'sensor_data' (best effort, depth 1; also "
                  "hears reliable publishers) or 'reliable' (depth 1)",
                  choices=('sensor_data', 'reliable'), read_only=True),
    ParameterSpec('use_compressed', False,
                  'also subscribe <image topic>/compressed (sensor_msgs/CompressedImage)',
                  read_only=True),
)
PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
MODEL_PARAMETERS = frozenset(spec.name for spec in PARAMETERS if spec.reloads_model)

_DEVICE = re.compile(r'auto|cpu|cuda(:\d+)?')


def check_value(name: str, value) -> Optional[str]:
    """Why `value` is not acceptable for parameter `name`, or None when it is.

    Types and ranges are enforced by rclpy from the descriptors; this checks the rest.
    """
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if name == 'device' and not _DEVICE.fullmatch(value):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    if name == 'prompt_template' and value.count('{}') != 1:
        return f"prompt_template needs exactly one '{{}}', got {value!r}"
    if name == 'queries' and not (value is None or isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(q, str) for q in value))):
        return f'queries must be a string or a string array, got {value!r:.80}'
    return None


def check_input_budget(input_size: int, max_input_pixels: int) -> Optional[str]:
    """Why input_size does not fit the model-input budget, or None."""
    if input_size * input_size > max_input_pixels:
        return (f'input_size {input_size} needs {input_size * input_size} model-input pixels '
                f'for a square frame, more than max_input_pixels {max_input_pixels}: lower '
                'input_size or raise max_input_pixels (both at once: set them atomically)')
    return None
