"""Procedural scenes of simple coloured shapes with exact masks and names.

Used twice: to train the small CLIP in ``scripts/train_small_clip.py`` and as a
benchmark whose ground truth is exact. Everything is drawn from a seeded
``numpy.random.Generator`` so a seed fixes the whole data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np

# Saturated colours that stay apart in hue; backgrounds are kept low-saturation so
# colour words always refer to the objects.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (235, 215, 30),
    "green": (40, 170, 50),
    "blue": (35, 70, 220),
    "purple": (135, 45, 185),
    "pink": (240, 110, 190),
}
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
)


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    mask: np.ndarray  # bool [H, W]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    objects: tuple[SceneObject, ...]


def _polygon(
    cx: float, cy: float, radius: float, angles: np.ndarray, radii: np.ndarray | None = None
) -> np.ndarray:
    r = radius if radii is None else radius * radii
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


def scene_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a scene side `size` or a (width, height) pair."""
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    if width < 16 or height < 16:
        raise ValueError(f"a scene needs at least 16x16 pixels, got {width}x{height}")
    return int(width), int(height)


def draw_shape_mask(
    shape: str,
    size: int | tuple[int, int],
    cx: float,
    cy: float,
    radius: float,
    rotation: float,
) -> np.ndarray:
    """Binary mask (bool [height, width]; `size` is a side or (width, height)) of one shape
    centred at (cx, cy)."""
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    canvas = np.zeros((height, width), np.uint8)
    if shape == "circle":
        cv2.circle(canvas, (round(cx), round(cy)), round(radius), 1, -1, cv2.LINE_8)
    elif shape == "ring":
        cv2.circle(canvas, (round(cx), round(cy)), round(radius), 1, -1, cv2.LINE_8)
        cv2.circle(canvas, (round(cx), round(cy)), round(radius * 0.55), 0, -1, cv2.LINE_8)
    elif shape == "cross":
        # Two bars of a third of the extent, rotated together.
        w = radius / 3.0
        corners = np.array([[-radius, -w], [radius, -w], [radius, w], [-radius, w]])
        for quarter in (0.0, math.pi / 2):
            a = rotation + quarter
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            pts = corners @ rot.T + (cx, cy)
            cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    else:
        if shape == "square":
            angles, radii = rotation + np.arange(4) * math.pi / 2 + math.pi / 4, None
        elif shape == "diamond":
            # A rhombus: long vertical axis, so it differs from a rotated square.
            angles = rotation + np.arange(4) * math.pi / 2
            radii = np.array([0.6, 1.0, 0.6, 1.0])
        elif shape == "triangle":
            angles, radii = rotation + np.arange(3) * 2 * math.pi / 3, None
        elif shape == "hexagon":
            angles, radii = rotation + np.arange(6) * math.pi / 3, None
        elif shape == "star":
            angles = rotation + np.arange(10) * math.pi / 5
            radii = np.tile([1.0, 0.45], 5)
        else:
            raise ValueError(f"unknown shape {shape!r}")
        cv2.fillPoly(canvas, [_polygon(cx, cy, radius, angles, radii)], 1)
    return canvas.astype(bool)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-saturation textured background: grey tint, gradient, blotches, noise."""
    base = rng.uniform(60, 200)
    tint = rng.uniform(-12, 12, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width  # the gradient spans the frame on both axes
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(-50, 50)
    coarse = cv2.resize(
        rng.normal(0, 18, (6, 6)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    img = base + gradient[..., None] + coarse[..., None] + tint
    img = img + rng.normal(0, rng.uniform(2, 10), (height, width, 1))
    return img


def generate_scene(
    rng: np.random.Generator,
    size: int | tuple[int, int] = 224,
    min_objects: int = 1,
    max_objects: int = 3,
    distinct_colours: bool = True,
    radii: tuple[float, float] = (0.09, 0.2),
) -> Scene:
    """One scene of non-overlapping shapes; with ``distinct_colours`` a colour names
    at most one object, so a colour query has a single right answer. ``size`` is the side of a
    square scene or (width, height). Shapes have a radius in ``radii`` (low, high) times the
    shorter side: on a square scene the default gives objects of 2 to 12% of the image
    (circles), (0.04, 0.08) small ones of 0.5 to 2%; ``min_objects=0`` allows empty scenes.
    A square scene of a seed is the same whether its size is given as N or (N, N)."""
    width, height = scene_size(size)
    side = min(width, height)
    count = int(rng.integers(min_objects, max_objects + 1))
    colour_names = list(COLOURS)
    colours = (
        rng.choice(len(colour_names), count, replace=False)
        if distinct_colours
        else rng.integers(0, len(colour_names), count)
    )
    image = _background(rng, width, height)
    occupied = np.zeros((height, width), bool)
    objects: list[SceneObject] = []
    for colour_index in colours:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        for _ in range(50):
            radius = rng.uniform(*radii) * side
            margin = radius + 2
            cx, cy = rng.uniform(margin, (width - margin, height - margin))
            mask = draw_shape_mask(
                shape, (width, height), cx, cy, radius, rng.uniform(0, 2 * math.pi)
            )
            grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            if not (grown & occupied).any():
                break
        else:
            continue  # no free room left for this object
        occupied |= mask
        name = colour_names[int(colour_index)]
        rgb = np.array(COLOURS[name], np.float32) + rng.uniform(-15, 15, 3)
        # Shading across the object so colour is not one flat value.
        shade = 1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, width)[None, :]
        image[mask] = rgb[None, :] * np.broadcast_to(shade, mask.shape)[mask][:, None]
        objects.append(SceneObject(name, shape, mask))
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return Scene(image, tuple(objects))


def generate_scenes(
    seed: int, count: int, size: int | tuple[int, int] = 224, **kwargs
) -> Iterator[Scene]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield generate_scene(rng, size, **kwargs)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption listing every object in random order.

    A quarter of captions say "<colour> shape" instead of the shape's name, so a
    colour-only query ("a photo of a red shape.") is in the training distribution.
    """
    order = rng.permutation(len(scene.objects))
    generic = rng.random() < 0.25
    names = [
        f"{scene.objects[i].colour} shape" if generic else scene.objects[i].name for i in order
    ]
    if not names:
        return "a photo of a plain background."
    names = [("an " if n[0] in "aeiou" else "a ") + n for n in names]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"a photo of {listed}." if rng.random() < 0.5 else f"{listed}."


def vocabulary(kind: str) -> list[str]:
    """Class names of the scene benchmark: ``colour`` (7) or ``colour-shape`` (56)."""
    if kind == "colour":
        return list(COLOURS)
    if kind == "colour-shape":
        return [f"{c} {s}" for c in COLOURS for s in SHAPES]
    raise ValueError(f"unknown scene vocabulary {kind!r}")


def label_map(scene: Scene, classes: Sequence[str], kind: str) -> np.ndarray:
    """uint8 [H, W]: 0 = background, k + 1 = ``classes[k]``."""
    labels = np.zeros(scene.image.shape[:2], np.uint8)
    for obj in scene.objects:
        name = obj.colour if kind == "colour" else obj.name
        labels[obj.mask] = classes.index(name) + 1
    return labels
