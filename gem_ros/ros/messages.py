"""gem_ros messages from detections: pure functions, no node state."""

from sensor_msgs.msg import RegionOfInterest

from gem_ros.msg import GemResult, QueryResult
from gem_ros.ros.image_conversion import mask_to_image_msg


def query_result(detection, header, point_fields: dict) -> QueryResult:
    """One query's QueryResult: presence, raw peak score, peak, box, area, mono8 mask (empty
    when not found), 3D point."""
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
        mask=mask_to_image_msg(d.mask, header),
        **point_fields,
    )


def gem_result(header, detections, seconds: float, points=None) -> GemResult:
    """The GemResult of one frame; `points` holds each detection's point fields (has_point,
    point, ...; see DepthInput.points_for), or None without depth."""
    points = points if points is not None else [{}] * len(detections)
    return GemResult(
        header=header,
        inference_seconds=seconds,
        results=[query_result(d, header, p) for d, p in zip(detections, points)],
    )
