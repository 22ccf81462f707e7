"""`gem-ros locate` and the overlay it draws (also the node's), with the tiny test model."""

import json

import numpy as np
import pytest
from file_trees import tree

import gem_ros.gem as gem
from gem_ros.overlay import draw_overlay, query_colours

from tiny_model import CONFIG, WEIGHTS
from tiny_model import two_colour_image as _two_colour_image


@pytest.fixture(scope="module")
def model():
    return gem.load_model(CONFIG, WEIGHTS)


def test_overlay_marks_masks_and_peaks(model):
    img = _two_colour_image(480, 640)
    dets = model.locate(img, ["red", "blue"], presence_rule="off")
    out = draw_overlay(img, dets)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, _two_colour_image(480, 640))  # drawn on a copy
    for colour in query_colours(["red", "blue"]):  # both queries' colours are drawn
        assert (out == colour).all(axis=-1).any(), colour
    # One query (the tiny model's masks of two overlap): its mask is tinted with its colour
    # (alpha 0.45), but where the legend, label and marker are drawn over it.
    (det,) = model.locate(img, ["red"], presence_rule="off")
    one = draw_overlay(img, [det])
    colour = np.array(query_colours(["red"])[0], np.float32)
    tint = (img[det.mask].astype(np.float32) * (1 - 0.45) + colour * 0.45).astype(np.uint8)
    tinted = (one[det.mask] == tint).all(axis=-1).mean()
    assert tinted > 0.9, tinted
    assert (one[~det.mask] == img[~det.mask]).all(axis=-1).mean() > 0.9  # the rest is as it was
    near = one[det.peak_y - 3 : det.peak_y + 4, det.peak_x - 3 : det.peak_x + 4]
    assert (near == colour.astype(np.uint8)).all(axis=-1).sum() >= 5  # the cross at the peak
    # Small frames are drawn enlarged (224 -> 672): the marker sits at the scaled peak.
    crop = img[:224, :224]
    (det,) = model.locate(crop, ["red"], presence_rule="off")
    small = draw_overlay(crop, [det])
    assert small.shape == (672, 672, 3)
    y, x = det.peak_y * 3 + 1, det.peak_x * 3 + 1
    near = small[y - 3 : y + 4, x - 3 : x + 4]
    assert (near == query_colours(["red"])[0]).all(axis=-1).sum() >= 5
    plain = draw_overlay(crop, [])
    assert np.array_equal(plain[::3, ::3], crop)  # nothing to draw: just larger


def test_overlay_colours_follow_colour_words_and_stay_apart():
    from gem_ros.overlay import COLOUR_WORDS, query_colours

    red, chair, blue, table = query_colours(["red mug", "a chair", "Blue cup", "table"])
    assert (red, blue) == (COLOUR_WORDS["red"], COLOUR_WORDS["blue"])
    for other in (chair, table):
        assert min(np.linalg.norm(np.subtract(other, c)) for c in (red, blue)) > 90
    assert chair != table


def test_overlay_labels_avoid_each_other_and_absent_queries_are_listed(model):
    from gem_ros.overlay import _overlap, _place

    taken = [(100, 60, 180, 80)]
    rect = _place((100, 100), (80, 20), 10, (480, 640), taken)
    assert _overlap(rect, taken[0]) == 0 and 0 <= rect[0] and rect[2] <= 640
    img = _two_colour_image(480, 640)
    dets = model.locate(img, ["red", "blue"], presence_rule="off")
    dets[1].mark_absent(0.1)
    out = draw_overlay(img, dets)
    from gem_ros.overlay import NOT_FOUND

    assert (out == NOT_FOUND).all(axis=-1).sum() > 100  # the grey 'not found' legend box


# --- the one-shot command ----------------------------------------------------------------
def test_cli_locate_writes_overlay_masks_and_json(tmp_path):
    from PIL import Image

    from gem_ros.cli import main

    Image.fromarray(_two_colour_image()).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rc = main(
        [
            "locate",
            str(tmp_path / "a.png"),
            str(tmp_path / "broken.png"),
            "-q",
            "red; blue",
            "-o",
            str(tmp_path / "out"),
            "--model",
            CONFIG,
            "--pretrained",
            WEIGHTS,
            "--quiet",
        ]
    )
    assert rc == 1  # one image failed, the other was processed
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    (entry,) = res["images"].values()
    assert [q["query"] for q in entry["queries"]] == ["red", "blue"]
    overlay = np.asarray(Image.open(tmp_path / "out" / "a_overlay.png"))
    assert overlay.shape == (480, 640, 3)  # 240 px drawn twice as large, for legible text
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask_0_red.png"))
    assert mask.shape == (240, 320) and set(np.unique(mask)) <= {0, 255}
    assert (mask > 0).sum() == entry["queries"][0]["area"]


