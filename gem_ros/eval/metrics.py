"""Accumulating metrics over a data set; they take predictions, never a model.

- `ConfusionMatrix`: semantic segmentation mIoU with an ignore label, as MMSegmentation
  counts it (a class never in the ground truth nor predicted is left out of the mean).
- `PointIoU`: the OpenImages V7 point-label IoU: per class, over all images, the true
  positive, false positive and false negative points, IoU = TP / (TP + FP + FN).
- `Localisation`: per query, pointing (heatmap argmax inside the object's mask) and the
  IoU of the thresholded heatmap with the mask.
- `Presence`: per (image, class) asked, whether the class is there: AUROC of the confidence,
  precision, recall and F1 of the found decision, and pointing on the present ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE_INDEX = 255


class ConfusionMatrix:
    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE_INDEX):
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        n = len(self.class_names)
        self.matrix = np.zeros((n, n), np.int64)  # rows: ground truth, columns: prediction

    def update(self, prediction: np.ndarray, labels: np.ndarray) -> None:
        """prediction and labels: integer maps of one shape; labels may hold ignore_index."""
        if prediction.shape != labels.shape:
            raise ValueError(f"prediction {prediction.shape} and labels {labels.shape} differ")
        n = len(self.class_names)
        keep = labels != self.ignore_index
        gt = labels[keep].astype(np.int64)
        pred = prediction[keep].astype(np.int64)
        if gt.size and (gt.min() < 0 or gt.max() >= n):
            raise ValueError(f"label values outside 0..{n - 1} (and {self.ignore_index})")
        if pred.size and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"predicted values outside 0..{n - 1}")
        self.matrix += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        inter = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, inter / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self) -> dict:
        return {
            "mIoU": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "per_class_IoU": {
                name: (None if np.isnan(v) else float(v))
                for name, v in zip(self.class_names, self.iou())
            },
        }


class PointIoU:
    def __init__(self):
        self.counts: dict[str, np.ndarray] = {}  # class -> [TP, FP, FN]

    def update(self, class_name: str, predicted: np.ndarray, positive: np.ndarray) -> None:
        """predicted: bool per point (inside the predicted mask); positive: bool per point
        (the point's ground truth: yes / no)."""
        predicted, positive = np.asarray(predicted, bool), np.asarray(positive, bool)
        c = self.counts.setdefault(class_name, np.zeros(3, np.int64))
        c += [
            np.sum(predicted & positive),
            np.sum(predicted & ~positive),
            np.sum(~predicted & positive),
        ]

    def iou(self) -> dict[str, float]:
        return {
            name: float(tp / (tp + fp + fn))
            for name, (tp, fp, fn) in self.counts.items()
            if tp + fp + fn > 0
        }

    def miou(self) -> float:
        values = list(self.iou().values())
        return float(np.mean(values)) if values else float("nan")

    def summary(self) -> dict:
        return {"mIoU": self.miou(), "classes": len(self.iou()), "per_class_IoU": self.iou()}


class Localisation:
    def __init__(self):
        self.hits: list[bool] = []
        self.ious: list[float] = []

    def update(self, heatmap: np.ndarray, mask: np.ndarray, threshold: float) -> None:
        """heatmap: float [H, W], min-max normalised; mask: bool [H, W], the object."""
        if heatmap.shape != mask.shape:
            raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ")
        self.hits.append(bool(mask.flat[int(np.argmax(heatmap))]))
        predicted = heatmap > threshold
        union = np.sum(predicted | mask)
        self.ious.append(float(np.sum(predicted & mask) / union) if union else 0.0)

    def summary(self) -> dict:
        n = len(self.hits)
        return {
            "pointing_accuracy": float(np.mean(self.hits)) if n else float("nan"),
            "mIoU": float(np.mean(self.ious)) if n else float("nan"),
            "queries": n,
        }


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); NaN when
    one of the two classes is missing."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(group, ranks) / counts)[group]  # tied scores share their mean rank
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class Presence:
    def __init__(self):
        self.present: list[bool] = []
        self.confidence: list[float] = []
        self.found: list[bool] = []
        self.hits: list[bool] = []  # peak inside the class's pixels, present classes only

    def update(self, present: bool, confidence: float, found: bool, hit: bool = False) -> None:
        self.present.append(bool(present))
        self.confidence.append(float(confidence))
        self.found.append(bool(found))
        if present:
            self.hits.append(bool(hit))

    def summary(self) -> dict:
        present, found = np.array(self.present, bool), np.array(self.found, bool)
        tp = int((present & found).sum())
        precision = tp / found.sum() if found.any() else float("nan")
        recall = tp / present.sum() if present.any() else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        return {
            "AUROC": auroc(present, self.confidence),
            "F1": f1,
            "precision": precision,
            "recall": recall,
            "pointing_accuracy": float(np.mean(self.hits)) if self.hits else float("nan"),
            "present": int(present.sum()),
            "absent": int((~present).sum()),
        }
