"""The eval command end to end with a real (tiny, random) open_clip model."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gem_ros.eval.cli import (
    SCENE_MODEL,
    SCENE_WEIGHTS,
    add_eval_arguments,
    main,
    run_eval,
    settings,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY = [
    "--model",
    str(FIXTURES / "gem-tiny-test.json"),
    "--pretrained",
    str(FIXTURES / "gem-tiny-test.pt"),
    "--input-size",
    "64",
    "--threads",
    "1",
    "--no-progress",
]


def test_write_scenes_runs_as_a_module_without_a_model(tmp_path):
    out = tmp_path / "scenes"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gem_ros.eval",
            "write-scenes",
            str(out),
            "--count",
            "3",
            "--size",
            "64",
            "--vocab",
            "colour",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "scene00000.png",
        "scene00001.png",
        "scene00002.png",
    ]
    assert (out / "classes.txt").read_text().split("\n")[:2] == ["background", "red"]


def test_directory_and_scenes_kinds_agree_and_write_json(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert main(["write-scenes", str(out), "--count", "3", "--size", "64", "--seed", "4"]) == 0
    from_dir, on_the_fly = tmp_path / "dir.json", tmp_path / "fly.json"
    common = [
        *TINY,
        "--protocol",
        "localisation",
        "--method",
        "clip",
        "gem",
        "--ss-attn-iter",
        "1",
        "0",
    ]
    assert main(["directory", str(out), *common, "--json", str(from_dir)]) == 0
    assert (
        main(
            [
                "scenes",
                "--count",
                "3",
                "--size",
                "64",
                "--seed",
                "4",
                *common,
                "--json",
                str(on_the_fly),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| gem depth 7 iter 0 |" in table and "| clip |" in table
    a, b = json.loads(from_dir.read_text()), json.loads(on_the_fly.read_text())
    assert [r["setting"] for r in a["results"]] == [
        "clip",
        "gem depth 7 iter 1",
        "gem depth 7 iter 0",
    ]
    for ra, rb in zip(a["results"], b["results"]):
        for key in ("pointing_accuracy", "mIoU", "queries"):
            assert ra["metrics"][key] == pytest.approx(rb["metrics"][key])
        assert 0.0 <= ra["metrics"]["pointing_accuracy"] <= 1.0
    assert a["prompt_templates"] == ["a photo of a {}."] and a["input_size"] == 64
    # Different methods see different tokens: the figures must not all coincide.
    assert len({json.dumps(r["metrics"]["mIoU"]) for r in a["results"]}) > 1


def test_segmentation_json_holds_per_class_figures(tmp_path):
    out = tmp_path / "scenes"
    main(["write-scenes", str(out), "--count", "2", "--size", "48", "--vocab", "colour"])
    result = tmp_path / "seg.json"
    assert (
        main(
            [
                "directory",
                str(out),
                *TINY,
                "--json",
                str(result),
                "--prompt-template",
                "a photo of a {} shape.",
                "--prompt-template",
                "a {} thing.",
            ]
        )
        == 0
    )
    payload = json.loads(result.read_text())
    metrics = payload["results"][0]["metrics"]
    assert set(metrics["per_class_IoU"]) == {
        "background",
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
    }
    assert metrics["images"] == 2 and "mIoU_no_background" in metrics
    assert payload["prompt_templates"] == ["a photo of a {} shape.", "a {} thing."]


def test_errors_are_reported_with_a_status(tmp_path, capsys):
    assert main(["voc", str(tmp_path), *TINY]) == 2
    assert "JPEGImages" in capsys.readouterr().err
    out = tmp_path / "s"
    main(["write-scenes", str(out), "--count", "1", "--size", "32"])
    assert main(["directory", str(out), *TINY, "--pretrained", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_arguments_plug_into_another_parser():
    parser = argparse.ArgumentParser(prog="gem-ros")
    sub = parser.add_subparsers(dest="command")
    add_eval_arguments(sub.add_parser("eval"))
    args = parser.parse_args(["eval", "voc", "/data/VOC2012", "--method", "clip"])
    assert (args.command, args.eval_kind, args.method, args.input_size) == (
        "eval",
        "voc",
        ["clip"],
        448,
    )
    assert args.background_threshold == 0.8 and args.protocol == "segmentation"
    assert callable(run_eval)


def test_settings_product_skips_gem_options_for_clip():
    from gem_ros.cli import build_parser

    args = build_parser().parse_args(
        [
            "eval",
            "scenes",
            "--method",
            "clip",
            "gem",
            "clip",
            "--gem-depth",
            "7",
            "5",
            "--ss-attn-iter",
            "1",
            "0",
            "--precision",
            "bf16",
        ]
    )
    rows = settings(args)
    assert [name for name, _ in rows] == [
        "clip",
        "gem depth 7 iter 1",
        "gem depth 7 iter 0",
        "gem depth 5 iter 1",
        "gem depth 5 iter 0",
    ]
    assert [(s.method, s.gem_depth, s.ss_attn_iter) for _, s in rows[1:]] == [
        ("gem", 7, 1),
        ("gem", 7, 0),
        ("gem", 5, 1),
        ("gem", 5, 0),
    ]
    assert all(s.precision == "bf16" and s.model.endswith("scene-clip-s16.json") for _, s in rows)


def test_method_all_gives_one_row_per_method_with_its_own_settings():
    from gem_ros.cli import build_parser
    from gem_ros.settings import METHODS

    argv = ["eval", "scenes", "--method", "all", "--naclip-std", "3", "--gem-depth", "7", "4"]
    argv += ["--scclip-blocks", "3,1,1,4"]
    rows = settings(build_parser().parse_args(argv))
    assert [s.method for _, s in rows] == ["gem", "gem", *METHODS[1:]]
    names = [name for name, _ in rows][2:]
    assert names == ["clip", "naclip std 3", "sclip", "clearclip", "scclip"]
    assert all(s.naclip_std == 3.0 and s.scclip_blocks == "3,1,1,4" for _, s in rows)


def test_presence_protocol_on_scenes_with_the_shipped_model(tmp_path, capsys):
    """Every colour asked in every scene (empty scenes included), then one at a time."""
    out = tmp_path / "presence.json"
    common = ["scenes", "--vocab", "colour", "--protocol", "presence", "--count", "12"]
    common += ["--objects", "0", "3", "--method", "clip", "--threads", "1", "--no-progress"]
    assert main(common + ["--input-size", "224", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| AUROC | F1 | precision | recall | pointing_accuracy |" in table
    (row,) = json.loads(out.read_text())["results"]
    m = row["metrics"]
    assert m["present"] + m["absent"] == 12 * 7
    assert m["AUROC"] > 0.95 and m["F1"] > 0.9, m
    single = tmp_path / "single.json"
    assert main(common + ["--input-size", "224", "--asking", "single", "--json", str(single)]) == 0
    m1 = json.loads(single.read_text())["results"][0]["metrics"]
    # one query at a time gives the same decisions: a query competes only with the background
    assert (m1["AUROC"], m1["F1"]) == pytest.approx((m["AUROC"], m["F1"]), abs=1e-6)


def test_presence_protocol_on_a_directory(tmp_path, capsys):
    data = tmp_path / "scenes"
    assert main(["write-scenes", str(data), "--count", "4", "--vocab", "colour"]) == 0
    argv = ["directory", str(data), "--protocol", "presence", "--method", "clip"]
    argv += ["--model", str(SCENE_MODEL), "--pretrained", str(SCENE_WEIGHTS)]
    assert main(argv + ["--input-size", "224", "--no-progress", "--threads", "1"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| clip |") and "| 4 |" in row


def test_authors_protocol_runs_each_method_with_its_published_settings(tmp_path, capsys):
    common = ["scenes", "--vocab", "colour", "--count", "3", "--size", "64", "--seed", "9"]
    common += ["--threads", "1", "--no-progress"]
    authors_json, default_json = tmp_path / "authors.json", tmp_path / "default.json"
    argv = ["--method", "gem", "sclip", "naclip", "--protocol", "authors"]
    assert main(common + argv + ["--json", str(authors_json)]) == 0
    table = capsys.readouterr().out
    assert "| inference |" in table
    assert "input 336, slide 224/112, scale 65, 26 bg words, prob 0.1, area 0.1 |" in table
    rows = {r["method"]: r for r in json.loads(authors_json.read_text())["results"]}
    gem_, sclip, naclip = (rows[m]["inference"] for m in ("gem", "sclip", "naclip"))
    assert (gem_["input_size"], gem_["slide"], gem_["logit_scale"]) == (448, 0, None)
    assert (gem_["background_queries"], gem_["prob_threshold"]) == (None, 0.8)
    assert (sclip["input_size"], sclip["slide"], sclip["slide_stride"]) == (336, 224, 112)
    assert (sclip["logit_scale"], sclip["prob_threshold"], sclip["area_threshold"]) == (
        65.0,
        0.1,
        0.1,
    )
    assert sclip["background_queries"][:2] == ["sky", "wall"] and sclip["pamr_steps"] == 0
    assert naclip["pamr_steps"] == 10 and naclip["area_threshold"] is None
    assert "wangf3014/SCLIP" in sclip["source"] and "sinahmr/NACLIP" in naclip["source"]
    # GEM's published inference is this project's default segmentation; SCLIP's is not.
    argv = ["--method", "gem", "sclip", "--protocol", "segmentation"]
    assert main(common + argv + ["--json", str(default_json)]) == 0
    plain = {r["method"]: r["metrics"] for r in json.loads(default_json.read_text())["results"]}
    assert "inference" not in json.loads(default_json.read_text())["results"][0]
    for key in ("mIoU", "pixel_accuracy", "per_class_IoU"):
        assert rows["gem"]["metrics"][key] == pytest.approx(plain["gem"][key])
    assert rows["sclip"]["metrics"]["per_class_IoU"] != pytest.approx(
        plain["sclip"]["per_class_IoU"]
    )


def test_authors_protocol_refuses_clip_and_names_the_flags_it_replaces(capsys):
    common = ["scenes", "--vocab", "colour", "--count", "1", "--size", "64"]
    common += ["--threads", "1", "--no-progress", "--protocol", "authors"]
    assert main(common + ["--method", "clip", "gem"]) == 2
    err = capsys.readouterr().err
    assert "method 'clip' has no authors' settings" in err and "--protocol segmentation" in err
    assert main(common + ["--method", "sclip", "--input-size", "224", "--slide", "112"]) == 0
    err = capsys.readouterr().err
    assert "sclip runs with its authors' input_size 336, not --input-size 224" in err
    assert "sclip runs with its authors' slide 224, not --slide 112" in err
    with pytest.raises(SystemExit):
        main(["openimages", "--points", "p", "--classes", "c", "--images", "i"] + common[-2:])


def test_scenes_take_a_width_and_height(tmp_path, capsys):
    out = tmp_path / "wide"
    assert main(["write-scenes", str(out), "--count", "2", "--size", "96x64"]) == 0
    from PIL import Image

    for name in ("images/scene00000.png", "labels/scene00001.png"):
        assert Image.open(out / name).size == (96, 64)
    for bad in ("96x8", "96x", "x64", "0"):
        with pytest.raises(SystemExit):
            main(["write-scenes", str(out), "--size", bad])
        assert "--size" in capsys.readouterr().err


@pytest.mark.parametrize("refine", ["none", "pamr"])
def test_predictor_scores_more_queries_than_the_model_takes_at_once(refine):
    """Context59's 59 classes, or background words and classes: asked in groups, each
    query's map the same as asked alone."""
    import numpy as np

    import gem_ros.gem as gem
    from gem_ros.eval.runner import GemPredictor
    from gem_ros.settings import FrameSettings

    model = gem.load_model(
        str(FIXTURES / "gem-tiny-test.json"), str(FIXTURES / "gem-tiny-test.pt"), device="cpu"
    )
    predictor = GemPredictor(model, FrameSettings(input_size=64, refine=refine, pamr_steps=2))
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), np.uint8)
    queries = [f"thing {i}" for i in range(40)]
    maps = predictor.scores(image, queries, (48, 80))
    assert maps.shape == (40, 48, 80)
    np.testing.assert_allclose(
        maps[35:], predictor.scores(image, queries[35:], (48, 80)), atol=1e-5
    )


def test_authors_protocol_with_method_all_leaves_clip_out(capsys):
    from gem_ros.cli import build_parser

    args = build_parser().parse_args(["eval", "scenes", "--method", "all", "--protocol", "authors"])
    methods = [s.method for _, s in settings(args)]
    assert methods == ["gem", "naclip", "sclip", "clearclip", "scclip"]
    assert "clip has none" in capsys.readouterr().err
