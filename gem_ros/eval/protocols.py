"""From per-class score maps to metric updates: the paper's evaluation protocols.

A predictor answers `scores(image, queries, size) -> float32 [P, H, W]` (similarities
bilinearly upsampled to `size`) and has a `logit_scale` (CLIP's, for the softmax over
classes); for the presence protocol also `locate(image, queries) -> [Detection]` (found,
confidence, peak). The protocols here decide which queries to ask and how scores become
predictions.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np
import torch

from gem_ros.gem import postprocess
from gem_ros.gem.text import MAX_QUERIES
from gem_ros.settings import PRESENCE_ASKING

from .datasets import Sample
from .metrics import IGNORE_INDEX, ConfusionMatrix, Localisation, PointIoU, Presence

DEFAULT_BACKGROUND_THRESHOLD = postprocess.DEFAULT_BACKGROUND_THRESHOLD
DEFAULT_MASK_THRESHOLD = postprocess.DEFAULT_MASK_THRESHOLD


class Predictor(Protocol):
    logit_scale: float

    def scores(
        self, image: np.ndarray, queries: Sequence[str], size: tuple[int, int]
    ) -> np.ndarray: ...

    def locate(self, image: np.ndarray, queries: Sequence[str]) -> list: ...


def min_max(maps: np.ndarray) -> np.ndarray:
    """The core's per-map min-max normalisation, on numpy score maps."""
    return postprocess.min_max(torch.from_numpy(maps)).numpy()


def threshold_background(scores: np.ndarray, logit_scale: float, threshold: float) -> np.ndarray:
    """The core's VOC background rule, on numpy score maps [P, H, W] -> labels [H, W]."""
    return postprocess.labels_with_background(
        torch.from_numpy(scores), logit_scale, threshold
    ).numpy()


def background_queries_labels(
    scores: np.ndarray,
    logit_scale: float,
    background_count: int,
    prob_threshold: float,
    area_threshold: Optional[float] = None,
) -> np.ndarray:
    """The successors' rule (SCLIP's `postprocess_result`), on numpy score maps [Q, H, W]
    whose first `background_count` queries are background words -> labels [H, W], 0 =
    background, k = the k-th other query. Softmax of logit_scale x the scores over all
    queries; background's probability is the best of its words'; with `area_threshold`,
    a class whose argmax area is not over area_threshold x the foreground area (pixels whose
    argmax is not background) is zeroed; then argmax, and background where the best remaining
    probability is under `prob_threshold`."""
    probs = (torch.from_numpy(scores).float() * logit_scale).softmax(dim=0)
    classes = torch.cat([probs[:background_count].amax(0, keepdim=True), probs[background_count:]])
    if area_threshold is not None:
        counts = torch.bincount(classes.argmax(0).flatten(), minlength=len(classes))[1:]
        keep = (counts > area_threshold * counts.sum()).to(classes.dtype)
        classes[1:] *= keep[:, None, None]
    best, labels = classes.max(dim=0)
    labels[best < prob_threshold] = 0
    return labels.numpy()


class Segmentation:
    """Semantic segmentation mIoU over all classes.

    With a background class (class 0), background is where the softmax over the other
    classes stays under the threshold (paper's VOC protocol: VOC21); a second figure,
    "mIoU_no_background", takes the argmax over the other classes and ignores background
    pixels (the VOC20 figure of later papers). Without one, plain argmax (Context59).

    The successors' rule instead (`background_queries`, see `background_queries_labels`):
    background is asked as words alongside the classes, with `background_threshold` their
    prob_thd and `area_threshold` their area_thd. `logit_scale` replaces the predictor's
    (CLIP's) in the softmax.
    """

    name = "segmentation"

    def __init__(
        self,
        class_names: Sequence[str],
        background: bool,
        background_threshold: float = DEFAULT_BACKGROUND_THRESHOLD,
        *,
        logit_scale: Optional[float] = None,
        background_queries: Optional[Sequence[str]] = None,
        area_threshold: Optional[float] = None,
    ):
        self.class_names = list(class_names)
        self.background = background
        self.threshold = background_threshold
        self.logit_scale = logit_scale
        if not background and (background_queries or area_threshold is not None):
            raise ValueError("background words and an area threshold need a background class")
        # A class is not its own background: a word that is also a class name is dropped.
        self.background_queries = [
            q for q in background_queries or [] if q not in self.class_names[1:]
        ]
        self.area_threshold = area_threshold
        self.queries = self.class_names[1:] if background else self.class_names
        self.matrix = ConfusionMatrix(self.class_names)
        self.foreground = ConfusionMatrix(self.queries) if background else None

    def update(self, sample: Sample, predictor: Predictor) -> None:
        labels = sample.labels
        words = self.background_queries
        scores = predictor.scores(sample.image, words + self.queries, labels.shape)
        scale = predictor.logit_scale if self.logit_scale is None else self.logit_scale
        if not self.background:
            self.matrix.update(scores.argmax(0), labels)
            return
        if words:
            predicted = background_queries_labels(
                scores, scale, len(words), self.threshold, self.area_threshold
            )
            scores = scores[len(words) :]
        else:
            predicted = threshold_background(scores, scale, self.threshold)
        self.matrix.update(predicted, labels)
        fg_labels = np.where((labels == 0) | (labels == IGNORE_INDEX), IGNORE_INDEX, labels - 1)
        self.foreground.update(scores.argmax(0), fg_labels)

    def summary(self) -> dict:
        out = self.matrix.summary()
        if self.foreground is not None:
            fg = self.foreground.summary()
            out["mIoU_no_background"] = fg["mIoU"]
            out["per_class_IoU_no_background"] = fg["per_class_IoU"]
        return out


