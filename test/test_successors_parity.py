"""NACLIP, SCLIP, ClearCLIP and SC-CLIP against golden outputs of their authors' own code.

The fixtures (test/fixtures/successors/, copied from ../shared/reference-successors; their
README gives each method's formula with references into the authors' code) hold, per case,
the input, the text embeddings, the method's patch tokens and patch logits of the tiny
random-weight CLIP of test/fixtures, at 224x224 and at 224x320 (positional-embedding
resampling); SC-CLIP's on a 12-block variant (successors/gem-tiny-12.*: its code names blocks
by index) at 224x224 and 288x288.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gem_ros.gem as gem
from gem_ros.gem.backends import ONNXRUNTIME_MISSING, onnxruntime_available

FIXTURES = Path(__file__).parent / "fixtures"
METHODS = ("naclip", "sclip", "clearclip", "scclip")
# The model each method's goldens were made with.
MODELS = {m: (FIXTURES / "gem-tiny-test.json", FIXTURES / "gem-tiny-test.pt") for m in METHODS}
MODELS["scclip"] = (
    FIXTURES / "successors" / "gem-tiny-12.json",
    FIXTURES / "successors" / "gem-tiny-12.pt",
)
CASES = [
    (method, case)
    for method in METHODS
    for case in json.loads((FIXTURES / "successors" / f"{method}_reference.json").read_text())[
        "cases"
    ]
]


# The same goldens through PyTorch and through the exported ONNX graph (issue 18).
@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def models(request):
    if request.param == "onnxruntime" and not onnxruntime_available():
        pytest.skip(ONNXRUNTIME_MISSING)
    return {
        method: gem.load_model(
            str(MODELS[method][0]),
            str(MODELS[method][1]),
            method=method,
            device="cpu",
            backend=request.param,
        )
        for method in METHODS
    }


@pytest.mark.parametrize(
    "method, case", CASES, ids=[f"{m}-{c['key']}-{c['h']}x{c['w']}" for m, c in CASES]
)
def test_matches_the_authors_code(models, method, case):
    reference = np.load(FIXTURES / "successors" / f"{method}_reference.npz")
    key, queries = case["key"], case["queries"]
    model = models[method]
    pixels = torch.from_numpy(reference[f"{key}_input"])
    np.testing.assert_allclose(
        model.encode_text(queries).numpy(), reference[f"{key}_text_emb"], atol=1e-5
    )
    feats = reference[f"{key}_patch_feats"]  # [h/16 * w/16, D], row-major
    tokens = model.patch_tokens(pixels)[0].reshape(feats.shape)
    np.testing.assert_allclose(tokens.numpy(), feats, atol=1e-4)
    logits = model.patch_logits(pixels, queries)[0]
    assert logits.shape == (len(queries), case["h"] // 16, case["w"] // 16)
    np.testing.assert_allclose(logits.numpy(), reference[f"{key}_patch_logits"], atol=1e-4)


def test_methods_differ_from_each_other_and_from_clip(models):
    pixels = torch.from_numpy(
        np.load(FIXTURES / "successors" / "sclip_reference.npz")["case0_input"]
    )
    clip = gem.load_model(
        str(FIXTURES / "gem-tiny-test.json"), str(FIXTURES / "gem-tiny-test.pt"), method="clip"
    )
    scclip8 = gem.load_model(  # SC-CLIP on the same 8-block model, its blocks scaled
        str(FIXTURES / "gem-tiny-test.json"), str(FIXTURES / "gem-tiny-test.pt"), method="scclip"
    )
    outputs = {m: models[m].patch_logits(pixels, ["cat"]) for m in METHODS if m != "scclip"}
    outputs["scclip"] = scclip8.patch_logits(pixels, ["cat"])
    outputs["clip"] = clip.patch_logits(pixels, ["cat"])
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)


def test_naclip_std_changes_naclip_only():
    kwargs = dict(device="cpu")
    cfg, weights = str(FIXTURES / "gem-tiny-test.json"), str(FIXTURES / "gem-tiny-test.pt")
    pixels = torch.from_numpy(
        np.load(FIXTURES / "successors" / "naclip_reference.npz")["case0_input"]
    )
    a = gem.load_model(cfg, weights, method="naclip", naclip_std=5.0, **kwargs)
    b = gem.load_model(cfg, weights, method="naclip", naclip_std=1.0, **kwargs)
    assert not torch.allclose(a.patch_logits(pixels, ["cat"]), b.patch_logits(pixels, ["cat"]))
    with pytest.raises(ValueError, match="naclip_std"):
        gem.load_model(cfg, weights, method="naclip", naclip_std=0.0, **kwargs)
