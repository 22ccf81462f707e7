"""The procedural scene generator: seeded, exact masks, names that match the pixels."""

import numpy as np
import pytest

from gem_ros.eval import scenes
from gem_ros.eval.datasets import GeneratedScenes


def test_scenes_are_reproducible_from_the_seed():
    a = list(scenes.generate_scenes(7, 3))
    b = list(scenes.generate_scenes(7, 3))
    c = list(scenes.generate_scenes(8, 3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        assert [o.name for o in x.objects] == [o.name for o in y.objects]
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(a, c))


def test_objects_are_disjoint_distinctly_coloured_and_painted_in_their_colour():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = scenes.generate_scene(rng, 128, min_objects=3, max_objects=3)
        assert 1 <= len(scene.objects) <= 3
        colours = [o.colour for o in scene.objects]
        assert len(set(colours)) == len(colours)
        total = sum(o.mask.sum() for o in scene.objects)
        assert np.logical_or.reduce([o.mask for o in scene.objects]).sum() == total
        for obj in scene.objects:
            assert obj.mask.sum() > 50
            mean = scene.image[obj.mask].mean(0)
            # The object's mean colour is nearest to its own named colour.
            dist = {n: np.abs(mean - np.array(rgb)).sum() for n, rgb in scenes.COLOURS.items()}
            assert min(dist, key=dist.get) == obj.colour


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_every_shape_draws_a_centred_mask(shape):
    mask = scenes.draw_shape_mask(shape, 64, 32, 32, 20, 0.3)
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 200
    assert abs(ys.mean() - 32) < 4 and abs(xs.mean() - 32) < 4
    assert not mask[0].any() and not mask[:, 0].any()


def test_ring_has_a_hole_and_shapes_differ():
    ring = scenes.draw_shape_mask("ring", 64, 32, 32, 20, 0.0)
    assert not ring[32, 32]
    masks = {s: scenes.draw_shape_mask(s, 64, 32, 32, 20, 0.0) for s in scenes.SHAPES}
    assert len({m.tobytes() for m in masks.values()}) == len(scenes.SHAPES)


def test_caption_names_every_object():
    rng = np.random.default_rng(3)
    scene = scenes.generate_scene(rng, 96, min_objects=2, max_objects=2)
    for _ in range(10):
        text = scenes.caption(scene, rng)
        for obj in scene.objects:
            assert obj.colour in text
        assert text.endswith(".")


def test_generated_dataset_labels_follow_the_vocabulary():
    for vocab in ("colour", "colour-shape"):
        ds = GeneratedScenes(seed=5, count=4, size=96, vocabulary=vocab)
        assert ds.class_names[0] == "background"
        scene_list = list(scenes.generate_scenes(5, 4, 96))
        for sample, scene in zip(ds, scene_list):
            for obj in scene.objects:
                name = obj.colour if vocab == "colour" else obj.name
                k = ds.class_names.index(name)
                assert (sample.labels[obj.mask] == k).all()
            assert (sample.labels == 0).sum() == (
                ~np.logical_or.reduce([o.mask for o in scene.objects])
            ).sum()


def test_square_scenes_are_the_same_given_as_a_side_or_a_pair():
    for a, b in zip(scenes.generate_scenes(1000, 3, 96), scenes.generate_scenes(1000, 3, (96, 96))):
        np.testing.assert_array_equal(a.image, b.image)
        assert [o.name for o in a.objects] == [o.name for o in b.objects]


def test_wide_scenes_keep_their_objects_inside_and_size_them_by_the_shorter_side():
    rng = np.random.default_rng(2)
    centres = []
    for _ in range(10):
        scene = scenes.generate_scene(rng, (240, 96), min_objects=3, max_objects=3)
        centres += [np.nonzero(o.mask)[1].mean() for o in scene.objects]
        assert scene.image.shape == (96, 240, 3)
        for obj in scene.objects:
            assert obj.mask.shape == (96, 240)
            ys, xs = np.nonzero(obj.mask)
            assert ys.min() > 0 and xs.min() > 0 and ys.max() < 95 and xs.max() < 239
            # Radius at most 0.2 x 96: no object spans more than the short side.
            assert xs.max() - xs.min() < 96 and ys.max() - ys.min() < 96
    assert max(centres) > 144  # objects are placed across the whole width
    with pytest.raises(ValueError, match="16x16"):
        scenes.generate_scene(rng, (240, 8))
