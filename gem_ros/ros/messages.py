"""gem_ros messages from detections: pure functions, no node state.

vision_msgs (Detection2DArray) is optional: `detection_array` is None where it is not
installed, and the node then says so once and publishes no ~/detections.
"""

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest

from gem_ros.msg import GemResult, Heatmaps, QueryResult
from gem_ros.ros.image_conversion import _image_msg, mask_to_image_msg

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # not on PyPI; ROS installs and the launch bundle have it
    Detection2DArray = None

MASK_FORMATS = ('full', 'patch', 'none')
NO_VISION_MSGS = (
    'vision_msgs is not installed: ~/detections (vision_msgs/Detection2DArray) is not '
    'published; install ros-$ROS_DISTRO-vision-msgs to get it'
)


def query_result(
    detection, header, point_fields: dict, mask_format: str = 'full', mask_threshold: float = 0.5
) -> QueryResult:
    """One query's QueryResult: presence, raw peak score, peak, box, area, 3D point, and the
    mask as `mask_format` says: 'full' mono8 at the image's size, 'patch' mono8 at the
    model's patch grid, 'none' an empty Image (header only). Not found: all zeros."""
    d = detection
    return QueryResult(
        query=d.query,
        found=d.found,
        confidence=d.confidence,
        score=d.score,
        peak_x=d.peak_x,
        peak_y=d.peak_y,
        bbox=RegionOfInterest(
            x_offset=d.bbox[0], y_offset=d.bbox[1], width=d.bbox[2], height=d.bbox[3]
        ),
        area=d.area,
        mask=_mask(d, header, mask_format, mask_threshold),
        **point_fields,
    )


def _mask(d, header, mask_format: str, threshold: float) -> Image:
    if mask_format == 'full':
        return mask_to_image_msg(d.mask, header)
    if mask_format == 'patch':
        grid = d.patch_logits
        lo, span = grid.min(), grid.max() - grid.min()
        # the full-size mask's rule (min-max normalised > threshold), at the patch grid
        if d.found and span > 1e-6:
            mask = (grid - lo) > threshold * span
        else:
            mask = np.zeros(grid.shape, bool)
        return mask_to_image_msg(np.ascontiguousarray(mask), header)
    return Image(header=header)


def gem_result(
    header, detections, seconds: float, points=None, mask_format='full', mask_threshold=0.5
) -> GemResult:
    """The GemResult of one frame; `points` holds each detection's point fields (has_point,
    point, ...; see DepthInput.points_for), or None without depth."""
    points = points if points is not None else [{}] * len(detections)
    return GemResult(
        header=header,
        inference_seconds=seconds,
        results=[
            query_result(d, header, p, mask_format, mask_threshold)
            for d, p in zip(detections, points)
        ],
    )


def heatmaps(header, detections) -> Heatmaps:
    """The patch-grid cosines of a frame's queries as 32FC1 images (detections made with
    return_patch_logits)."""
    maps = []
    for d in detections:
        grid = np.ascontiguousarray(d.patch_logits, np.float32)
        rows, cols = grid.shape
        maps.append(_image_msg(header, rows, cols, '32FC1', cols * 4, grid.view(np.uint8)))
    return Heatmaps(header=header, queries=[d.query for d in detections], maps=maps)


def detection_array(header, detections, points=None):
    """vision_msgs/Detection2DArray: one Detection2D per found query (class_id = the query,
    score = its presence confidence, bbox = the mask's box with its centre in continuous
    pixel coordinates, pixel (i, j) spanning [i, i+1)); with a 3D point, the hypothesis
    pose's position is that point in the camera optical frame (metres)."""
    points = points if points is not None else [{}] * len(detections)
    out = Detection2DArray(header=header)
    for d, p in zip(detections, points):
        if not d.found:
            continue
        det = Detection2D(header=header, id=d.query)
        x, y, w, h = d.bbox if d.area else (d.peak_x, d.peak_y, 0, 0)
        det.bbox.center.position.x = x + w / 2.0
        det.bbox.center.position.y = y + h / 2.0
        det.bbox.size_x, det.bbox.size_y = float(w), float(h)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = d.query
        hypothesis.hypothesis.score = float(d.confidence)
        if p.get('has_point'):
            hypothesis.pose.pose.position = p['point']
            hypothesis.pose.pose.orientation.w = 1.0
        det.results = [hypothesis]
        out.detections.append(det)
    return out
