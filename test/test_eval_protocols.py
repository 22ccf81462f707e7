"""Each data set layout, written tiny by the test, read back and scored through its
protocol with predictors whose figures are known: an oracle (100) and crafted partial ones.

The test images carry their ground truth in the red channel (the label value of each
pixel), so a predictor that sees only the image can be an oracle.
"""

import csv

import numpy as np
import pytest
from PIL import Image

from gem_ros.eval import datasets, protocols
from gem_ros.eval.runner import evaluate

# Labels of the segmentation tests: background 0, cat 1, dog 2, ignore 255.
LABELS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 255, 255]], np.uint8)


def encode(labels: np.ndarray) -> np.ndarray:
    image = np.zeros((*labels.shape, 3), np.uint8)
    image[..., 0] = labels
    return image


class CodePredictor:
    """Scores 1 where the image's red channel holds one of the codes given for the query
    (an int or a tuple of ints), else 0; `override` replaces some queries' codes."""

    def __init__(self, codes: dict, logit_scale: float = 100.0, override: dict | None = None):
        self.codes = {**codes, **(override or {})}
        self.logit_scale = logit_scale
        self.asked = []

    def scores(self, image, queries, size):
        self.asked.append(list(queries))
        red = np.asarray(Image.fromarray(image[..., 0]).resize(size[::-1], Image.NEAREST))
        return np.stack([np.isin(red, self.codes[q]).astype(np.float32) for q in queries])


VOC_CODES = {name: i for i, name in enumerate(datasets.VOC_CLASSES)}


