"""rviz markers of a frame's 3D points: a sphere and a text label per query with a point."""

from geometry_msgs.msg import Point, Pose, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from gem_ros.overlay import query_colours

POINTS_NS = 'gem_points'
LABELS_NS = 'gem_labels'


class QueryMarkers:
    """Builds the MarkerArray of each GemResult for one node.

    A query keeps its marker id for the node's lifetime (rviz replaces markers by namespace
    and id, so a moving point moves instead of leaving copies); the markers of a query that
    disappeared or lost its point are deleted in the next array.
    """

    def __init__(self, diameter: float = 0.05):
        self._diameter = diameter
        self._ids: dict[str, int] = {}
        self._shown: dict[str, int] = {}  # query -> id of what rviz shows now

    def build(self, result, in_target_frame: bool = False) -> MarkerArray:
        """The markers of `result` (a GemResult: header, results with query, score,
        has_point, point), in the header's frame and stamp; with in_target_frame, those of
        the target points, in their frame (a point without one is left out)."""
        markers, shown = [], {}
        colours = query_colours([r.query for r in result.results])  # the overlay's colours
        for index, r in enumerate(result.results):
            if in_target_frame:
                if not r.has_target_point:
                    continue
                header, point = r.target_point.header, r.target_point.point
            elif r.has_point:
                header, point = result.header, r.point
            else:
                continue
            marker_id = self._ids.setdefault(r.query, len(self._ids))
            shown[r.query] = marker_id
            red, green, blue = (c / 255.0 for c in colours[index])
            tint = ColorRGBA(r=red, g=green, b=blue, a=1.0)
            d = self._diameter
            markers.append(
                Marker(
                    header=header,
                    ns=POINTS_NS,
                    id=marker_id,
                    type=Marker.SPHERE,
                    action=Marker.ADD,
                    pose=_pose(point.x, point.y, point.z),
                    scale=Vector3(x=d, y=d, z=d),
                    color=tint,
                )
            )
            # Above the sphere: in an optical frame y points down; in a robot frame
            # (REP 103) z points up.
            above = (0.0, 0.0, 1.5 * d) if in_target_frame else (0.0, -1.5 * d, 0.0)
            markers.append(
                Marker(
                    header=header,
                    ns=LABELS_NS,
                    id=marker_id,
                    type=Marker.TEXT_VIEW_FACING,
                    action=Marker.ADD,
                    pose=_pose(point.x + above[0], point.y + above[1], point.z + above[2]),
                    scale=Vector3(z=d),
                    color=tint,
                    text=f'{r.query} ({r.score:.2f})',
                )
            )
        header = result.header  # rviz deletes by namespace and id, whatever the frame
        for query, marker_id in sorted(self._shown.items(), key=lambda item: item[1]):
            if query not in shown:
                markers += [
                    Marker(header=header, ns=ns, id=marker_id, action=Marker.DELETE)
                    for ns in (POINTS_NS, LABELS_NS)
                ]
        self._shown = shown
        return MarkerArray(markers=markers)


def _pose(x: float, y: float, z: float) -> Pose:
    pose = Pose(position=Point(x=x, y=y, z=z))
    pose.orientation.w = 1.0
    return pose
