#!/usr/bin/env python3
"""Draw the README's overlay examples (docs/overlay-*.png) with the shipped scene CLIP.

    python scripts/overlay_examples.py

A 224 px scene (drawn enlarged, as every frame under 480 px) with a coincident pair of
labels and two absent queries, and a 1280x720 frame; stored with a 64-colour palette so
they stay small.
"""

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import gem_ros.gem as gem  # noqa: E402
from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS  # noqa: E402
from gem_ros.eval.scenes import generate_scene  # noqa: E402
from gem_ros.overlay import draw_overlay  # noqa: E402


def save(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).quantize(64).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    model = gem.load_model(str(SCENE_MODEL), str(SCENE_WEIGHTS), device="cpu", input_size=224)
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    scene = generate_scene(np.random.default_rng(3))  # pink ring, orange, red cross
    queries = ["red", "red shape", "orange", "pink", "purple hexagon", "blue"]
    save(draw_overlay(scene.image, model.locate(scene.image, queries)), docs / "overlay-224.png")
    wide = np.concatenate(
        [generate_scene(np.random.default_rng(seed), size=720).image for seed in (5, 8)], axis=1
    )
    wide = cv2.resize(wide, (1280, 720), interpolation=cv2.INTER_AREA)
    queries = ["red", "green", "yellow", "blue", "purple", "pink", "orange", "a chair"]
    save(draw_overlay(wide, model.locate(wide, queries)), docs / "overlay-1280x720.png")


if __name__ == "__main__":
    main()
