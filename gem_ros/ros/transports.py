"""The Fast DDS transport setting camera-size messages need, and what is wrong with another.

Frames received of 100 best-effort rgb8 frames at 10 Hz, one publisher and one subscriber
process on one machine (Jazzy: Fast DDS 2.14; Kilted: Fast DDS 3.2; measured 2026-11-29 on the
2-core CI machine; `benchmarks/transport_rate.py` measures the same through the node):

| FASTDDS_BUILTIN_TRANSPORTS  | Jazzy 480p / 720p / 1080p | Kilted 480p / 720p / 1080p |
|-----------------------------|---------------------------|----------------------------|
| unset (UDP, 512 KB shm)     | 5 / 26 / 6                | 0 / 0 / 0                  |
| LARGE_DATA                  | 7 / 0 / 6                 | 100 / 100 / 100            |
| LARGE_DATA?sockets_size=8MB | 100 / 100 / 100           | 100 / 100 / 100            |

Fast DDS 2.x's LARGE_DATA keeps the system's socket buffer size (`sockets_size` 0) for its
TCP and shared-memory transports, too small for one frame; 8 MB holds a 1920x1080 rgb8 frame
(6.2 MB). No rclpy here: `gem-ros doctor` uses it too.
"""

from __future__ import annotations

import os

VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"
RECOMMENDED = "LARGE_DATA?sockets_size=8MB"
FIX = (
    f"export {VARIABLE}='{RECOMMENDED}' in this shell and in the camera driver's, then restart both"
)


def transport_problem(environ=os.environ) -> str | None:
    """Why this environment's Fast DDS transports lose camera frames, or None."""
    rmw = environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not rmw.startswith("rmw_fastrtps"):
        return None
    value = environ.get(VARIABLE, "")
    if not value:
        return (
            f"{VARIABLE} is not set: with Fast DDS's default transports most camera frames "
            "over about 500 KB (640x480 rgb8 is 921 KB) are lost on the way (measured: 0 to "
            "26 of 100 arrived)"
        )
    if value.split("?")[0] == "LARGE_DATA" and "sockets_size" not in value:
        return (
            f"{VARIABLE}={value} without sockets_size: Fast DDS 2.x (Jazzy, Humble) then "
            "keeps the system's socket buffers and loses most camera frames (measured on "
            "Jazzy: 0 to 7 of 100 frames of 640x480 to 1920x1080 arrived)"
        )
    return None
