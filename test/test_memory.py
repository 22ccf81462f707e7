"""The memory of sightings (gem_ros.memory), without ROS: merging, distinct places, negative
evidence through depth, expiry, budgets, the file; and the geometry it uses."""

import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from gem_ros.geometry import apply_transform, invert_transform, point_visible
from gem_ros.memory import (
    CONFIRMED,
    SIGNATURES,
    ForeignFileError,
    MemoryFileError,
    SightingMemory,
    observe,
)
from gem_ros.owned_files import PathRefused, check_path, move_aside, ours

from depth_scene import HEIGHT, WIDTH, K

# A camera 1 m above the map's origin looking along map x (optical z = map x, optical x =
# -map y, optical y = -map z): the usual optical-frame rotation, as a quaternion.
CAMERA_IN_MAP = ((0.0, 0.0, 1.0), (-0.5, 0.5, -0.5, 0.5))


def det(query, found=True, confidence=0.9):
    return SimpleNamespace(query=query, found=found, confidence=confidence)


def test_inverse_transform_undoes_the_transform():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        t = tuple(rng.normal(size=3))
        p = tuple(rng.normal(size=3))
        back = invert_transform(t, tuple(q))
        assert np.allclose(apply_transform(apply_transform(p, t, tuple(q)), *back), p)


def test_the_optical_rotation_maps_camera_z_to_map_x():
    assert np.allclose(apply_transform((0, 0, 2), *CAMERA_IN_MAP), (2, 0, 1))
    assert np.allclose(apply_transform((1, 0, 0), *CAMERA_IN_MAP), (0, -1, 1))


def test_a_point_is_visible_only_in_view_with_nothing_in_front():
    wall = np.full((HEIGHT, WIDTH), 2.0)
    assert point_visible((0.0, 0.0, 1.5), wall, K, margin=0.1)  # in front of the wall
    assert point_visible((0.0, 0.0, 2.05), wall, K, margin=0.1)  # on it, within the margin
    assert not point_visible((0.0, 0.0, 3.0), wall, K, margin=0.1)  # behind it: hidden
    assert not point_visible((0.0, 0.0, -1.0), wall, K, margin=0.1)  # behind the camera
    assert not point_visible((5.0, 0.0, 1.0), wall, K, margin=0.1)  # outside the image
    holes = np.full((HEIGHT, WIDTH), np.nan)
    assert not point_visible((0.0, 0.0, 1.0), holes, K, margin=0.1)  # no reading: no evidence


def test_sightings_merge_within_the_radius_and_two_mugs_stay_two():
    memory = SightingMemory('map', radius=0.15)
    for i in range(4):
        memory.add('red mug', (1.0 + 0.01 * i, 2.0, 0.8), 10.0 + i, 0.5 + 0.1 * i, 'front')
    memory.add('red mug', (3.0, 2.0, 0.8), 20.0, 0.6, 'left')  # another mug, 2 m away
    places = memory.places('red mug', now=21.0)
    assert len(places) == 2
    best, other = places
    # Confirmed before unconfirmed, though the other was seen more recently.
    assert best.sightings == 4 >= CONFIRMED and other.sightings == 1
    assert math.isclose(best.x, 1.015) and best.last_seen == 13.0 and best.first_seen == 10.0
    assert math.isclose(best.confidence, 0.8) and best.camera == 'front'
    assert other.camera == 'left'
    assert memory.places('blue cup') == []


def test_places_expire_after_the_ttl():
    memory = SightingMemory('map', ttl_s=60)
    memory.add('mug', (0, 0, 0), 100.0, 0.9, '')
    memory.add('cup', (1, 0, 0), 150.0, 0.9, '')
    assert [p.query for p in memory.places('mug', now=159.0)] == ['mug']
    assert memory.places('mug', now=161.0) == []  # answers leave out the expired at once
    assert memory.expire(161.0) == 1 and len(memory) == 1
    assert [p.query for p in memory.all_places()] == ['cup']  # the stale one went


def test_expiry_drops_the_stale_place_and_keeps_the_fresh_one_of_a_query():
    memory = SightingMemory('map', ttl_s=60)
    memory.add('mug', (0, 0, 0), 100.0, 0.9, 'front')  # stale by 161
    memory.add('mug', (5, 0, 0), 150.0, 0.9, 'left')  # fresh: 11 s old at 161
    assert memory.expire(161.0) == 1
    (kept,) = memory.all_places()
    assert (kept.position, kept.last_seen, kept.camera) == ((5.0, 0.0, 0.0), 150.0, 'left')


