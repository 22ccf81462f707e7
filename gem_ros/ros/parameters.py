"""The parameters of gem_node: names, defaults, descriptions, ranges, and their checks.

One table, made from the model and frame settings (gem_ros.settings: the same names, defaults
and ranges as load_model's and the command line's) plus the node's own and its depth input's.
The node declares its parameters from it, and the launch file makes its arguments from it.
No torch or model imports here.
"""

import re
from dataclasses import dataclass, fields
from typing import Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from gem_ros import geometry
from gem_ros.settings import FrameSettings, HoldSettings, ModelSettings, check_setting

MAX_IMAGE_PIXELS = 50_000_000  # = gem_ros.gem.inputs.MAX_IMAGE_PIXELS (tested)
DEFAULT_MAX_IMAGE_PIXELS = 3840 * 2160  # 4K UHD


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
        descriptor = ParameterDescriptor(
            name=self.name,
            description=description,
            read_only=self.read_only,
            dynamic_typing=self.dynamic_typing,
        )
        if self.range is not None:
            low, high = self.range
            if isinstance(self.default, float):
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
                ]
            else:
                descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        return descriptor


def _from_settings(cls, reloads_model: bool = False) -> tuple:
    return tuple(
        ParameterSpec(
            f.name,
            f.default,
            f.metadata['help'],
            f.metadata['range'],
            f.metadata['choices'],
            reloads_model=reloads_model,
            dynamic_typing=f.metadata['yaml_bool'],
        )
        for f in fields(cls)
    )


MAX_CAMERAS = 8  # the budget: each camera adds a frame to every batch, and its subscriptions
_CAMERA_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]{0,63}$')


def camera_names(value) -> list[str]:
    """The `cameras` parameter as names: a string array, or one string ('[front, left]',
    'front, left' or 'front; left'); [''] (one camera, the single-camera topics) when empty.
    ValueError naming what is wrong: a name that is not a ROS name token, a repeat, too many."""
    if isinstance(value, str):
        value = re.split(r'[,;]', value.strip().strip('[]'))
    names = [str(v).strip().strip('\'"') for v in (value or [])]
    names = [n for n in names if n]
    if not names:
        return ['']
    bad = [n for n in names if not _CAMERA_NAME.match(n)]
    if bad:
        raise ValueError(
            f'cameras: {bad[0]!r} is not a camera name (a letter, then letters, digits or _; '
            'it becomes a topic namespace)'
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f'cameras: {repeated[0]!r} is named twice')
    if len(names) > MAX_CAMERAS:
        raise ValueError(f'cameras: {len(names)} cameras, at most {MAX_CAMERAS} per node')
    return names


