"""The Fast DDS transport setting camera-size messages need, and what is wrong with another.

Recommended: `DEFAULT?sockets_size=8MB` (shared memory on one computer, UDP between
computers, 8 MB buffers). Measured by `benchmarks/transports.py` (docs/deployment.md has the
tables): on one host and across two network namespaces, 200 fresh participants each found a
stand-in node in 0.21 s (median) with DEFAULT, 0 missed, 0 hung; with
`LARGE_DATA?sockets_size=8MB` in 2.6 s, 5 of 400 missed it for 20 s and 4 hung in teardown
(its TCP channels: Fast DDS 2.14.5's deadlock, docs/deployment.md). Every 640x480 and
1920x1080 frame at 10 and 30 Hz arrived on one host with either; between namespaces DEFAULT
lost 7 of 240 1920x1080 frames at 30 Hz, LARGE_DATA none. `SHM` alone cannot reach another
computer (no participant across namespaces found the node).

Without `sockets_size` frames are lost (100 best-effort rgb8 frames at 10 Hz, one publisher
and one subscriber process, 2026-11-29; `benchmarks/transport_rate.py` through the node):

| FASTDDS_BUILTIN_TRANSPORTS  | Jazzy 480p / 720p / 1080p | Kilted 480p / 720p / 1080p |
|-----------------------------|---------------------------|----------------------------|
| unset (UDP, 512 KB shm)     | 5 / 26 / 6                | 0 / 0 / 0                  |
| LARGE_DATA                  | 7 / 0 / 6                 | 100 / 100 / 100            |
| LARGE_DATA?sockets_size=8MB | 100 / 100 / 100           | 100 / 100 / 100            |

Fast DDS 2.x keeps the system's socket buffer size (`sockets_size` 0) and a 512 KB shared
memory segment, too small for one frame; 8 MB holds a 1920x1080 rgb8 frame (6.2 MB). No
rclpy here: `gem-ros doctor` uses it too.
"""

from __future__ import annotations

import os

VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"
RECOMMENDED = "DEFAULT?sockets_size=8MB"
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
    if "sockets_size" not in value and value.split("?")[0] in ("DEFAULT", "LARGE_DATA", "SHM"):
        return (
            f"{VARIABLE}={value} without sockets_size: the system's socket buffers and a "
            "512 KB shared-memory segment then hold no camera frame, and most are lost "
            "(measured: 0 to 26 of 100 frames of 640x480 to 1920x1080 arrived; LARGE_DATA "
            "loses them on Fast DDS 2.x: Jazzy, Humble)"
        )
    return None