def test_the_budgets_bound_the_memory_whatever_is_seen():
    memory = SightingMemory('map', radius=0.1, max_per_query=3, max_places=5)
    for i in range(10):  # ten distinct places of one query: the weakest go
        memory.add('mug', (float(i), 0, 0), float(i), 0.9, '')
    assert len(memory.places('mug')) == 3
    for i in range(10):  # ten queries: the places seen longest ago go
        memory.add(f'thing {i}', (0, float(i), 0), 100.0 + i, 0.9, '')
    assert len(memory) == 5
    assert {p.query for p in memory.all_places()} == {f'thing {i}' for i in range(5, 10)}


def test_non_finite_sightings_are_refused():
    memory = SightingMemory('map')
    with pytest.raises(ValueError, match='finite'):
        memory.add('mug', (math.nan, 0, 0), 1.0, 0.9, '')
    assert len(memory) == 0


def test_observe_adds_found_points_in_the_memory_frame():
    memory = SightingMemory('map')
    added = observe(
        memory, 'front', 5.0, [det('mug'), det('cup', found=False)], [(0, 0, 2), None],
        CAMERA_IN_MAP,
    )  # fmt: skip
    assert added == 1
    (place,) = memory.places('mug')
    assert np.allclose(place.position, (2, 0, 1))


def test_a_place_in_view_with_its_query_absent_is_weakened_then_removed():
    memory = SightingMemory('map', radius=0.15, miss_limit=3)
    observe(memory, 'front', 1.0, [det('mug')], [(0.0, 0.0, 1.5)], CAMERA_IN_MAP)
    wall = np.full((HEIGHT, WIDTH), 2.0)  # the spot is seen: the wall is behind it
    absent = [det('mug', found=False)]
    for _ in range(2):
        observe(memory, 'front', 2.0, absent, [None], CAMERA_IN_MAP, (wall, K))
    assert memory.places('mug')[0].misses == 2
    observe(memory, 'front', 3.0, [det('mug')], [(0.0, 0.0, 1.5)], CAMERA_IN_MAP)  # seen again
    assert memory.places('mug')[0].misses == 0
    for _ in range(3):
        observe(memory, 'front', 4.0, absent, [None], CAMERA_IN_MAP, (wall, K))
    assert memory.places('mug') == []


def test_a_hidden_or_out_of_view_place_is_not_weakened():
    memory = SightingMemory('map', radius=0.15, miss_limit=1)
    observe(memory, 'front', 1.0, [det('mug')], [(0.0, 0.0, 1.5)], CAMERA_IN_MAP)
    box = np.full((HEIGHT, WIDTH), 0.8)  # something in front of it
    observe(memory, 'front', 2.0, [det('mug', found=False)], [None], CAMERA_IN_MAP, (box, K))
    turned = ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0))  # looking down map z: the mug is out of view
    wall = np.full((HEIGHT, WIDTH), 2.0)
    observe(memory, 'front', 3.0, [det('mug', found=False)], [None], turned, (wall, K))
    observe(memory, 'front', 4.0, [det('mug', found=False)], [None], CAMERA_IN_MAP)  # no depth
    assert memory.places('mug')[0].misses == 0


def test_the_file_round_trips_and_another_frame_is_refused(tmp_path):
    path = tmp_path / 'memory.json'
    memory = SightingMemory('map')
    memory.add('mug', (1, 2, 3), 10.0, 0.7, 'front')
    memory.add('mug', (1, 2, 3.1), 11.0, 0.8, 'front')
    memory.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ['memory.json']  # no temporary left
    again = SightingMemory('map')
    assert again.load(path) == (1, [])
    assert again.places('mug') == memory.places('mug')
    with pytest.raises(MemoryFileError, match="frame 'map', not memory_frame 'odom'"):
        SightingMemory('odom').load(path)
    # Cut short (a power cut while writing): still recognised as a memory file, unusable.
    path.write_text(path.read_text()[:40])
    with pytest.raises(MemoryFileError, match='cannot be read') as raised:
        SightingMemory('map').load(path)
    assert not isinstance(raised.value, ForeignFileError)
    # Not a memory file at all: told apart, so that the node leaves it as it is.
    path.write_text('{"frame": "map"')
    with pytest.raises(ForeignFileError, match='not a gem_ros memory file'):
        SightingMemory('map').load(path)


