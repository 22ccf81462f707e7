#!/usr/bin/env bash
# Fresh-machine set-up: .venv with gem_ros installed from this checkout (messages built from
# CMakeLists.txt by scikit-build-core), the ROS 2 Kilted wheels and the test tools; and, where
# a bundle of the ROS packages that are not on PyPI is found (launch, launch_ros, ros2launch,
# message_filters, vision_msgs: ../shared/ros-launch, or the folder in GEM_ROS_LAUNCH_BUNDLE),
# those too, so that `ros2 launch` works and the launch tests run.
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

bundle="${GEM_ROS_LAUNCH_BUNDLE:-../shared/ros-launch}"
if .venv/bin/python -c 'import launch_ros, ros2launch, message_filters, vision_msgs' \
        2>/dev/null; then
    echo "setup: launch packages already in .venv"
elif [ -f "$bundle/install.sh" ]; then
    echo "setup: installing the ROS launch bundle from $bundle"
    bash "$bundle/install.sh" .venv
else
    echo "setup: no ROS launch bundle at $bundle: the launch tests will be skipped" \
         "(or source a ROS 2 installation that has launch_ros)"
fi