NODE_PARAMETERS = (
    ParameterSpec(
        'cameras',
        '',
        'camera streams served by this one node and model: a string array (or one string '
        "'[front, left]'); camera <name> subscribes <name>/image and publishes ~/<name>/results "
        'and the rest; empty = one camera on image and ~/results',
        read_only=True,
        dynamic_typing=True,
    ),
    ParameterSpec(
        'max_image_pixels',
        DEFAULT_MAX_IMAGE_PIXELS,
        'largest camera frame accepted, width x height in pixels, checked from the '
        "message's header (compressed: the size its header declares) before any "
        'copy or decoding',
        range=(1, MAX_IMAGE_PIXELS),
    ),
    ParameterSpec(
        'max_rate_hz', 0.0, 'most frames processed per second; 0 = unlimited', range=(0.0, 1000.0)
    ),
    ParameterSpec(
        'publish_overlay', True, 'publish ~/overlay (drawn only while something subscribes to it)'
    ),
    ParameterSpec(
        'overlay_max_rate_hz',
        5.0,
        'most ~/overlay images per second; 0 = one per processed frame',
        range=(0.0, 1000.0),
    ),
    ParameterSpec(
        'mask_format',
        'full',
        "QueryResult.mask: 'full' mono8 at the image's size, 'patch' mono8 at the model's "
        "patch grid (e.g. 28x28 instead of 640x480), 'none' an empty image (header only)",
        choices=('full', 'patch', 'none'),
    ),
    ParameterSpec(
        'heatmaps_max_rate_hz',
        5.0,
        'most ~/heatmaps and ~/heatmap_image messages per second (each published only while '
        'subscribed); 0 = one per processed frame',
        range=(0.0, 1000.0),
    ),
    ParameterSpec(
        'heatmap_image_query',
        '',
        "~/heatmap_image (colour-mapped similarity, for rviz; published only while "
        "subscribed, at most heatmaps_max_rate_hz): '' tiles every query's map with its "
        'name, a query shows that one alone',
    ),
    ParameterSpec(
        'heatmap_image_blend',
        0.5,
        "~/heatmap_image: the map's weight over the camera frame; 1 = the map alone",
        range=(0.0, 1.0),
    ),
    ParameterSpec(
        'diagnostics_frame_timeout_s',
        5.0,
        '/diagnostics: WARN when an active node has had no camera frame for this long, s',
        range=(0.1, 3600.0),
    ),
    ParameterSpec(
        'diagnostics_min_rate_hz',
        0.0,
        '/diagnostics: WARN when frames arrive but fewer than this many are processed per '
        'second; 0 = no minimum',
        range=(0.0, 1000.0),
    ),
    ParameterSpec(
        'autostart',
        True,
        'managed node (lifecycle:=true) only: configure and activate itself at start-up; '
        'false waits for a lifecycle manager',
        read_only=True,
    ),
    ParameterSpec(
        'queries',
        '',
        "start-up text queries: a string array, or one string split on ',' and ';'; "
        'setting it at run time replaces the active queries, and it shows the active '
        'queries whatever set them',
        dynamic_typing=True,
    ),
    ParameterSpec(
        'image_qos',
        'sensor_data',
        "QoS of the image subscriptions: 'sensor_data' (best effort, depth 1; also "
        "hears reliable publishers) or 'reliable' (depth 1)",
        choices=('sensor_data', 'reliable'),
        read_only=True,
    ),
    ParameterSpec(
        'use_compressed',
        False,
        'also subscribe <image topic>/compressed (sensor_msgs/CompressedImage)',
        read_only=True,
    ),
)
DEPTH_PARAMETERS = (
    ParameterSpec(
        'use_depth',
        False,
        'subscribe depth (sensor_msgs/Image aligned to the colour image) and '
        'camera_info, and give each query the 3D point of its peak',
        read_only=True,
    ),
    ParameterSpec(
        'depth_scale',
        0.0,
        'metres per depth unit; 0 = from the encoding (16UC1/mono16: millimetres, '
        '32FC1: metres; other depth encodings need it)',
        range=(0.0, 1000.0),
    ),
    ParameterSpec(
        'sync_slop',
        0.05,
        'most seconds between the stamps of a colour frame, its depth and its '
        'camera_info; depth further off gives no points',
        range=(0.0, 10.0),
        read_only=True,
    ),
    ParameterSpec(
        'depth_min',
        geometry.DEFAULT_MIN_DEPTH,
        'nearest valid depth reading, metres',
        range=(0.0, 1000.0),
    ),
    ParameterSpec(
        'depth_max',
        geometry.DEFAULT_MAX_DEPTH,
        'farthest valid depth reading, metres',
        range=(0.0, 1000.0),
    ),
    ParameterSpec(
        'depth_window',
        geometry.DEFAULT_WINDOW,
        'half-size of the square window around the peak whose valid depth readings '
        "(those in the query's mask, if enough) give the depth (median), depth pixels",
        range=(0, 100),
    ),
    ParameterSpec(
        'target_frame',
        '',
        'also give each point in this TF frame (target_point, and the markers; needs '
        "tf2_ros), at the frame's stamp; '' = none",
        read_only=True,
    ),
    ParameterSpec(
        'tf_timeout',
        0.05,
        "most seconds a frame's TF lookup waits for the transform at its stamp to arrive; "
        'then its target point (and its sightings) are left out',
        range=(0.0, 1.0),
        read_only=True,
    ),
)
# The memory of sightings (gem_ros.memory): where each query was seen, in memory_frame.
MEMORY_PARAMETERS = (
    ParameterSpec(
        'memory_frame',
        '',
        'remember where each found query with a 3D point was seen, in this TF frame (map, '
        "odom; needs use_depth and tf2_ros), answered by ~/recall; '' = no memory",
        read_only=True,
    ),
    ParameterSpec(
        'memory_radius',
        0.15,
        'sightings of a query within this many metres of a place merge into it',
        range=(0.01, 10.0),
        read_only=True,
    ),
    ParameterSpec(
        'memory_ttl_s',
        3600.0,
        'a place is forgotten this many seconds after it was last seen',
        range=(1.0, 1e7),
        read_only=True,
    ),
    ParameterSpec(
        'memory_max_places_per_query',
        16,
        'most places remembered per query (a new one replaces the weakest)',
        range=(1, 1000),
        read_only=True,
    ),
    ParameterSpec(
        'memory_max_places',
        1024,
        'most places remembered in all (a new one replaces the one seen longest ago)',
        range=(1, 100000),
        read_only=True,
    ),
    ParameterSpec(
        'memory_miss_frames',
        5,
        'frames in a row a place is in view (depth reaches it) with its query absent '
        'before it is forgotten',
        range=(1, 1000),
        read_only=True,
    ),
    ParameterSpec(
        'memory_file',
        '',
        "keep the memory across restarts in this JSON file (written atomically every few "
        "seconds and at exit; read at start if its frame is memory_frame); '' = none",
        read_only=True,
    ),
)
# The map of dense features (gem_ros.feature_map): any words asked afterwards, in map_frame.
MAP_PARAMETERS = (
    ParameterSpec(
        'map_frame',
        '',
        "keep every processed frame's patch features in 3D in this TF frame (map, odom; needs "
        "use_depth and tf2_ros), asked any words by ~/ask_map; '' = no map",
        read_only=True,
    ),
    ParameterSpec(
        'map_voxel_size',
        0.05,
        'side of the map\'s voxels in metres (a 448 px input\'s patch covers about 6 cm at 2 m)',
        range=(0.01, 1.0),
        read_only=True,
    ),
    ParameterSpec(
        'map_max_voxels',
        100_000,
        'most voxels the map keeps (the ones seen longest ago go first); each takes about '
        '1.2 KB with ViT-B-16 (512-wide features in float16): 100000 about 120 MB, and up '
        'to twice that for a moment while map_file is written or read',
        range=(1, 10_000_000),
        read_only=True,
    ),
    ParameterSpec(
        'map_rate_hz',
        1.0,
        'most frames a second of each camera that feed the map (with no query active they '
        'run the image tower only, and are not published); 0 = every frame',
        range=(0.0, 100.0),
        read_only=True,
    ),
    ParameterSpec(
        'map_file',
        '',
        "keep the map across restarts in this file (written atomically every few seconds when "
        "it changed and at exit; read at start if made by the same model, weights, method, "
        "map_frame and voxel size, else moved aside); '' = none",
        read_only=True,
    ),
)
PARAMETERS = (
    _from_settings(ModelSettings, reloads_model=True)
    + _from_settings(FrameSettings)
    + _from_settings(HoldSettings)
    + NODE_PARAMETERS
    + DEPTH_PARAMETERS
    + MEMORY_PARAMETERS
    + MAP_PARAMETERS
)
PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
MODEL_PARAMETERS = tuple(f.name for f in fields(ModelSettings))
FRAME_PARAMETERS = tuple(f.name for f in fields(FrameSettings))
HOLD_PARAMETERS = tuple(f.name for f in fields(HoldSettings))


def check_value(name: str, value) -> Optional[str]:
    """Why `value` is not acceptable for parameter `name`, or None when it is.

    Types and ranges are enforced by rclpy from the descriptors; this checks the rest.
    """
    spec = PARAMETERS_BY_NAME.get(name)
    if spec is None:
        return None
    if name in MODEL_PARAMETERS or name in FRAME_PARAMETERS or name in HOLD_PARAMETERS:
        return check_setting(name, value)
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if name == 'queries' and not (
        value is None
        or isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(q, str) for q in value))
    ):
        return f'queries must be a string or a string array, got {value!r:.80}'
    if name == 'cameras':
        try:
            camera_names(value)
        except ValueError as exc:
            return str(exc)
    return None
