#!/usr/bin/env bash
# Runs the whole test suite in the venv made by scripts/setup.sh (GEM_ROS_VENV, default
# .venv). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(cd "${GEM_ROS_VENV:-.venv}" && pwd)"
# Fast DDS's default transports, and Jazzy's plain LARGE_DATA, lose most 640x480 rgb8 frames
# (gem_ros/ros/transports.py). The tests' own processes use shared memory and UDP with 8 MB
# buffers (test/ros_helpers.py says why); this is for the doctor's check.
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA?sockets_size=8MB}"
# ROS from PyPI wheels has no setup script: launches find packages (gem_ros's share/ and
# launch files, the ros2 verbs) through the ament index under the venv's prefix, and
# `ros2 launch` starts `#!/usr/bin/env python3` executables, which must be the venv's.
# In a sourced ROS workspace the existing AMENT_PREFIX_PATH is kept, with the venv added.
export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$venv/bin:$PATH"
# Lint and format first (configured in pyproject.toml), then nothing newer than Python 3.10
# (JetPack 6's); a finding fails the run.
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check --quiet .
"$venv/bin/vermin" --no-config-file -q -t=3.10- --violations --eval-annotations --no-tips \
    --backport typing_extensions gem_ros launch scripts/gem_node scripts/*.py build_backend \
    test benchmarks
# What this environment has (this checkout's doctor; exit 1 when the node cannot run here).
"$venv/bin/python" -m gem_ros.cli doctor --model test/fixtures/gem-tiny-test.json \
    --pretrained test/fixtures/gem-tiny-test.pt
exec "$venv/bin/python" -m pytest "$@"
