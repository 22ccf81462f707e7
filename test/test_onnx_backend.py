"""The ONNX export and the onnxruntime backend against the PyTorch path, for every method:
patch logits within 1e-4, the same peaks and presence decisions, batches, the graph cache,
and what an export or a missing backend says."""

import json

import numpy as np
import pytest
import torch
from file_trees import tree

import gem_ros.gem as gem
from gem_ros.gem.backends import ONNXRUNTIME_MISSING, onnxruntime_available
from gem_ros.gem.export import ExportError, export_onnx
from gem_ros.settings import METHODS

from tiny_model import CONFIG, WEIGHTS

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not onnxruntime_available(), reason=ONNXRUNTIME_MISSING),
]


def _image(height=96, width=128, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[20:60, 30:80] = (220, 30, 30)  # a red block, so peaks are not ties
    return image


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tmp_path_factory.mktemp("graphs")


def _pair(method, graphs, **settings):
    kw = dict(method=method, device="cpu", **settings)
    torch_model = gem.load_model(str(CONFIG), str(WEIGHTS), **kw)
    ort_model = gem.load_model(
        str(CONFIG), str(WEIGHTS), backend="onnxruntime", graph_cache_dir=graphs, **kw
    )
    return torch_model, ort_model


@pytest.mark.parametrize("method", METHODS)
def test_onnxruntime_matches_torch(method, graphs):
    torch_model, ort_model = _pair(method, graphs)
    assert ort_model.backend.name == "onnxruntime"
    queries = ["red", "blue", "a green thing"]
    image = _image()
    pixels = torch_model.preprocess(image)
    a = torch_model.patch_logits(pixels, queries)
    b = ort_model.patch_logits(pixels, queries)
    assert (a - b).abs().max() < 1e-4, (a - b).abs().max()
    # And a batch of two other images through the same graph (batch axis dynamic).
    batch = torch.cat([torch_model.preprocess(_image(seed=s)) for s in (1, 2)])
    assert (
        torch_model.patch_logits(batch, queries) - ort_model.patch_logits(batch, queries)
    ).abs().max() < 1e-4
    da = torch_model.locate(image, queries, background_prompts="background; wall")
    db = ort_model.locate(image, queries, background_prompts="background; wall")
    for x, y in zip(da, db):
        assert (x.peak_x, x.peak_y, x.found) == (y.peak_x, y.peak_y, y.found)
        assert x.confidence == pytest.approx(y.confidence, abs=1e-4)
        assert x.score == pytest.approx(y.score, abs=1e-4)


def test_gem_adaptive_temperature_is_computed_per_image(graphs):
    # Exported with a zero image, τ must not be a constant of that trace: two very different
    # images in one batch still match torch.
    torch_model, ort_model = _pair("gem", graphs, ss_attn_iter=2)
    bright = torch_model.preprocess(np.full((96, 128, 3), 250, np.uint8))
    busy = torch_model.preprocess(_image(seed=5))
    batch = torch.cat([bright, busy])
    a = torch_model.patch_logits(batch, ["red"])
    b = ort_model.patch_logits(batch, ["red"])
    assert (a - b).abs().max() < 1e-4


def test_graphs_are_cached_per_input_size_and_settings(graphs):
    _, first = _pair("clearclip", graphs)
    first.locate(_image(), ["red"])
    first.locate(_image(96, 160), ["red"])
    files = sorted(p.name for p in graphs.glob("*clearclip*.onnx"))
    assert len(files) == 2 and not any("partial" in f for f in files), files
    sidecar = json.loads(next(graphs.glob("*clearclip*.json")).read_text())
    assert sidecar["method"] == "clearclip" and sidecar["opset"] == 17
    assert sidecar["input"]["shape"][0] == "batch" and sidecar["patch_size"] == 16
    assert sidecar["settings"]["backend"] == "onnxruntime"
    # Another model object with the same settings reuses the graphs: no new files.
    _, second = _pair("clearclip", graphs)
    second.locate(_image(), ["red"])
    assert sorted(p.name for p in graphs.glob("*clearclip*.onnx")) == files


def test_export_writes_the_graph_and_its_sidecar(tmp_path):
    model = gem.load_model(str(CONFIG), str(WEIGHTS), device="cpu")
    info = export_onnx(model, tmp_path / "gem.onnx", (64, 96))
    assert (tmp_path / "gem.onnx").stat().st_size > 10_000
    assert json.loads((tmp_path / "gem.json").read_text()) == info
    assert info["patch_grid"] == [4, 6] and info["outputs"] == ["tokens", "embedding"]
    assert info["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    with pytest.raises(ExportError, match="multiples of 16"):
        export_onnx(model, tmp_path / "bad.onnx", (60, 96))


def test_the_cli_exports(tmp_path):
    from gem_ros.cli import main

    out = tmp_path / "sclip.onnx"
    code = main(argv(out))
    assert code == 0 and out.is_file()
    assert json.loads(out.with_suffix(".json").read_text())["input"]["shape"] == [
        "batch",
        3,
        64,
        80,
    ]
    assert main(argv(out)) == 0  # its own graph and sidecar, replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sclip.json", "sclip.onnx"]


def test_the_cli_export_never_replaces_what_it_did_not_write(tmp_path, caplog):
    """Issue 39: a folder, a user's graph with no sidecar of ours, and a user's JSON where
    the sidecar would go are each left exactly as they were, and the command says why."""
    from gem_ros.cli import main

    folder = tmp_path / "graph.onnx"
    (folder / "inside").mkdir(parents=True)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"a user's graph")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    before = tree(tmp_path)
    for out, said in [
        (folder, "is not a regular file"),
        (mine, "no sidecar mine.json"),
        (tmp_path / "notes.onnx", "notes.json holds something gem_ros did not write"),  # no graph
        (notes, "name a .onnx file"),
    ]:
        caplog.clear()
        assert main(argv(out)) == 2, out
        assert said in caplog.text
    assert tree(tmp_path) == before


def argv(out):
    return [
        "export",
        "-o",
        str(out),
        "--model",
        str(CONFIG),
        "--pretrained",
        str(WEIGHTS),
        "--method",
        "sclip",
        "--height",
        "64",
        "--width",
        "80",
    ]


def _ort_cuda() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and (
        "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    )


@pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu and a CUDA device")
@pytest.mark.parametrize("method", ["gem", "scclip"])
def test_onnxruntime_on_cuda_runs_on_the_gpu_and_matches_torch(method, graphs):
    kw = dict(method=method, device="cuda")
    torch_model = gem.load_model(str(CONFIG), str(WEIGHTS), **kw)
    ort_model = gem.load_model(
        str(CONFIG), str(WEIGHTS), backend="onnxruntime", graph_cache_dir=graphs, **kw
    )
    image = _image(112, 112)
    pixels = torch_model.preprocess(image)
    a = torch_model.patch_logits(pixels, ["red"])
    b = ort_model.patch_logits(pixels, ["red"])
    assert b.device.type == "cuda" and (a - b).abs().max() < 1e-3
    session, device = next(iter(ort_model.backend._runners.values()))
    assert device.type == "cuda"
    assert session.get_providers()[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
