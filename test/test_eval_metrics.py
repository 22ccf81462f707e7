"""The metrics on hand-worked examples."""

import math

import numpy as np
import pytest

from gem_ros.eval.metrics import ConfusionMatrix, Localisation, PointIoU


def test_confusion_matrix_miou_by_hand():
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2], [2, 2, 0, 1]])
    cm = ConfusionMatrix(["a", "b", "c"])
    cm.update(pred, labels)
    # a: 3 hit of 4, no false positive -> 3/4; b: 3 of 4 plus one from a -> 3/5;
    # c: 2 of 2 plus one from b -> 2/3. The ignored pixels count nowhere.
    assert cm.iou() == pytest.approx([3 / 4, 3 / 5, 2 / 3])
    assert cm.miou() == pytest.approx((3 / 4 + 3 / 5 + 2 / 3) / 3)
    assert cm.pixel_accuracy() == pytest.approx(8 / 10)


def test_confusion_matrix_leaves_unseen_classes_out_and_counts_false_ones():
    cm = ConfusionMatrix(["a", "b", "c"])
    cm.update(np.array([0, 0, 1]), np.array([0, 0, 0]))
    iou = cm.iou()
    assert iou[0] == pytest.approx(2 / 3)
    assert iou[1] == 0.0  # predicted but never present: a false class, counted
    assert math.isnan(iou[2])  # neither present nor predicted: not in the mean
    assert cm.miou() == pytest.approx((2 / 3 + 0) / 2)
    assert cm.summary()["per_class_IoU"]["c"] is None


def test_confusion_matrix_accumulates_and_rejects_bad_values():
    cm = ConfusionMatrix(["a", "b"])
    cm.update(np.array([0, 1]), np.array([0, 1]))
    cm.update(np.array([1]), np.array([0]))
    assert cm.iou() == pytest.approx([1 / 2, 1 / 2])
    with pytest.raises(ValueError, match="label values"):
        cm.update(np.array([0]), np.array([2]))
    with pytest.raises(ValueError, match="differ"):
        cm.update(np.array([0, 1]), np.array([0]))


def test_point_iou_per_class_over_the_data_set():
    m = PointIoU()
    m.update("cat", [True, True, False, True], [True, True, True, False])  # TP 2, FN 1, FP 1
    m.update("cat", [True], [True])  # another image: TP 1
    m.update("dog", [False, False], [False, False])  # only true negatives: undefined
    m.update("cow", [False], [True])  # FN 1
    assert m.iou() == pytest.approx({"cat": 3 / 5, "cow": 0.0})
    assert m.miou() == pytest.approx(0.3)


def test_localisation_pointing_and_thresholded_iou():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    heat = np.zeros((4, 4))
    heat[0, 0], heat[0, 1], heat[2, 2] = 1.0, 0.9, 0.6  # peak inside; one false pixel
    m = Localisation()
    m.update(heat, mask, threshold=0.5)
    m.update(1.0 - heat, mask, threshold=0.5)  # peak outside, most of the map "on"
    s = m.summary()
    assert s["pointing_accuracy"] == 0.5
    # first: 2 of 4 object pixels plus one outside -> 2/5; second: > 0.5 everywhere except
    # the three pixels set above -> 13 on, 2 of them in the mask -> 2/15.
    assert s["mIoU"] == pytest.approx((2 / 5 + 2 / 15) / 2)
    assert s["queries"] == 2
