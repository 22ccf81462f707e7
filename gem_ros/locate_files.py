"""The files `gem-ros locate -o OUT` writes, planned and checked before the model runs.

OUT may hold other files (the photos themselves, say): locate writes only paths that are
free or that a previous `gem-ros locate` wrote there, which its results.json lists under
"files" (results.json starts with its format's name: gem_ros.owned_files). Anything else at
a planned path, two images that would write the same names, or an OUT that is not a folder
refuses the whole run before anything is written, naming the paths.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from .owned_files import PathRefused, ours, write_atomically

FORMAT = "gem_ros locate"
SIGNATURES = (b'{\n "format": "gem_ros locate"',)  # json.dumps(..., indent=1)
RESULTS = "results.json"


def slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")[:40] or "query"


def image_outputs(image: Path, queries: Sequence[str]) -> list[str]:
    """The names one image's outputs get: its overlay, then one mask per query."""
    names = [f"{image.stem}_overlay.png"]
    names += [f"{image.stem}_mask_{k}_{slug(q)}.png" for k, q in enumerate(queries)]
    return names


def previous_files(out_dir: Path) -> set[str]:
    """The names a previous locate wrote into `out_dir` (its results.json), if it is ours."""
    results = out_dir / RESULTS
    if not ours(results, SIGNATURES):
        return set()
    try:
        return set(json.loads(results.read_text()).get("files", []))
    except (OSError, ValueError, TypeError, AttributeError):
        return set()  # ours but damaged: it may be rewritten, its PNGs are not known


def check_outputs(out_dir: Path, images: Sequence[Path], queries: Sequence[str]) -> set[str]:
    """PathRefused unless every output of `images` may be written into `out_dir`; else the
    names a previous run wrote there (kept listed in the next results.json)."""
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise PathRefused(f"-o {out_dir} is not a folder: name a folder; nothing was written")
    written_by = {}
    for image in images:
        for name in image_outputs(image, queries):
            if name in written_by and written_by[name] != image:
                raise PathRefused(
                    f"{written_by[name]} and {image} would both write {out_dir / name}: "
                    "label images of the same name into separate folders; nothing was written"
                )
            written_by[name] = image
    if not out_dir.is_dir():
        return set()
    previous = previous_files(out_dir)
    results = out_dir / RESULTS
    blocked = [results] if os.path.lexists(results) and not ours(results, SIGNATURES) else []
    blocked += [
        out_dir / name
        for name in written_by
        if os.path.lexists(out_dir / name) and (name not in previous or _not_a_file(out_dir / name))
    ]
    if blocked:
        shown = ", ".join(str(p) for p in blocked[:5])
        more = f" and {len(blocked) - 5} more" if len(blocked) > 5 else ""
        raise PathRefused(
            f"-o {out_dir} already holds {shown}{more}, which gem-ros locate did not write: "
            "choose another folder, or move them; nothing was written"
        )
    return {name for name in previous if (out_dir / name).is_file()}


def _not_a_file(path: Path) -> bool:
    return path.is_symlink() or not path.is_file()


def write_results(out_dir: Path, settings: dict, images: dict, files: set[str]) -> None:
    """results.json: the format's name first, then the settings, each image's results and
    every file locate wrote into the folder (this run's and the earlier runs')."""
    content = {"format": FORMAT, "settings": settings, "images": images, "files": sorted(files)}
    text = json.dumps(content, indent=1, ensure_ascii=False)
    write_atomically(Path(out_dir) / RESULTS, text, SIGNATURES)
