"""Evaluation data sets in their usual folder layouts, read as `Sample`s.

Label maps are integer arrays with 255 = ignore. A data set whose first class is
"background" has it predicted by thresholding (see `protocols`), not by a text query.

Layouts:
- VOC 2012 (`voc`): <root>/JPEGImages/*.jpg, <root>/SegmentationClass/*.png (palette PNGs,
  0 = background, 1..20 the classes, 255 = void/ignore), <root>/ImageSets/Segmentation/val.txt.
  <root> is VOCdevkit/VOC2012 (or a folder holding VOCdevkit/VOC2012 or VOC2012).
- PASCAL Context 59 (`context59`): MMSegmentation's converted layout, <root>/JPEGImages,
  <root>/SegmentationClassContext/*.png with 0 = background (not one of the 59) and 1..59
  the classes, <root>/ImageSets/SegmentationContext/val.txt; read with MMSeg's
  `reduce_zero_label`: 0 -> 255 (ignored), k -> k - 1, so the 59 classes are 0..58.
- OpenImages V7 points (`openimages`): the official point-label CSV
  (oidv7-val-annotations-point-labels.csv: ImageId, X, Y, Label, EstimatedYesNo, ...;
  X, Y normalised to [0, 1]), the class-description CSV (LabelName -> DisplayName, with or
  without its header) and a folder of <ImageId>.jpg images. "unsure" points are dropped.
- A generic directory (`directory`): <root>/images/<name>.(jpg|png),
  <root>/labels/<name>.png (value k = line k of <root>/classes.txt, 255 = ignore).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from ..images import read_rgb
from . import scenes as scene_gen
from .metrics import IGNORE_INDEX

# The names as prompts read best ("potted plant", not "pottedplant").
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tv monitor",
)
CONTEXT59_CLASSES = (
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "potted plant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tv monitor",
    "wall",
    "water",
    "window",
    "wood",
)
BACKGROUND = "background"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Point:
    class_name: str
    x: float  # normalised to [0, 1] of the image width
    y: float
    positive: bool


@dataclass
class Sample:
    name: str
    image: np.ndarray  # RGB uint8 [H, W, 3]
    labels: Optional[np.ndarray] = None  # int [H, W], 255 = ignore
    points: list[Point] = field(default_factory=list)


class DatasetError(RuntimeError):
    """A data set folder or file is missing or not in the expected layout."""


def read_labels(path: Path) -> np.ndarray:
    """Label values of a PNG (palette indices for palette PNGs, as VOC stores them)."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16"):
            raise DatasetError(f"{path}: label PNG must be single-channel, got mode {img.mode}")
        return np.asarray(img).astype(np.int64)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    return path


def _read_list(path: Path) -> list[str]:
    return [
        line.strip()
        for line in _require(path, "list file").read_text().splitlines()
        if line.strip()
    ]


def _limit(names: list[str], limit: Optional[int]) -> list[str]:
    return names if limit is None else names[:limit]


class SegmentationDataset:
    """Images + label maps; `background` is true when class 0 is the background."""

    def __init__(
        self,
        name: str,
        class_names: Sequence[str],
        items: list[tuple[str, Path, Path]],
        label_transform=None,
    ):
        self.name = name
        self.class_names = list(class_names)
        self.background = self.class_names[0].lower() == BACKGROUND
        self.items = items
        self.label_transform = label_transform

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        for stem, image_path, label_path in self.items:
            labels = read_labels(label_path)
            if self.label_transform is not None:
                labels = self.label_transform(labels)
            yield Sample(stem, read_rgb(image_path), labels)


def _voc_root(root: Path, year: str) -> Path:
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetError(
        f"no JPEGImages folder in {root} (nor in VOC{year}/ or VOCdevkit/VOC{year}/ under it)"
    )


def voc(
    root: Path,
    split: str = "val",
    limit: Optional[int] = None,
    class_names: Sequence[str] = VOC_CLASSES,
) -> SegmentationDataset:
    base = _voc_root(Path(root), "2012")
    names = _limit(_read_list(base / "ImageSets" / "Segmentation" / f"{split}.txt"), limit)
    items = [
        (
            n,
            _require(base / "JPEGImages" / f"{n}.jpg", "image"),
            _require(base / "SegmentationClass" / f"{n}.png", "label map"),
        )
        for n in names
    ]
    return SegmentationDataset("voc", class_names, items)


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """MMSegmentation's reduce_zero_label: 0 -> ignore, k -> k - 1, ignore stays ignore."""
    out = labels - 1
    out[(labels == 0) | (labels == IGNORE_INDEX)] = IGNORE_INDEX
    return out


def context59(
    root: Path,
    split: str = "val",
    limit: Optional[int] = None,
    class_names: Sequence[str] = CONTEXT59_CLASSES,
) -> SegmentationDataset:
    base = _voc_root(Path(root), "2010")
    names = _limit(_read_list(base / "ImageSets" / "SegmentationContext" / f"{split}.txt"), limit)
    items = [
        (
            n,
            _require(base / "JPEGImages" / f"{n}.jpg", "image"),
            _require(base / "SegmentationClassContext" / f"{n}.png", "label map"),
        )
        for n in names
    ]
    return SegmentationDataset("context59", class_names, items, reduce_zero_label)


def read_class_names(path: Path) -> list[str]:
    names = _read_list(_require(Path(path), "class-name list"))
    if not names:
        raise DatasetError(f"{path} lists no classes")
    return names