def write_voc(root, labels_list):
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    names = []
    for i, labels in enumerate(labels_list):
        name = f"2007_{i:06d}"
        # JPEG would blur the codes; a PNG under the .jpg name reads back exactly.
        Image.fromarray(encode(labels)).save(base / "JPEGImages" / f"{name}.jpg", format="PNG")
        png = Image.fromarray(labels, mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (252 * 3) + [224, 224, 192])
        png.save(base / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    return root


def voc_labels() -> np.ndarray:
    # VOC codes: cat 8, dog 12.
    return np.where(LABELS == 1, 8, np.where(LABELS == 2, 12, LABELS)).astype(np.uint8)


def test_voc_layout_reads_palette_indices(tmp_path):
    ds = datasets.voc(write_voc(tmp_path, [voc_labels()]))
    (sample,) = list(ds)
    assert ds.background and len(ds.class_names) == 21
    np.testing.assert_array_equal(sample.labels, voc_labels())
    assert sample.image.shape == (4, 4, 3)


def test_voc_oracle_scores_100_on_voc21_and_voc20(tmp_path):
    ds = datasets.voc(write_voc(tmp_path, [voc_labels(), voc_labels()[::-1]]))
    protocol = protocols.Segmentation(ds.class_names, ds.background)
    result = evaluate(CodePredictor(VOC_CODES), ds, protocol, progress=False)
    assert result["mIoU"] == pytest.approx(1.0)
    assert result["mIoU_no_background"] == pytest.approx(1.0)
    assert result["images"] == 2
    assert result["per_class_IoU"]["cat"] == pytest.approx(1.0)
    assert result["per_class_IoU"]["bus"] is None  # absent classes are not averaged


def test_voc_partial_predictor_by_hand(tmp_path):
    ds = datasets.voc(write_voc(tmp_path, [voc_labels()]))
    # Every cat pixel is called dog: background 4/4, cat 0/4, dog 6/(6+4).
    predictor = CodePredictor(VOC_CODES, override={"cat": (), "dog": (8, 12)})
    result = evaluate(predictor, ds, protocols.Segmentation(ds.class_names, True), progress=False)
    assert result["mIoU"] == pytest.approx((1 + 0 + 0.6) / 3)
    # VOC20: background pixels ignored, argmax over the 20 classes: cat 0, dog 0.6.
    assert result["mIoU_no_background"] == pytest.approx(0.3)
    assert predictor.asked[0] == list(datasets.VOC_CLASSES[1:])  # no "background" query


def test_voc_background_threshold_on_the_softmax(tmp_path):
    ds = datasets.voc(write_voc(tmp_path, [voc_labels()]))
    # With logit scale 1 the best class gets e / (e + 19) < 0.8: everything is background,
    # so background IoU 4/14 (14 pixels not ignored) and cat, dog 0.
    predictor = CodePredictor(VOC_CODES, logit_scale=1.0)
    result = evaluate(predictor, ds, protocols.Segmentation(ds.class_names, True), progress=False)
    assert result["mIoU"] == pytest.approx((4 / 14) / 3)
    lenient = protocols.Segmentation(ds.class_names, True, background_threshold=0.1)
    assert evaluate(predictor, ds, lenient, progress=False)["mIoU"] == pytest.approx(1.0)


def write_context(root, labels):
    base = root / "VOC2010"
    for sub in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (base / sub).mkdir(parents=True)
    Image.fromarray(encode(labels)).save(base / "JPEGImages/2008_000001.jpg", format="PNG")
    Image.fromarray(labels).save(base / "SegmentationClassContext/2008_000001.png")
    (base / "ImageSets/SegmentationContext/val.txt").write_text("2008_000001\n")
    return base


def test_context59_reduce_zero_label_oracle_and_partial(tmp_path):
    # Raw values: 0 = background (ignored), 1 = aeroplane, 5 = bench, 255 = ignore.
    raw = np.where(LABELS == 1, 1, np.where(LABELS == 2, 5, LABELS)).astype(np.uint8)
    ds = datasets.context59(write_context(tmp_path, raw))
    assert not ds.background and len(ds.class_names) == 59
    (sample,) = list(ds)
    expected = np.where(raw == 0, 255, np.where(raw == 255, 255, raw.astype(int) - 1))
    np.testing.assert_array_equal(sample.labels, expected)
    codes = {name: i + 1 for i, name in enumerate(datasets.CONTEXT59_CLASSES)}
    oracle = evaluate(
        CodePredictor(codes), ds, protocols.Segmentation(ds.class_names, False), progress=False
    )
    assert oracle["mIoU"] == pytest.approx(1.0)
    # Calling the bench pixels aeroplane: aeroplane 4/10, bench 0.
    partial = evaluate(
        CodePredictor(codes, override={"bench": (), "aeroplane": (1, 5)}),
        ds,
        protocols.Segmentation(ds.class_names, False),
        progress=False,
    )
    assert partial["mIoU"] == pytest.approx(0.2)


def write_openimages(root):
    """Two 10x10 images; the red channel codes cat 1, dog 2 regions."""
    images = root / "images"
    images.mkdir()
    a = np.zeros((10, 10), np.uint8)
    a[:, :5] = 1  # cat: left half
    a[:5, 5:] = 2  # dog: top right
    b = np.ones((10, 10), np.uint8)  # cat but for a corner (a flat map min-maxes to 0)
    b[0, 0] = 0
    Image.fromarray(encode(a)).save(images / "aaaa.jpg", format="PNG")
    Image.fromarray(encode(b)).save(images / "bbbb.jpg", format="PNG")
    with open(root / "classes.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["LabelName", "DisplayName"], ["/m/cat", "Cat"], ["/m/dog", "Dog"], ["/m/cow", "Cow"]]
        )
    rows = [  # ImageId, X, Y, Label, EstimatedYesNo, Source, YesVotes, NoVotes, UnsureVotes
        ("aaaa", 0.15, 0.15, "/m/cat", "yes"),
        ("aaaa", 0.35, 0.85, "/m/cat", "yes"),
        ("aaaa", 0.25, 0.55, "/m/cat", "no"),  # a "no" inside the cat region: a false positive
        ("aaaa", 0.75, 0.85, "/m/cat", "yes"),  # a "yes" outside it: a false negative
        ("aaaa", 0.95, 0.95, "/m/cat", "no"),  # true negative
        ("aaaa", 0.75, 0.25, "/m/cat", "unsure"),  # dropped
        ("aaaa", 0.65, 0.15, "/m/dog", "yes"),
        ("aaaa", 0.65, 0.85, "/m/dog", "no"),
        ("aaaa", 0.35, 0.35, "/m/cow", "no"),  # no positive cow point: cow is not queried
        ("bbbb", 0.55, 0.55, "/m/cat", "yes"),
        ("cccc", 0.55, 0.55, "/m/cat", "yes"),  # image not in the folder
    ]
    with open(root / "points.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "ImageId",
                "X",
                "Y",
                "Label",
                "EstimatedYesNo",
                "Source",
                "YesVotes",
                "NoVotes",
                "UnsureVotes",
                "QuestionId",
            ]
        )
        for image_id, x, y, label, answer in rows:
            w.writerow([image_id, x, y, label, answer, "ih", 1, 0, 0, "q"])
    return datasets.OpenImagesPoints(root / "points.csv", root / "classes.csv", images)


def test_openimages_points_read_and_scored_by_hand(tmp_path):
    ds = write_openimages(tmp_path)
    assert len(ds) == 2 and ds.missing_images == 1
    assert ds.class_names == ["Cat", "Cow", "Dog"]
    predictor = CodePredictor({"Cat": 1, "Dog": 2})
    result = evaluate(predictor, ds, protocols.PointLabels(), progress=False)
    # Cat: image a TP 2, FP 1, FN 1; image b TP 1 -> 3/5. Dog: TP 1, TN 1 -> 1.
    assert result["per_class_IoU"] == pytest.approx({"Cat": 0.6, "Dog": 1.0})
    assert result["mIoU"] == pytest.approx(0.8)
    assert predictor.asked == [["Cat", "Dog"], ["Cat"]]  # the positive classes only


