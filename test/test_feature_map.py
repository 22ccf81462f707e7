"""The map of dense features (gem_ros/feature_map.py, issue 40), with no ROS: rendered frames
(coloured squares before a grey wall, with depth) through the shipped scene CLIP's GEM path,
lifted, fused, and asked colours nobody asked while they were in view; cleared where the
camera sees through; bounded; stored and read back, and refused for another model."""

import numpy as np
import pytest

import gem_ros.gem as gem
from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS
from gem_ros.feature_map import (
    FeatureMap,
    ForeignMapFile,
    MapFileError,
    lift_patches,
    load_map,
    save_map,
)
from gem_ros.map_voxels import VIEWS_PER_VOXEL, Voxels
from gem_ros.owned_files import PathRefused
from gem_ros.settings import DEFAULT_BACKGROUND_PROMPTS

from map_scene import POSE, K, frame, in_map

MADE_BY = {'map_frame': 'map', 'model': 'scene-clip-s16', 'weights': 'abc', 'method': 'gem'}


@pytest.fixture(scope='module')
def model():
    return gem.load_model(str(SCENE_MODEL), str(SCENE_WEIGHTS), device='cpu', input_size=224)


def _fuse(model, fmap, squares, stamp):
    rgb, depth = frame(squares)
    out = [None]
    model.locate_batch([rgb], [[]], tokens_out=out)
    tokens, embedding = out[0]
    fmap.take_view(tokens, (depth, K), rgb, POSE, stamp, 'front', embedding=embedding)


def _ask(model, fmap, query):
    prompts = model.check_backgrounds(DEFAULT_BACKGROUND_PROMPTS)
    text = model.encode_text([query] + prompts).numpy()
    return fmap.ask(text[0], text[1:], model.logit_scale)


def test_patches_are_placed_at_their_depth_through_their_centre():
    tokens = np.ones((6, 8, 4)) / 2.0
    depth = np.full((96, 128), 2.0, np.float32)
    depth[:16, :16] = np.nan  # the first patch has no reading
    depth[16:32, 16:32] = 0.05  # nearer than depth_min
    points, features, _ = lift_patches(tokens, depth, K, depth_min=0.1)
    assert len(points) == 6 * 8 - 2 and features.shape == (46, 4)
    # patch (0, 1): centre pixel (23.5, 7.5) at 2 m
    assert points[0] == pytest.approx(((23.5 - 159.5) * 2 / 260, (7.5 - 119.5) * 2 / 260, 2.0))


def test_colours_never_asked_are_found_where_they_were_and_absent_ones_are_not(model):
    fmap = FeatureMap(voxel_size=0.05)
    seen = {'red': (40, 60, 1.2), 'green': (200, 100, 1.6)}
    for stamp in range(3):
        _fuse(model, fmap, seen, float(stamp))
    for colour, square in seen.items():
        best = _ask(model, fmap, colour)[0]
        error = np.linalg.norm(np.array(best.position) - in_map(*square))
        assert error < 0.15, (colour, best, in_map(*square))
        assert best.score > 0.5 and best.camera == 'front' and best.last_seen == 2.0
    for absent in ('blue', 'yellow', 'pink'):
        assert _ask(model, fmap, absent) == [], absent  # nothing like that in the map


def test_a_stretch_like_every_word_does_not_outrank_the_thing():
    # Patch features share a likeness to words at all; a stretch of wall that has much of
    # it is as like the query as the thing is, and as like the background prompts. The
    # thing is the place that prefers the query over them (seen to fail on the cosine).
    query, wall, other = np.eye(16)[:3]
    stretch = (query + wall) / np.sqrt(2)  # cosine 0.71 with the query, margin 0
    thing = 0.65 * query + 0.76 * other  # cosine 0.65, margin 0.65
    points = np.array([[0.05 * i + 0.025, 0.025, 2.0] for i in range(12)]
                      + [[1.025 + 0.05 * i, 0.025, 2.0] for i in range(5)]
                      + [[3.025 + 0.05 * i, 0.025, 2.0] for i in range(20)])  # fmt: skip
    features = np.array([stretch] * 12 + [thing / np.linalg.norm(thing)] * 5 + [wall] * 20)
    fmap = FeatureMap(voxel_size=0.05)
    fmap.fuse(points, features, np.zeros((37, 3), np.uint8), 0.0, 'front', embedding=query)
    places = fmap.ask(query, wall[None], logit_scale=100.0)
    assert places and places[0].voxels == 5, places
    assert 1.0 < places[0].position[0] < 1.25, places[0]  # on the thing's voxels


