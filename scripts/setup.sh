#!/usr/bin/env bash
# Fresh-machine set-up: a venv for one ROS 2 distro with gem_ros installed from this checkout
# (messages built from CMakeLists.txt by scikit-build-core against that distro's rosidl), the
# distro's ROS 2 wheels from PyPI, the test tools, and, where a bundle of the ROS packages
# that are not on PyPI is found (launch, launch_ros, ros2launch, message_filters,
# vision_msgs: ../shared/ros-launch, or the folder in GEM_ROS_LAUNCH_BUNDLE), those too, and
# tf2_ros where its bundle is (../shared/ros-tf2, or GEM_ROS_TF2_BUNDLE).
#
#   GEM_ROS_DISTRO   jazzy (default, the LTS) or kilted
#   GEM_ROS_VENV     the venv's folder (default .venv); one venv holds one distro only
#   PYTHON           the Python that makes the venv (default python3; >= 3.10)
#   GEM_ROS_SHARED_SITE a folder of the large packages shared between venvs (CI; see below)
#
# A torch that is already importable by $PYTHON (NVIDIA's JetPack wheel, a CUDA build) is
# kept: the venv then sees that Python's packages and pip does not replace them.
# Re-run it after changing msg/, srv/, CMakeLists.txt, launch/ or config/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says how long it took, so that a set-up that grows shows where.
setup_started=$SECONDS
step_started=$SECONDS
step_done() {
    echo "setup: [$((SECONDS - step_started)) s] $1"
    step_started=$SECONDS
}
distro="${GEM_ROS_DISTRO:-jazzy}"
venv="${GEM_ROS_VENV:-.venv}"
python="${PYTHON:-python3}"
case "$distro" in
    jazzy | kilted) ;;
    humble)
        echo "setup: Humble has no PyPI wheels: build gem_ros with colcon in a sourced Humble" \
             "workspace (docs/deployment.md, 'A robot with ROS installed')" >&2
        exit 2 ;;
    *) echo "setup: GEM_ROS_DISTRO must be jazzy or kilted, not '$distro'" >&2; exit 2 ;;
esac

# The distro of an existing venv is the ros-<distro>-rclpy wheel it holds.
venv_distro() {
    "$venv/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
names = {(d.metadata['Name'] or '').lower().replace('_', '-') for d in m.distributions()}
print(' '.join(sorted(n.split('-')[1] for n in names
                      if n.startswith('ros-') and n.endswith('-rclpy') and n.count('-') == 2)))
PY
}
if [ -x "$venv/bin/python" ]; then
    have="$(venv_distro)"
    if [ -n "$have" ] && [ "$have" != "$distro" ]; then
        echo "setup: $venv holds ROS 2 $have, not $distro; a venv never mixes distros." >&2
        echo "setup: remove it, or pick another folder: GEM_ROS_VENV=.venv-$distro" >&2
        exit 2
    fi
else
    if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        echo "setup: the ROS 2 wheels on PyPI are built for CPython 3.11; $python is" \
             "$("$python" -V 2>&1). Use PYTHON=python3.11, or build with colcon in a sourced" \
             "ROS 2 (docs/deployment.md)" >&2
        exit 2
    fi
    # A platform's own torch (JetPack's CUDA wheel on a Jetson: PyPI's aarch64 torch is
    # CPU-only) lives in the system Python: let the venv see it, so pip keeps it.
    system_site=()
    if "$python" -c 'import torch' 2>/dev/null; then
        echo "setup: the venv sees the torch of $python ($("$python" -c 'import torch; print(torch.__file__)'))"
        system_site=(--system-site-packages)
    fi
    "$python" -m venv "${system_site[@]}" "$venv"
    step_done "venv made"
