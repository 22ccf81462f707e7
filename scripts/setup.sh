#!/usr/bin/env bash
# Fresh-machine set-up: .venv with gem_ros installed from this checkout (messages built from
# CMakeLists.txt by scikit-build-core), the ROS 2 Kilted wheels and the test tools.
# Re-run it after changing msg/, srv/, CMakeLists.txt, launch/ or config/.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Builds use at most two jobs: this is meant to run on small shared machines too.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
.venv/bin/python -m pip install ".[ros,test]"
