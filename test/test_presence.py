"""The presence decision: CLIP's image embedding against the query and background prompts,
with the tiny test CLIP (exactness) and the shipped scene CLIP (behaviour)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gem_ros.gem as gem
from gem_ros.eval import scenes as scene_gen
from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS
from gem_ros.eval.metrics import Presence, auroc
from gem_ros.gem import presence

from tiny_model import CONFIG, WEIGHTS, two_colour_image


@pytest.fixture(scope="module")
def scene_model():
    return gem.load_model(str(SCENE_MODEL), str(SCENE_WEIGHTS), device="cpu", input_size=224)


@pytest.mark.parametrize("method", gem.METHODS)
def test_image_embedding_is_clips_encode_image(method):
    model = gem.load_model(CONFIG, WEIGHTS, method=method, device="cpu")
    size = model.clip.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    pixels = model.preprocess(two_colour_image(size, size), input_size=size)
    tokens, image = model.features(pixels, image=True)
    with torch.inference_mode():
        expected = F.normalize(model.clip.encode_image(pixels), dim=-1)
    np.testing.assert_allclose(image.numpy(), expected.numpy(), atol=1e-5)
    # asking for it leaves the patch tokens as they were
    np.testing.assert_array_equal(tokens.numpy(), model.features(pixels)[0].numpy())
    assert model.features(pixels)[1] is None


def test_confidence_is_the_softmax_share_against_the_background():
    image = F.normalize(torch.tensor([1.0, 0.0, 0.0]), dim=0)
    text = F.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0]]), dim=1)
    background = F.normalize(torch.tensor([[0.5, 1.0, 0.0], [0.3, 0.0, 1.0]]), dim=1)
    got = presence.confidences(image, text, background, 10.0, ["a", "b"], ["c", "d"])
    z_b = 10 * (background @ image)
    for p in range(2):
        z = 10 * (text[p] @ image)
        share = z.exp() / (z.exp() + z_b.exp().sum())
        assert got[p].item() == pytest.approx(share.item(), rel=1e-5)
    # a query that is also a background prompt does not compete with itself
    same = presence.confidences(image, background[:1], background, 10.0, ["Wall"], ["wall", "x"])
    z_q = 10 * (background[0] @ image)
    assert same.item() == pytest.approx(torch.sigmoid(z_q - z_b[1]).item(), rel=1e-5)


def test_absent_queries_are_not_found_and_have_nothing_to_point_at(scene_model):
    rng = np.random.default_rng(7)
    scenes = [scene_gen.generate_scene(rng) for _ in range(4)]
    for scene in scenes:
        present = {o.colour for o in scene.objects}
        dets = scene_model.locate(scene.image, list(scene_gen.COLOURS))
        for det in dets:
            assert det.found == (det.query in present), (det.query, det.confidence, present)
            assert 0.0 <= det.confidence <= 1.0
            if not det.found:
                assert det.area == 0 and not det.mask.any() and det.bbox == (0, 0, 0, 0)
                assert det.peaks == [] and det.confidence < 0.5
            else:
                assert det.area > 0 and det.mask[det.peak_y, det.peak_x]


def test_confidence_does_not_depend_on_the_other_queries(scene_model):
    scene = scene_gen.generate_scene(np.random.default_rng(7))
    alone = scene_model.locate(scene.image, ["green"])[0]
    among = {d.query: d for d in scene_model.locate(scene.image, list(scene_gen.COLOURS))}
    assert alone.confidence == pytest.approx(among["green"].confidence, abs=1e-6)
    assert (alone.found, alone.area) == (among["green"].found, among["green"].area)


def test_presence_off_finds_everything_with_confidence_one(scene_model):
    scene = scene_gen.generate_scene(np.random.default_rng(7))
    dets = scene_model.locate(scene.image, list(scene_gen.COLOURS), presence_rule="off")
    assert all(d.found and d.confidence == 1.0 and d.area > 0 for d in dets)


def test_bad_presence_arguments_are_refused(scene_model):
    image = two_colour_image(64, 64)
    with pytest.raises(ValueError, match="presence_rule"):
        scene_model.locate(image, ["red"], presence_rule="maybe")
    with pytest.raises(gem.QueryError, match="background prompt"):
        scene_model.locate(image, ["red"], background_prompts=" ; ,")


def test_auroc_counts_ties_half_and_is_undefined_for_one_class():
    assert auroc([True, False], [0.9, 0.1]) == 1.0
    assert auroc([True, False], [0.1, 0.9]) == 0.0
    assert auroc([True, False, True, False], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auroc([True, True, False], [0.8, 0.3, 0.5]) == 0.5
    assert np.isnan(auroc([True, True], [0.1, 0.2]))


def test_presence_metric_counts_precision_recall_and_pointing():
    m = Presence()
    m.update(True, 0.9, True, hit=True)
    m.update(True, 0.4, False, hit=False)
    m.update(False, 0.6, True)
    m.update(False, 0.1, False)
    s = m.summary()
    assert (s["precision"], s["recall"], s["F1"]) == (0.5, 0.5, 0.5)
    assert s["pointing_accuracy"] == 0.5 and (s["present"], s["absent"]) == (2, 2)
    assert s["AUROC"] == 0.75


def test_presence_threshold_decides_found_from_the_same_confidence(scene_model):
    """presence_threshold (node parameter, --presence-threshold, locate's argument): found
    exactly when the confidence reaches it; the confidence itself does not move."""
    scene = scene_gen.generate_scene(np.random.default_rng(7))
    queries = list(scene_gen.COLOURS)
    base = {d.query: d.confidence for d in scene_model.locate(scene.image, queries)}
    ranked = sorted(base.values())
    for threshold in (ranked[1] + 1e-4, ranked[-1] + 1e-4, 0.0):
        dets = scene_model.locate(scene.image, queries, presence_threshold=threshold)
        for d in dets:
            assert d.found == (base[d.query] >= threshold), (d.query, base[d.query], threshold)
            assert d.confidence == pytest.approx(base[d.query], abs=1e-6)
    assert not any(
        d.found for d in scene_model.locate(scene.image, queries, presence_threshold=1.01)
    )


def test_background_prompts_are_the_rivals_of_a_query(scene_model):
    """background_prompts (node parameter, flag, argument): a query's confidence is judged
    against them, so naming the query's own colour as background drives it down."""
    scene = scene_gen.generate_scene(np.random.default_rng(7))
    present = sorted(o.colour for o in scene.objects)[0]
    usual = scene_model.locate(scene.image, [present])[0]
    rivalled = scene_model.locate(scene.image, [present], background_prompts=f"{present} thing")[0]
    assert usual.found, usual.confidence
    assert rivalled.confidence < usual.confidence, (usual.confidence, rivalled.confidence)