def test_a_moved_thing_stops_answering_where_it_was(model):
    fmap = FeatureMap(voxel_size=0.05, miss_limit=3)
    before, after = (40, 60, 1.2), (200, 100, 1.2)
    for stamp in range(3):
        _fuse(model, fmap, {'red': before}, float(stamp))
    for stamp in range(3, 7):  # moved: the camera sees the wall where it stood
        _fuse(model, fmap, {'red': after}, float(stamp))
    places = _ask(model, fmap, 'red')
    assert places and all(np.linalg.norm(np.array(p.position) - in_map(*before)) > 0.3
                          for p in places), places  # fmt: skip
    assert np.linalg.norm(np.array(places[0].position) - in_map(*after)) < 0.15


def test_the_map_keeps_at_most_its_budget_and_drops_the_oldest():
    fmap = FeatureMap(voxel_size=0.05, max_voxels=30)
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5), [0], indexing='ij'), -1)
    points = grid.reshape(-1, 3) * 0.05 + 0.025
    features = np.eye(8)[np.arange(25) % 8]
    fmap.fuse(points, features, np.zeros((25, 3), np.uint8), 0.0, 'a')
    fmap.fuse(points + [0, 0, 1.0], features, np.zeros((25, 3), np.uint8), 1.0, 'a')
    state = fmap.state()
    assert len(fmap) == 30 and (state['last_seen'] == 1.0).sum() == 25


def test_removed_voxels_are_filled_from_the_end_with_every_key_on_its_own_row():
    voxels = Voxels(4)
    keys = np.arange(100, 110)
    rows = voxels.rows_for(keys)
    voxels['features'][rows] = np.arange(10)[:, None]  # each row's feature names its key
    voxels.remove(np.array([1, 8, 3]))
    kept = [k for i, k in enumerate(keys.tolist()) if i not in (1, 8, 3)]
    assert len(voxels) == 7 and sorted(voxels.index) == kept
    for key, row in voxels.index.items():
        assert voxels['keys'][row] == key and voxels['features'][row, 0] == key - 100
    again = voxels.rows_for(np.array([101, 105]))  # one back (fresh), one kept
    assert voxels['features'][again[0]].tolist() == [0, 0, 0, 0]
    assert voxels['seen_by'][again[0]].tolist() == [-1] * VIEWS_PER_VOXEL
    assert voxels['features'][again[1], 0] == 5 and len(voxels) == 8


def test_half_precision_features_answer_as_full_precision_ones(model):
    fmap = FeatureMap(voxel_size=0.05)
    _fuse(model, fmap, {'red': (40, 60, 1.2)}, 0.0)
    features = fmap.state()['features']
    text = model.encode_text(['red']).numpy()[0]
    exact = features.astype(np.float32) @ text
    assert np.abs((features @ text.astype(np.float16)).astype(np.float32) - exact).max() < 2e-3


def test_a_map_file_is_read_back_and_refused_for_another_model(model, tmp_path):
    fmap = FeatureMap(voxel_size=0.05)
    _fuse(model, fmap, {'red': (40, 60, 1.2)}, 0.0)
    path = tmp_path / 'room.gemmap'
    save_map(path, fmap, MADE_BY)
    again = FeatureMap(voxel_size=0.05)
    assert load_map(path, again, MADE_BY, 1 << 30) == len(fmap)
    assert _ask(model, again, 'red') == _ask(model, fmap, 'red')
    with pytest.raises(MapFileError, match="weights 'abc', not 'other'"):
        load_map(path, FeatureMap(), {**MADE_BY, 'weights': 'other'}, 1 << 30)
    with pytest.raises(MapFileError, match='over the'):
        load_map(path, FeatureMap(), MADE_BY, 1000)


def test_a_damaged_or_foreign_map_file_is_refused_with_the_reason(model, tmp_path):
    fmap = FeatureMap(voxel_size=0.05)
    _fuse(model, fmap, {'red': (40, 60, 1.2)}, 0.0)
    path = tmp_path / 'room.gemmap'
    save_map(path, fmap, MADE_BY)
    path.write_bytes(path.read_bytes()[:-200])  # cut short
    with pytest.raises(MapFileError, match='cannot be read'):
        load_map(path, FeatureMap(), MADE_BY, 1 << 30)
    photo = tmp_path / 'photo.gemmap'
    photo.write_bytes(b'\x89PNG not a map')
    with pytest.raises(ForeignMapFile):
        load_map(photo, FeatureMap(), MADE_BY, 1 << 30)
    with pytest.raises(PathRefused):
        save_map(photo, fmap, MADE_BY)
    assert photo.read_bytes() == b'\x89PNG not a map'
