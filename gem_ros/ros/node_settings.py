"""The node's parameters as settings: the checks a change must pass (each value alone, then
what values say together: the input budget, the model's source, what TF frames need), and
the per-frame snapshot built from them (RunSettings with the outputs' settings, and
/diagnostics' limits). Read through a `value(name)` callable: no node here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Optional

import gem_ros.gem as gem
from gem_ros.engine import RunSettings
from gem_ros.ros.depth_input import DepthSettings
from gem_ros.ros.parameters import (
    FRAME_PARAMETERS,
    HOLD_PARAMETERS,
    MODEL_PARAMETERS,
    check_value,
)
from gem_ros.ros.transforms import tf2_missing
from gem_ros.settings import FrameSettings, HoldSettings, ModelSettings, check_input_budget
from gem_ros.threads import cut

LOCAL_WEIGHTS = 'the parameter pretrained:=/path/to/open_clip_pytorch_model.bin'
DEPTH_FIELDS = tuple(f.name for f in fields(DepthSettings))


@dataclass(frozen=True)
class Outputs:
    """The output settings the cameras read per frame (worker thread), one snapshot per
    parameter change."""

    depth: DepthSettings
    overlay: tuple  # (publish_overlay, overlay_max_rate_hz)
    mask_format: str
    heatmaps_max_rate: float
    heatmap_image: tuple  # (heatmap_image_query, heatmap_image_blend)


def queries_from_parameter(value) -> list[str]:
    """The queries parameter's value (a string split on ',' and ';', or a string array) as a
    query list; QueryError for a non-empty string that holds no query (e.g. ';;;'), which
    would otherwise clear the queries by accident."""
    if isinstance(value, str):
        queries = gem.parse_queries(value)
        if value.strip() and not queries:
            raise gem.QueryError(
                f'no queries in {cut(value, 60)!r} (to clear them, set queries to \'\' or [])'
            )
        return gem.check_queries(queries)
    return gem.check_queries([q for q in value or () if q.strip()])


def check_change(params, values: dict, declaring: bool, check_queries: Callable) -> Optional[str]:
    """Why a parameter change is refused, or None. values: every parameter's value with the
    change applied; declaring: at start-up, where check_startup checks what values say
    together; check_queries: the engine's (the model's tokenizer once one is loaded)."""
    for param in params:
        reason = check_value(param.name, param.value)
        if reason is None and param.name == 'queries':
            try:
                check_queries(queries_from_parameter(param.value))
            except gem.QueryError as exc:
                reason = f'bad queries: {exc}'
        if reason is not None:
            return reason
    if declaring:
        return None
    names = {param.name for param in params}
    if names & {'input_size', 'max_input_pixels'}:
        reason = check_input_budget(values['input_size'], values['max_input_pixels'])
        if reason:
            return reason
    if names & {'model', 'pretrained', 'device', 'backend'}:
        return check_source(values)
    return None


def check_startup(values: dict) -> Optional[str]:
    """What one parameter alone cannot tell, at start-up: why the node cannot start, or None."""
    return (
        check_input_budget(values['input_size'], values['max_input_pixels'])
        or check_source(values)
        or check_frames(values)
    )


def check_source(values: dict) -> Optional[str]:
    """Why model/pretrained/device cannot load (known without loading), or None."""
    try:
        gem.check_source(values['model'], values['pretrained'], values['device'], values['backend'])
    except gem.ModelLoadError as exc:
        return exc.told(LOCAL_WEIGHTS)
    except ValueError as exc:
        return str(exc)
    return None


def check_frames(values: dict) -> Optional[str]:
    """Why target_frame / memory_frame / map_frame cannot work here (no tf2_ros, no depth),
    or None."""
    asked = [name for name in ('target_frame', 'memory_frame', 'map_frame') if values[name]]
    if asked and tf2_missing():
        return f"{' and '.join(asked)} need TF: {tf2_missing()}"
    if values['memory_frame'] and not values['use_depth']:
        return 'memory_frame remembers 3D points: it needs use_depth:=true'
    if values['map_frame'] and not values['use_depth']:
        return 'map_frame places patch features at their depth: it needs use_depth:=true'
    return None


def model_settings(value: Callable[[str], object]) -> ModelSettings:
    return ModelSettings(**{name: value(name) for name in MODEL_PARAMETERS})


def read_run_settings(value: Callable[[str], object]) -> tuple[RunSettings, tuple]:
    """The per-frame snapshot (RunSettings, the outputs' settings in it) and /diagnostics'
    limits (frame timeout, minimum rate)."""
    frame = FrameSettings(**{name: value(name) for name in FRAME_PARAMETERS})
    hold = HoldSettings(**{name: value(name) for name in HOLD_PARAMETERS})
    outputs = Outputs(
        depth=DepthSettings(**{name: value(name) for name in DEPTH_FIELDS}),
        overlay=(value('publish_overlay'), value('overlay_max_rate_hz')),
        mask_format=value('mask_format'),
        heatmaps_max_rate=value('heatmaps_max_rate_hz'),
        heatmap_image=(value('heatmap_image_query'), value('heatmap_image_blend')),
    )
    run = RunSettings(
        frame=frame,
        max_image_pixels=value('max_image_pixels'),
        max_rate_hz=value('max_rate_hz'),
        hold=hold.rule(frame.presence_threshold),
        outputs=outputs,
    )
    return run, (value('diagnostics_frame_timeout_s'), value('diagnostics_min_rate_hz'))
