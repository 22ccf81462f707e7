"""RunSettings: what a frame is run with, one snapshot per settings change (no ROS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from gem_ros.gem.hold import HoldRule
from gem_ros.settings import FrameSettings


@dataclass(frozen=True)
class RunSettings:
    """What the worker reads per frame, replaced as a whole when a setting changes, so a
    frame never mixes values of two changes."""

    frame: FrameSettings = field(default_factory=FrameSettings)
    max_image_pixels: int = 3840 * 2160
    max_rate_hz: float = 0.0  # 0 = unlimited
    # Presence held over each camera's frames (gem_ros.gem.hold); None = each frame decides.
    hold: Optional[HoldRule] = None
    # The caller's own per-frame output settings (the node's: mask format, overlay, depth),
    # carried with the frame to its publish, so one frame never mixes two changes.
    outputs: Any = None