def test_cli_locate_never_replaces_what_it_did_not_write(tmp_path, caplog, capfd):
    """Issue 39: a user's file or folder at any path locate would write (an overlay, a mask,
    results.json, -o itself), and two images of one name, refuse the run before anything is
    written; everything planted is unchanged. A folder locate wrote is written again."""
    from PIL import Image

    from gem_ros.cli import main

    Image.fromarray(_two_colour_image()).save(tmp_path / "a.png")
    (tmp_path / "other").mkdir()
    Image.fromarray(_two_colour_image()).save(tmp_path / "other" / "a.png")
    argv = ["-q", "red; blue", "--model", CONFIG, "--pretrained", WEIGHTS, "--quiet"]

    def said() -> str:
        # The refusal is logged; run alone, this test's first main() configures logging
        # itself and the line reaches stderr rather than caplog: read both.
        return caplog.text + capfd.readouterr().err

    def locate(out, *images):
        caplog.clear()
        capfd.readouterr()
        return main(["locate", *(str(tmp_path / i) for i in images), "-o", str(out), *argv])

    out = tmp_path / "out"
    assert locate(out, "a.png") == 0
    assert locate(out, "a.png") == 0  # its own files: replaced
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_mask_0_red.png", "a_mask_1_blue.png", "a_overlay.png", "results.json"]
    assert json.loads((out / "results.json").read_text())["files"] == written[:3]
    plants = {
        "a_overlay.png": "file",
        "a_mask_1_blue.png": "folder",
        "results.json": "file",
    }
    for name, kind in plants.items():
        folder = tmp_path / f"planted_{name}"
        folder.mkdir()
        (folder / "keep.txt").write_text("a user's")
        if kind == "folder":
            (folder / name).mkdir()
            (folder / name / "inside.txt").write_text("a user's")
        else:
            (folder / name).write_bytes(b"a user's " + name.encode())
        before = tree(tmp_path)
        assert locate(folder, "a.png") == 2, name
        text = said()
        assert f"{folder / name}" in text and "nothing was written" in text
        assert tree(tmp_path) == before, name
    before = tree(tmp_path)
    assert locate(tmp_path / "a.png", "a.png") == 2  # -o a file
    assert "is not a folder" in said()
    assert locate(tmp_path / "both", "a.png", "other/a.png") == 2  # the same names twice
    assert "would both write" in said()
    assert tree(tmp_path) == before


def test_cli_reports_bad_queries_and_models(tmp_path, caplog):
    from gem_ros.cli import main

    assert main(["locate", "x.png", "-q", " ; ", "--model", CONFIG, "--pretrained", "none"]) == 2
    assert main(["locate", "x.png", "-q", "a", "--model", "ViT-B-61"]) == 2
    assert "no queries" in caplog.text and "unknown open_clip model" in caplog.text


def test_cli_flags_are_the_settings_names_with_their_defaults():
    from gem_ros.cli import build_parser
    from gem_ros.settings import FrameSettings, ModelSettings

    args = build_parser().parse_args(["locate", "x.png", "-q", "a"])
    for settings in (ModelSettings(), FrameSettings()):
        for name, value in vars(settings).items():
            if name != "prompt_template":  # repeatable: None until given
                assert getattr(args, name) == value, name
    args = build_parser().parse_args(
        ["locate", "x.png", "-q", "a", "--gem-depth", "4", "--mask-threshold", "0.7"]
    )
    assert (args.gem_depth, args.mask_threshold) == (4, 0.7)


def test_cli_refuses_an_input_size_over_the_budget(tmp_path, caplog):
    from gem_ros.cli import main

    argv = ["locate", "x.png", "-q", "a", "--model", CONFIG, "--pretrained", "none"]
    assert main([*argv, "--input-size", "1024"]) == 2
    assert "--input-size 1024 needs 1048576" in caplog.text


def test_cli_locate_reports_presence_with_the_scene_model(tmp_path):
    from PIL import Image

    from gem_ros.cli import main
    from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS
    from gem_ros.eval.scenes import generate_scene

    scene = generate_scene(np.random.default_rng(7))  # green, pink, blue
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    argv = ["locate", str(tmp_path / "scene.png"), "-q", "green; red", "-o", str(tmp_path)]
    argv += ["--model", str(SCENE_MODEL), "--pretrained", str(SCENE_WEIGHTS), "--quiet"]
    assert main(argv + ["--input-size", "224"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    green, red = next(iter(res["images"].values()))["queries"]
    assert green["found"] and green["confidence"] > 0.5 and green["area"] > 0
    assert not red["found"] and red["confidence"] < 0.5 and red["area"] == 0
    assert red["bbox"] == [0, 0, 0, 0] and res["settings"]["presence"] == "image"
    red_mask = np.asarray(Image.open(tmp_path / "scene_mask_1_red.png"))
    assert not red_mask.any()


@pytest.mark.timeout(60)
def test_cli_names_its_own_flag_for_missing_weights(tmp_path):
    """As a user runs it (a process of its own: in-process, another test may already have
    pointed the CLI's log handler at its own stderr), offline wherever it runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "x.png").write_bytes(b"")
    argv = ["locate", str(tmp_path / "x.png"), "-q", "a", "--model", "ViT-B-32"]
    run = subprocess.run(
        [sys.executable, "-m", "gem_ros.cli", *argv, "--pretrained", "openai"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=Path(__file__).resolve().parents[1],  # this checkout's gem_ros
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    err = run.stderr
    assert "--pretrained /path/to/" in err and "load_model(" not in err, err
    assert "'ViT-B-32'" in err and "'openai'" in err and "offline" in err, err
