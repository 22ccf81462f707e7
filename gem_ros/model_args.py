"""The model and frame flags of the commands that run the model (`gem-ros locate`, `gem-ros
bag`), the model they load, and the per-query JSON both write: here, so that gem_ros/cli.py
and gem_ros/ros/bag.py share them without importing each other."""

from __future__ import annotations

import argparse


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """The model and frame flags (the node's parameter names, from gem_ros.settings)."""
    from .settings import FrameSettings, ModelSettings, add_arguments

    add_arguments(ap, ModelSettings)
    add_arguments(ap, FrameSettings, title="frame")


def model_from_args(args: argparse.Namespace):
    import gem_ros.gem as gem

    from .settings import FrameSettings, ModelSettings, check_input_budget, from_arguments

    frame = from_arguments(FrameSettings, args)
    reason = check_input_budget(frame.input_size, frame.max_input_pixels)
    if reason:
        raise ValueError(
            reason.replace("input_size", "--input-size").replace(
                "max_input_pixels", "--max-input-pixels"
            )
        )
    return gem.load_model(
        from_arguments(ModelSettings, args),
        input_size=frame.input_size,
        max_input_pixels=frame.max_input_pixels,
    )


def detection_records(detections) -> list[dict]:
    """Each query's result as JSON: what `locate` and `bag` write per image."""
    return [
        {
            "query": d.query,
            "found": d.found,
            "confidence": d.confidence,
            "score": d.score,
            "peak": [d.peak_x, d.peak_y],
            "peaks": [list(p) for p in d.peaks],
            "bbox": list(d.bbox),
            "area": d.area,
        }
        for d in detections
    ]
