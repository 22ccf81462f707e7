"""One frame's results, the one object everything that consumes them reads: the publishers,
the answers to `~/locate`, the memory of sightings (and later consumers), with the frame's
geometry measured once.

    result = FrameResult(camera, frame, rgb, detections, active, seconds, settings)
    result.geometry = FrameGeometry(tf_frame, points, view, lookup)   # the host measures it
    xyz = result.geometry.point_in(i, 'map')     # detection i's point in a TF frame, or raises

No ROS in here: the host (the node's depth input and TF buffer, or an offline tool) gives the
points and the lookup. A FrameResult lives on the engine's publish stage (one thread), from the
frame's detections until its publish and answers return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from gem_ros.geometry import TransformUnavailable, apply_transform

if TYPE_CHECKING:
    from gem_ros.run_settings import RunSettings

Pose = tuple  # ((x, y, z) translation, (x, y, z, w) rotation): points of one frame into another


@dataclass
class FrameGeometry:
    """Where a frame's detections are in 3D, measured once per frame.

    points: per detection of the FrameResult, its (x, y, z) in the camera's TF frame, or None
    (not found, or no valid depth at its peak). view: (depth in metres [h, w], K of that grid),
    what the camera could see (the memory's negative evidence); None without depth. lookup:
    tf_frame -> the Pose from the camera's TF frame into it at the frame's stamp, raising
    TransformUnavailable (None: no TF here). Each TF frame is looked up at most once per frame,
    whoever asks (the target points, `~/locate`, the memory)."""

    tf_frame: str
    points: list
    view: Optional[tuple] = None
    lookup: Optional[Callable[[str], Pose]] = None
    _poses: dict = field(default_factory=dict, repr=False)

    def pose_to(self, tf_frame: str) -> Pose:
        """The camera's TF frame -> `tf_frame` at the frame's stamp; TransformUnavailable with
        the reason (the same reason again, without a second lookup, for a frame that failed)."""
        if tf_frame == self.tf_frame:
            return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)
        if tf_frame not in self._poses:
            if self.lookup is None:
                self._poses[tf_frame] = TransformUnavailable(
                    f'no TF to {tf_frame!r} here (tf2_ros missing)'
                )
            else:
                try:
                    self._poses[tf_frame] = self.lookup(tf_frame)
                except TransformUnavailable as exc:
                    self._poses[tf_frame] = exc
        pose = self._poses[tf_frame]
        if isinstance(pose, TransformUnavailable):
            raise pose
        return pose

    def point_in(self, index: int, tf_frame: str) -> Optional[tuple]:
        """Detection `index`'s point in `tf_frame` (None: it has none); TransformUnavailable."""
        point = self.points[index]
        if point is None:
            return None
        return apply_transform(point, *self.pose_to(tf_frame))


@dataclass
class FrameResult:
    """One processed frame. detections: the camera's active queries' first (`active` of them,
    what is published), then the questions' that were not among them."""

    camera: str
    frame: object  # the host's frame: the node's camera Frame, the bag tool's message
    rgb: object  # the RGB image the model saw (numpy, or a tensor on the GPU)
    detections: list
    active: int
    seconds: float  # the forward's time
    settings: RunSettings
    geometry: Optional[FrameGeometry] = None  # set by the host's measure, before any consumer
    # The frame's (patch tokens [h/p, w/p, D], image embedding [D]), float32 numpy, where the
    # host asked for them (the map of dense features); None otherwise.
    tokens: object = None

    @property
    def published(self) -> list:
        """The detections of the camera's active queries (what its topics carry)."""
        return self.detections[: self.active]

    def index_of(self, query: str) -> int:
        """The first detection of `query` (an active query's, where it is one)."""
        return next(i for i, d in enumerate(self.detections) if d.query == query)