def test_directory_layout_and_localisation(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    Image.fromarray(encode(LABELS)).save(tmp_path / "images/one.png")
    Image.fromarray(LABELS).save(tmp_path / "labels/one.png")
    ds = datasets.directory(tmp_path)
    assert ds.class_names == ["background", "cat", "dog"] and ds.background
    codes = {"cat": 1, "dog": 2}
    seg = evaluate(
        CodePredictor(codes), ds, protocols.Segmentation(ds.class_names, True), progress=False
    )
    assert seg["mIoU"] == pytest.approx(1.0)
    oracle = evaluate(
        CodePredictor(codes), ds, protocols.ClassLocalisation(ds.class_names, True), progress=False
    )
    assert (oracle["pointing_accuracy"], oracle["mIoU"], oracle["queries"]) == (1.0, 1.0, 2)
    # Asked for the cat, the predictor shows the dog: miss, IoU 0; the dog is right.
    swapped = evaluate(
        CodePredictor(codes, override={"cat": 2}),
        ds,
        protocols.ClassLocalisation(ds.class_names, True),
        progress=False,
    )
    assert (swapped["pointing_accuracy"], swapped["mIoU"]) == (0.5, 0.5)


def test_directory_errors_name_the_missing_piece(tmp_path):
    with pytest.raises(datasets.DatasetError, match="class-name list"):
        datasets.directory(tmp_path)
    (tmp_path / "classes.txt").write_text("a\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(LABELS).save(tmp_path / "labels/x.png")
    with pytest.raises(datasets.DatasetError, match="no image for label map"):
        datasets.directory(tmp_path)
    with pytest.raises(datasets.DatasetError, match="JPEGImages"):
        datasets.voc(tmp_path)


def _area_scores() -> np.ndarray:
    """Scores over 10x10 of [background word, cat, dog]: cat wins 50 pixels (the top half),
    dog 8 (the first 8 pixels of row 5), the background word the rest (42)."""
    scores = np.zeros((3, 10, 10), np.float32)
    scores[0] = 0.5
    scores[1, :5] = 1.0
    scores[2, 5, :8] = 1.0
    return scores


def test_area_threshold_is_a_share_of_the_foreground_area_not_of_the_image():
    # SCLIP's postprocess_result: dog's 8 pixels are 8% of the image but 13.8% of the
    # foreground (58 pixels), so area_thd 0.1 keeps it; at 0.15 it is dropped and its pixels
    # go to the next best class, the background word (cat scores 0 on row 5).
    scores = _area_scores()
    kept = protocols.background_queries_labels(scores, 10.0, 1, 0.0, area_threshold=0.1)
    assert (kept[5, :8] == 2).all() and (kept[:5] == 1).all() and (kept[6:] == 0).all()
    dropped = protocols.background_queries_labels(scores, 10.0, 1, 0.0, area_threshold=0.15)
    assert (dropped[5, :8] == 0).all() and (dropped[:5] == 1).all()
    # Without an area threshold nothing is dropped.
    plain = protocols.background_queries_labels(scores, 10.0, 1, 0.0)
    np.testing.assert_array_equal(plain, kept)


def test_prob_threshold_sends_unsure_pixels_to_background_and_words_take_their_best():
    scores = _area_scores()
    # Two background words: background's probability is the better one's.
    two = np.concatenate([scores[:1] - 1.0, scores])
    np.testing.assert_array_equal(
        protocols.background_queries_labels(two, 10.0, 2, 0.0),
        protocols.background_queries_labels(scores, 10.0, 1, 0.0),
    )
    # At logit scale 1 no class is sure: softmax of (1, 0.5, 0) is at most 0.5 < 0.6.
    unsure = protocols.background_queries_labels(scores, 1.0, 1, 0.6)
    assert (unsure == 0).all()
    sure = protocols.background_queries_labels(scores, 1.0, 1, 0.4)
    assert (sure[:5] == 1).all()


def test_segmentation_with_background_words_asks_them_first_and_uses_its_scale(tmp_path):
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 0, 0]], np.uint8)
    sample = datasets.Sample("s", encode(labels), labels.astype(np.int64))
    names = ["background", "cat", "dog"]
    # The predictor's own scale (1) leaves every pixel unsure at prob_thd 0.6 (softmax of
    # (1, 0, 0) is 0.58); the protocol's 20 makes the oracle sure.
    predictor = CodePredictor({"sky": 0, "cat": 1, "dog": 2, "background": 0}, logit_scale=1.0)
    seg = protocols.Segmentation(
        names, True, 0.6, logit_scale=20.0, background_queries=["sky", "cat"], area_threshold=0.1
    )
    seg.update(sample, predictor)
    assert predictor.asked == [["sky", "cat", "dog"]]  # 'cat' is a class, not background
    assert seg.summary()["mIoU"] == pytest.approx(1.0)
    unscaled = protocols.Segmentation(names, True, 0.6, background_queries=["sky"])
    unscaled.update(sample, predictor)
    assert unscaled.summary()["mIoU"] < 1.0
    with pytest.raises(ValueError, match="background class"):
        protocols.Segmentation(["cat", "dog"], False, background_queries=["sky"])
