"""scripts/train_small_clip.py: a two-step run writes fp16 weights the core loads; the
committed scene model matches its config."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gem_ros.gem as gem
from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS

ROOT = Path(__file__).parents[1]


def run_training_script(argv: list[str]) -> int:
    """The script's main() in this process (one open_clip import less than a subprocess)."""
    spec = importlib.util.spec_from_file_location(
        "train_small_clip", ROOT / "scripts/train_small_clip.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads = torch.get_num_threads()
    try:
        return script.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_two_training_steps_write_loadable_fp16_weights(tmp_path, capsys):
    # A smaller text tower than the scene config, to keep the test quick.
    config = json.loads(SCENE_MODEL.read_text())
    config["vision_cfg"].update(layers=2, image_size=64)
    config["text_cfg"].update(layers=1)
    config_path = tmp_path / "tiny-scene-clip.json"
    config_path.write_text(json.dumps(config))
    out = tmp_path / "w.pt"
    assert (
        run_training_script(
            [
                "--config",
                str(config_path),
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--warmup",
                "1",
                "--eval-every",
                "2",
                "--eval-scenes",
                "4",
                "--log-every",
                "1",
            ]
        )
        == 0
    )
    log = capsys.readouterr().out
    assert "step 2/2 loss" in log and "zero-shot colour" in log
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model = gem.load_model(str(config_path), str(out), gem_depth=3, input_size=64)
    logits = model.patch_logits(model.preprocess(np.zeros((64, 64, 3), np.uint8)), ["red"])
    assert logits.shape == (1, 1, 4, 4) and torch.isfinite(logits).all()


@pytest.mark.skipif(not SCENE_WEIGHTS.exists(), reason="scene model not trained yet")
def test_committed_scene_model_loads_with_its_config():
    model = gem.load_model(str(SCENE_MODEL), str(SCENE_WEIGHTS), input_size=224)
    assert model.patch_size == 16
    text = model.encode_text(["red circle", "blue square"])
    assert text.shape == (2, json.loads(SCENE_MODEL.read_text())["embed_dim"])
