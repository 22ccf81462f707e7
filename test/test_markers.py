"""rviz markers: stable ids per query across frames, deletes when a query loses its point."""

from geometry_msgs.msg import Point
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from gem_ros.msg import GemResult, QueryResult
from gem_ros.ros.markers import LABELS_NS, POINTS_NS, QueryMarkers


def frame(stamp: int, *queries):
    """A GemResult; each query is (text, point or None)."""
    header = Header(frame_id='camera_color_optical_frame')
    header.stamp.sec = stamp
    results = [
        QueryResult(
            query=q,
            score=0.25,
            has_point=p is not None,
            point=Point(x=p[0], y=p[1], z=p[2]) if p else Point(),
        )
        for q, p in queries
    ]
    return GemResult(header=header, results=results)


def by_action(array, action):
    return {(m.ns, m.id) for m in array.markers if m.action == action}


def ids(array):
    """query -> id of its sphere, from the labels' text."""
    labels = {m.id: m.text for m in array.markers if m.ns == LABELS_NS and m.action == Marker.ADD}
    return {text.split(' (')[0]: marker_id for marker_id, text in labels.items()}


def test_a_sphere_and_a_label_per_query_with_a_point():
    result = frame(1, ('red mug', (0.1, -0.2, 1.5)), ('person', None))
    array = QueryMarkers(diameter=0.04).build(result)
    assert [(m.ns, m.type, m.action) for m in array.markers] == [
        (POINTS_NS, Marker.SPHERE, Marker.ADD),
        (LABELS_NS, Marker.TEXT_VIEW_FACING, Marker.ADD),
    ]
    sphere, label = array.markers
    for m in array.markers:
        assert m.header == result.header
        assert m.pose.orientation.w == 1.0 and m.color.a == 1.0
    assert (sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z) == (
        0.1,
        -0.2,
        1.5,
    )
    assert (sphere.scale.x, sphere.scale.y, sphere.scale.z) == (0.04, 0.04, 0.04)
    assert label.text == 'red mug (0.25)'
    assert label.pose.position.y < sphere.pose.position.y  # above it in the image
    assert label.id == sphere.id


def test_ids_stay_with_their_query_across_frames():
    markers = QueryMarkers()
    first = ids(markers.build(frame(1, ('red mug', (0, 0, 1)), ('person', (1, 0, 2)))))
    assert len(set(first.values())) == 2
    swapped = ids(markers.build(frame(2, ('person', (1, 0, 2.1)), ('red mug', (0, 0, 1.1)))))
    assert swapped == first
    grown = ids(markers.build(frame(3, ('cup', (0, 1, 1)), ('red mug', (0, 0, 1)))))
    assert grown['red mug'] == first['red mug']
    assert grown['cup'] not in first.values()


def test_queries_that_lose_their_point_or_disappear_are_deleted_once():
    markers = QueryMarkers()
    start = ids(markers.build(frame(1, ('red mug', (0, 0, 1)), ('person', (1, 0, 2)))))
    lost = markers.build(frame(2, ('red mug', (0, 0, 1)), ('person', None)))
    assert by_action(lost, Marker.DELETE) == {
        (POINTS_NS, start['person']),
        (LABELS_NS, start['person']),
    }
    assert by_action(lost, Marker.ADD) == {
        (POINTS_NS, start['red mug']),
        (LABELS_NS, start['red mug']),
    }
    still_lost = markers.build(frame(3, ('red mug', (0, 0, 1)), ('person', None)))
    assert by_action(still_lost, Marker.DELETE) == set()  # rviz no longer shows it
    gone = markers.build(frame(4, ('person', (1, 0, 2))))
    assert by_action(gone, Marker.DELETE) == {
        (POINTS_NS, start['red mug']),
        (LABELS_NS, start['red mug']),
    }
    assert ids(gone) == {'person': start['person']}  # back, with its old id
    for m in gone.markers:
        assert m.header.stamp.sec == 4
    assert markers.build(frame(5)).markers and not markers.build(frame(6)).markers
