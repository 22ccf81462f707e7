#!/usr/bin/env bash
# The colcon route's Python dependencies that have no rosdep keys (open_clip_torch and what it
# brings), installed into the Python of a sourced ROS 2 (Humble, Jazzy, Kilted) while keeping
# the torch and torchvision already there (NVIDIA's JetPack wheels on a Jetson): they are
# pinned, so pip adds packages around them or fails with a conflict, never replaces them.
#
#   bash scripts/install_python_deps.sh [pip options, e.g. --user or --break-system-packages]
set -euo pipefail
python="${PYTHON:-python3}"
if ! "$python" -c 'import torch' 2>/dev/null && [ "$(uname -m)" = aarch64 ]; then
    echo "install_python_deps: no torch in $python. On a Jetson install NVIDIA's JetPack torch" \
         "and torchvision first (docs/deployment.md): PyPI's aarch64 torch is CPU-only." >&2
    exit 2
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
for package in torch torchvision; do
    if version="$("$python" -c "import importlib.metadata as m; print(m.version('$package'))" \
            2>/dev/null)"; then
        echo "$package==$version" >> "$constraints"
        echo "install_python_deps: keeping $package $version"
    fi
done
# rosbags and mcap: `gem-ros bag` (reading and writing bag files without rosbag2's Python).
"$python" -m pip install -c "$constraints" "$@" "open_clip_torch>=3.3,<4" rosbags mcap
