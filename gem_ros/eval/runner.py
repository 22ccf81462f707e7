"""Running predictors over a data set: progress bar, results table, JSON."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm


class GemPredictor:
    """Scores of a `gem_ros.gem.GemModel`: patch cosines upsampled bilinearly to `size`;
    detections with the frame settings (presence rule, thresholds, input size)."""

    def __init__(self, model, frame=None):
        from gem_ros.settings import FrameSettings

        self.model = model
        self.logit_scale = model.logit_scale
        self.frame = frame or FrameSettings()

    def locate(self, image: np.ndarray, queries: Sequence[str]) -> list:
        return self.model.locate(image, list(queries), **self.frame.locate_arguments(), max_peaks=0)

    def scores(
        self, image: np.ndarray, queries: Sequence[str], size: tuple[int, int]
    ) -> np.ndarray:
        """[P, H, W] at `size`: the frame settings' pipeline (one forward, or sliding
        windows; PAMR where refine is 'pamr'), as the node's maps. More queries than the
        model takes at once (Context59's 59, background words and classes) run in groups,
        a forward each: every query's map is computed on its own, so grouping changes
        nothing."""
        from gem_ros.gem.text import MAX_QUERIES

        args = self.frame.locate_arguments()
        pixels = self.model.preprocess(image, self.frame.input_size, self.frame.max_input_pixels)
        queries = list(queries)
        maps = []
        for start in range(0, len(queries), MAX_QUERIES):
            logits = self.model.slide_logits(
                pixels,
                queries[start : start + MAX_QUERIES],
                crop=args["slide"],
                stride=args["slide_stride"],
                out_size=tuple(size),
                pamr_steps=args["pamr_steps"],
                pamr_dilations=args["pamr_dilations"],
            )
            maps.append(logits[0].cpu().numpy())
        return np.concatenate(maps)


def evaluate(predictor, dataset, protocol, progress: bool = True, description: str = "") -> dict:
    """Feed every sample of `dataset` through `protocol` with `predictor`; the summary,
    with the image count and the wall time."""
    start = time.monotonic()
    count = 0
    for sample in tqdm(
        dataset,
        total=len(dataset),
        desc=description or dataset.name,
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    ):
        protocol.update(sample, predictor)
        count += 1
    result = protocol.summary()
    result.update(images=count, seconds=round(time.monotonic() - start, 2))
    return result


# Headline figures per protocol, in table order.
HEADLINES = {
    "segmentation": ("mIoU", "mIoU_no_background", "pixel_accuracy"),
    "localisation": ("pointing_accuracy", "mIoU", "queries"),
    "points": ("mIoU", "classes"),
    "presence": ("AUROC", "F1", "precision", "recall", "pointing_accuracy", "present", "absent"),
}
HEADLINES["authors"] = HEADLINES["segmentation"]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.1f}"
    return str(value)


def format_table(rows: Iterable[dict], protocol: str) -> str:
    """Markdown table: one row per setting; rates shown in percent; rows that ran their
    own inference settings (--protocol authors) say which in a last column."""
    rows = list(rows)
    keys = [k for k in HEADLINES[protocol] if any(k in r["metrics"] for r in rows)]
    described = any(r.get("inference_summary") for r in rows)
    header = ["setting", *keys, "images", "s/img", *(["inference"] if described else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        m = r["metrics"]
        per_image = m["seconds"] / m["images"] if m["images"] else float("nan")
        cells = [
            r["setting"],
            *(_cell(m.get(k)) for k in keys),
            str(m["images"]),
            f"{per_image:.2f}",
            *([r.get("inference_summary", "")] if described else []),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Optional[Path], payload: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def _jsonable(value):
    """Plain JSON: NaN (an undefined figure) becomes null, numpy scalars and paths plain."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