class ClassLocalisation:
    """Per class present in an image: query it alone, point at the heatmap's argmax and
    threshold the min-max heatmap; scored against the class's mask."""

    name = "localisation"

    def __init__(
        self,
        class_names: Sequence[str],
        background: bool,
        mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    ):
        self.class_names = list(class_names)
        self.first = 1 if background else 0
        self.threshold = mask_threshold
        self.metric = Localisation()

    def update(self, sample: Sample, predictor: Predictor) -> None:
        labels = sample.labels
        present = [int(k) for k in np.unique(labels) if self.first <= k != IGNORE_INDEX]
        if not present:
            return
        scores = predictor.scores(
            sample.image, [self.class_names[k] for k in present], labels.shape
        )
        for k, heat in zip(present, min_max(scores)):
            self.metric.update(heat, labels == k, self.threshold)

    def summary(self) -> dict:
        return self.metric.summary()


class PointLabels:
    """OpenImages V7: per positive class of an image, min-max heatmap > threshold decides
    each of that class's yes/no points; IoU per class over the data set, then the mean."""

    name = "points"

    def __init__(self, mask_threshold: float = DEFAULT_MASK_THRESHOLD):
        self.threshold = mask_threshold
        self.metric = PointIoU()

    def update(self, sample: Sample, predictor: Predictor) -> None:
        height, width = sample.image.shape[:2]
        classes = sorted({p.class_name for p in sample.points if p.positive})
        if not classes:
            return
        heat = min_max(predictor.scores(sample.image, classes, (height, width)))
        for name, h in zip(classes, heat):
            pts = [p for p in sample.points if p.class_name == name]
            cols = np.clip((np.array([p.x for p in pts]) * width).astype(int), 0, width - 1)
            rows = np.clip((np.array([p.y for p in pts]) * height).astype(int), 0, height - 1)
            self.metric.update(
                name, h[rows, cols] > self.threshold, np.array([p.positive for p in pts])
            )

    def summary(self) -> dict:
        return self.metric.summary()


class ClassPresence:
    """Is each class there? Every class (but a background class 0) is asked in every image;
    a class is present where any of its pixels is labelled. Scores the presence confidence
    (AUROC), the found decision at the threshold in use (precision, recall, F1) and, on
    present classes, pointing (the peak inside the class's pixels, found or not: today's
    pointing figure).

    asking "all": the classes are asked together (in groups of at most MAX_QUERIES);
    "single": one class per call, as a robot asking for one thing (with the background
    prompts as its only rivals).
    """

    name = "presence"
    ASKING = PRESENCE_ASKING

    def __init__(self, class_names: Sequence[str], background: bool, asking: str = "all"):
        if asking not in self.ASKING:
            raise ValueError(f"asking must be one of {self.ASKING}, got {asking!r}")
        self.first = 1 if background else 0
        self.queries = list(class_names)[self.first :]
        self.group = MAX_QUERIES if asking == "all" else 1
        self.metric = Presence()

    def update(self, sample: Sample, predictor: Predictor) -> None:
        labels = sample.labels
        for start in range(0, len(self.queries), self.group):
            queries = self.queries[start : start + self.group]
            for k, det in enumerate(predictor.locate(sample.image, queries), self.first + start):
                pixels = labels == k
                self.metric.update(
                    present=bool(pixels.any()),
                    confidence=det.confidence,
                    found=det.found,
                    hit=bool(pixels[det.peak_y, det.peak_x]),
                )

    def summary(self) -> dict:
        return self.metric.summary()
