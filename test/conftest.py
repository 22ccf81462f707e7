"""pytest set-up. The helpers live in ros_helpers.py (importable by tests and benchmarks);
importing it sets the DDS environment of this process and the node processes before any
rclpy.init."""

import ros_helpers  # noqa: F401