# One good place, then one bad field each (issue 39: each of these once reached ~/recall or
# the markers: a NaN confidence, a response that failed to serialise, a TypeError a second).
GOOD = {
    'query': 'red', 'x': 1.0, 'y': 2.0, 'z': 0.5, 'sightings': 4, 'first_seen': 100.0,
    'last_seen': 110.0, 'confidence': 0.8, 'camera': 'front', 'misses': 0,
}  # fmt: skip
BAD_FIELDS = {
    'nan confidence': {'query': 'green', 'confidence': math.nan},
    'text sightings': {'query': 'blue', 'sightings': 'many'},
    'number query': {'query': 42},
    'null camera': {'query': 'cyan', 'camera': None},
    'far future': {'query': 'magenta', 'last_seen': 1e300},
    'infinite x': {'query': 'pink', 'x': math.inf},
    'boolean count': {'query': 'grey', 'sightings': True},
    'confidence over 1': {'query': 'white', 'confidence': 7.0},
    'seen before first': {'query': 'black', 'first_seen': 200.0},
    'empty query': {'query': '  '},
    'no x': {'query': 'brown', 'x': None},
    'not an object': 'a string',
}


def bad_memory_file(path, frame='map'):
    places = [GOOD] + [
        {**GOOD, **bad} if isinstance(bad, dict) else bad for bad in BAD_FIELDS.values()
    ]
    places[-2].pop('x')
    text = json.dumps({'format': 'gem_ros memory', 'version': 1, 'frame': frame, 'places': places})
    path.write_text(text)  # NaN and Infinity as Python's json writes them
    return path


def test_every_place_of_a_file_is_checked_field_by_field(tmp_path):
    path = bad_memory_file(tmp_path / 'memory.json')
    memory = SightingMemory('map')
    kept, dropped = memory.load(path, now=1000.0)
    assert kept == 1, dropped
    assert len(dropped) == len(BAD_FIELDS), dropped
    for reason, field in zip(dropped, ['confidence', 'sightings', 'query', 'camera', 'last_seen',
                                       'x', 'sightings', 'confidence', 'first_seen', 'query',
                                       'no x', 'not an object']):  # fmt: skip
        assert field in reason, dropped
    (place,) = memory.all_places()
    assert place.query == 'red' and place.camera == 'front'
    assert all(math.isfinite(v) for v in (*place.position, place.confidence, place.last_seen))


def test_a_file_nested_too_deep_or_of_another_kind_is_foreign_and_never_parsed(tmp_path):
    path = tmp_path / 'memory.json'
    for text in ('[' * 200_000, 'my notes\n', '{"version": 2}', '{"places": []}', ''):
        path.write_text(text)
        with pytest.raises(ForeignFileError):
            SightingMemory('map').load(path)
    # One of ours, deeply nested after its signature: unusable, said, not a crash.
    path.write_text('{"format": "gem_ros memory", "places": ' + '[' * 200_000)
    with pytest.raises(MemoryFileError, match='cannot be read: RecursionError'):
        SightingMemory('map').load(path)


def test_the_file_is_never_written_over_what_is_not_ours(tmp_path):
    memory = SightingMemory('map')
    memory.add('mug', (1, 2, 3), 10.0, 0.7, 'front')
    notes = tmp_path / 'notes.txt'
    notes.write_text('my notes')
    with pytest.raises(PathRefused):
        memory.save(notes)
    assert notes.read_text() == 'my notes'
    folder = tmp_path / 'folder'
    folder.mkdir()
    with pytest.raises(PathRefused):
        memory.save(folder)
    assert folder.is_dir() and not any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ['folder', 'notes.txt']


def test_an_unusable_file_of_ours_is_moved_aside_never_over_another(tmp_path):
    path = tmp_path / 'memory.json'
    SightingMemory('odom').save(path)
    theirs = tmp_path / 'memory.json.rejected'
    theirs.write_text('a file of the user that happens to have this name')
    moved = move_aside(path)
    assert moved == tmp_path / 'memory.json.rejected.1'
    assert theirs.read_text() == 'a file of the user that happens to have this name'
    assert not path.exists() and ours(moved, SIGNATURES)


def test_a_path_that_is_no_file_is_refused_at_start(tmp_path):
    with pytest.raises(PathRefused, match='is a folder: name a file in it'):
        check_path(tmp_path, 'memory_file')
    with pytest.raises(PathRefused, match='does not exist'):
        check_path(tmp_path / 'missing' / 'memory.json', 'memory_file')
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    with pytest.raises(PathRefused, match='not a regular file'):
        check_path(fifo, 'memory_file')
    check_path(tmp_path / 'memory.json', 'memory_file')  # absent, in a folder: fine


def test_a_file_over_the_budget_keeps_the_most_recent(tmp_path):
    path = tmp_path / 'memory.json'
    big = SightingMemory('map', max_per_query=100, max_places=100)
    for i in range(20):
        big.add('mug', (float(i), 0, 0), float(i), 0.9, '')
    big.save(path)
    small = SightingMemory('map', max_per_query=5)
    assert small.load(path) == (5, [])
    assert sorted(p.last_seen for p in small.places('mug')) == [15.0, 16.0, 17.0, 18.0, 19.0]