fi
echo "setup: ROS 2 $distro in $venv"
# Builds use at most two jobs: this is meant to run on small shared machines too.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
# GEM_ROS_SHARED_SITE: a folder of the large packages no ROS distro changes, shared by several
# venvs (CI's two distros, one after the other): the first set-up installs torch with its
# CUDA libraries, torchvision, onnxruntime, onnx, Ray and OpenCV into it (about 6 GB
# unpacked, the longest step of a set-up), and each venv sees it through a .pth file, after
# its own site-packages, so the next set-up installs none of them again and pip resolves the
# rest around them. (pip's own cache does not serve here: the registry's answers are not
# cached, and unpacking, not downloading, is what takes the time.)
shared="${GEM_ROS_SHARED_SITE:-}"
if [ -n "$shared" ]; then
    # Set-ups run side by side (CI's two distros): the first fills the folder, holding its
    # lock; the others wait for it here, then see a full folder.
    exec 9>"$shared.lock"
    flock 9
    if [ ! -d "$shared/torch" ]; then
        # Either step failing only costs the saving: the install below gets what is missing.
        "$venv/bin/python" -m pip install -q --target "$shared" --only-binary=:all: \
            torch torchvision onnxruntime onnx "ray>=2.40" opencv-python-headless \
            || echo "setup: installing into $shared failed; installing from the registry"
        step_done "large packages installed into $shared ($(du -sh "$shared" | cut -f1))"
    else
        step_done "large packages found in $shared"
    fi
    flock -u 9
    exec 9>&-
    if [ -d "$shared/torch" ]; then
        site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
        (cd "$shared" && pwd) > "$site/gem_ros_shared.pth"
        echo "setup: the venv sees the large packages of $shared"
    fi
fi
# A torch the venv already sees (the platform's, or the shared folder's) is pinned, so that
# pip keeps it or fails with a conflict, instead of replacing it with PyPI's (CPU-only on
# aarch64).
constraints=()
if torch_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null)"; then
    echo "torch==$torch_version" > "$venv/gem-ros-keep-torch.txt"
    constraints=(-c "$venv/gem-ros-keep-torch.txt")
    echo "setup: keeping torch $torch_version"
fi
# The build backend reads GEM_ROS_DISTRO to pick the ament/rosidl wheels of the same distro.
GEM_ROS_DISTRO="$distro" "$venv/bin/python" -m pip install "${constraints[@]}" \
    ".[$distro,build-$distro,colcon,onnx,bag,ray,test]"
step_done "gem_ros and its Python dependencies installed (pip)"

bundle="${GEM_ROS_LAUNCH_BUNDLE:-../shared/ros-launch}"
if "$venv/bin/python" -c 'import launch_ros, ros2launch, message_filters, vision_msgs' \
        2>/dev/null; then
    echo "setup: launch packages already in $venv"
elif [ -f "$bundle/install.sh" ]; then
    echo "setup: installing the ROS launch bundle from $bundle"
    bash "$bundle/install.sh" "$venv"
    step_done "ROS launch bundle installed"
else
    echo "setup: no ROS launch bundle at $bundle: the launch tests will be skipped" \
         "(or source a ROS 2 installation that has launch_ros)"
fi
# tf2 (tf2_ros, tf2_geometry_msgs) is not on PyPI either: built from the bundle's geometry2
# sources (../shared/ros-tf2, or the folder in GEM_ROS_TF2_BUNDLE), for target_frame and the
# memory of sightings.
tf2_bundle="${GEM_ROS_TF2_BUNDLE:-../shared/ros-tf2}"
if "$venv/bin/python" -c 'import tf2_ros, tf2_geometry_msgs' 2>/dev/null; then
    echo "setup: tf2_ros already in $venv"
elif [ -f "$tf2_bundle/install.sh" ]; then
    echo "setup: installing the tf2 bundle from $tf2_bundle"
    bash "$tf2_bundle/install.sh" "$venv"
    step_done "tf2 bundle installed"
else
    echo "setup: no tf2 bundle at $tf2_bundle: target_frame and memory_frame are refused and" \
         "their tests skipped (or source a ROS 2 installation that has tf2_ros)"
fi
"$venv/bin/gem-ros" doctor || true
step_done "doctor"
echo "setup: ROS 2 $distro in $venv took $((SECONDS - setup_started)) s"