def directory(
    root: Path, limit: Optional[int] = None, class_names: Optional[Sequence[str]] = None
) -> SegmentationDataset:
    root = Path(root)
    names = list(class_names) if class_names else read_class_names(root / "classes.txt")
    label_dir = _require(root / "labels", "labels folder")
    images = {
        p.stem: p
        for p in _require(root / "images", "images folder").iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
    }
    items = []
    for label_path in sorted(label_dir.glob("*.png")):
        if label_path.stem not in images:
            raise DatasetError(f"no image for label map {label_path} in {root / 'images'}")
        items.append((label_path.stem, images[label_path.stem], label_path))
    if not items:
        raise DatasetError(f"no label PNGs in {label_dir}")
    return SegmentationDataset("directory", names, _limit(items, limit))


def read_openimages_classes(path: Path) -> dict[str, str]:
    """LabelName (MID) -> DisplayName from the class-description CSV (header optional)."""
    mapping = {}
    with open(_require(Path(path), "class-description CSV"), newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0] != "LabelName":
                mapping[row[0]] = row[1]
    return mapping


def _column(header: Sequence[str], *names: str) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise DatasetError(f"point-label CSV has no column {' / '.join(names)} (header: {header})")


def read_openimages_points(path: Path, class_names: dict[str, str]) -> dict[str, list[Point]]:
    """ImageId -> its yes/no points, classes as display names."""
    points: dict[str, list[Point]] = defaultdict(list)
    with open(_require(Path(path), "point-label CSV"), newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        i_id = _column(header, "ImageId", "ImageID")
        i_x, i_y = _column(header, "X"), _column(header, "Y")
        i_label = _column(header, "Label", "LabelName")
        i_yes = _column(header, "EstimatedYesNo")
        for row in reader:
            answer = row[i_yes].strip().lower()
            if answer not in ("yes", "no"):
                continue  # unsure
            mid = row[i_label]
            points[row[i_id]].append(
                Point(class_names.get(mid, mid), float(row[i_x]), float(row[i_y]), answer == "yes")
            )
    return points


class OpenImagesPoints:
    name = "openimages"
    background = False

    def __init__(
        self, points_csv: Path, classes_csv: Path, image_dir: Path, limit: Optional[int] = None
    ):
        image_dir = _require(Path(image_dir), "image folder")
        by_image = read_openimages_points(points_csv, read_openimages_classes(classes_csv))
        available = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        # Only images with at least one positive point are evaluated (their positive classes
        # are the queries); the CSV may cover more images than the folder holds.
        wanted = sorted(i for i, pts in by_image.items() if any(p.positive for p in pts))
        self.missing_images = sum(1 for i in wanted if i not in available)
        self.items = _limit(
            [(i, available[i], by_image[i]) for i in wanted if i in available], limit
        )
        if not self.items:
            raise DatasetError(
                f"none of the {len(wanted)} images with positive points is in {image_dir}"
            )
        self.class_names = sorted({p.class_name for _, _, pts in self.items for p in pts})

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        for image_id, path, pts in self.items:
            yield Sample(image_id, read_rgb(path), points=pts)


class GeneratedScenes:
    """Procedural scenes (see `scenes`) made on the fly from a seed: exact masks, and
    class names that are colours or '<colour> <shape>'; `size` is a square side or
    (width, height)."""

    name = "scenes"
    background = True

    def __init__(
        self,
        seed: int = 1000,
        count: int = 300,
        size: int | tuple[int, int] = 224,
        vocabulary: str = "colour-shape",
        objects: tuple[int, int] = (1, 3),
        radii: tuple[float, float] = (0.09, 0.2),
    ):
        self.seed, self.count, self.size, self.vocabulary = seed, count, size, vocabulary
        self.objects, self.radii = objects, radii
        self.class_names = [BACKGROUND] + scene_gen.vocabulary(vocabulary)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Sample]:
        scenes = scene_gen.generate_scenes(
            self.seed,
            self.count,
            self.size,
            min_objects=self.objects[0],
            max_objects=self.objects[1],
            radii=self.radii,
        )
        for i, scene in enumerate(scenes):
            labels = scene_gen.label_map(scene, self.class_names[1:], self.vocabulary)
            yield Sample(f"scene{i:05d}", scene.image, labels.astype(np.int64))


def write_directory(dataset, out: Path) -> int:
    """Write any labelled data set in the generic directory layout; returns the image count."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(dataset.class_names) + "\n")
    count = 0
    for sample in dataset:
        Image.fromarray(sample.image).save(out / "images" / f"{sample.name}.png")
        Image.fromarray(sample.labels.astype(np.uint8)).save(out / "labels" / f"{sample.name}.png")
        count += 1
    return count


def write_bag(dataset, path: Path, topic: str = "/camera/image_raw", rate_hz: float = 10.0) -> int:
    """The images of a data set as a recorded camera: a rosbag2 bag (MCAP) of rgb8
    sensor_msgs/Image on `topic` at `rate_hz`, frame id camera_optical_frame (for `gem-ros
    bag`). Serialised by rosbags, so no ROS installation is needed. Returns the frame count."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    Image_, Header, Time = (
        store.types["sensor_msgs/msg/Image"],
        store.types["std_msgs/msg/Header"],
        store.types["builtin_interfaces/msg/Time"],
    )
    count = 0
    with Writer(Path(path), version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for sample in dataset:
            image = np.ascontiguousarray(sample.image, dtype=np.uint8)
            nanoseconds = int(count * 1e9 / rate_hz)
            stamp = Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9)
            msg = Image_(
                header=Header(stamp=stamp, frame_id="camera_optical_frame"),
                height=image.shape[0],
                width=image.shape[1],
                encoding="rgb8",
                is_bigendian=0,
                step=image.shape[1] * 3,
                data=image.reshape(-1),
            )
            raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
            writer.write(connection, nanoseconds, raw)
            count += 1
    return count
