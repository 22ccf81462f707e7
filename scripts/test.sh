#!/usr/bin/env bash
# Runs the whole test suite in .venv (made by scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(pwd)/.venv"
# Fast DDS's default shared-memory segment is smaller than one 640x480 rgb8 frame; without
# this, best-effort delivery of the node tests' images mostly fails.
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
# ROS from PyPI wheels has no setup script: launches find packages (gem_ros's share/ and
# launch files, the ros2 verbs) through the ament index under the venv's prefix, and
# `ros2 launch` starts `#!/usr/bin/env python3` executables, which must be the venv's.
# In a sourced ROS workspace the existing AMENT_PREFIX_PATH is kept, with the venv added.
export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$venv/bin:$PATH"
# Lint and format first (configured in pyproject.toml); a finding fails the run.
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check --quiet .
exec "$venv/bin/python" -m pytest "$@"
