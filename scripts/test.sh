#!/usr/bin/env bash
# Runs the whole test suite in the venv made by scripts/setup.sh (GEM_ROS_VENV, default
# .venv). Extra arguments go to pytest.
#
# In parallel by default: GEM_ROS_TEST_WORKERS pytest-xdist workers (default from the
# machine's cores and memory; 1 runs serially), each in a DDS domain of its own
# (test/ros_helpers.py), then the tests marked `serial` one at a time (docs/build.md says
# which and why). `-p no:xdist` among the arguments runs everything serially in one pytest.
# Then scripts/check_test_run.py checks both parts against test/allowed_skips.yaml (an
# unlisted skip fails the run) and prints the slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(cd "${GEM_ROS_VENV:-.venv}" && pwd)"
# Fast DDS's default transports lose most 640x480 rgb8 frames (gem_ros/ros/transports.py): the
# advised setting, shared memory and UDP with 8 MB buffers, which the tests' own processes use
# too (test/ros_helpers.py); this is for the doctor's check.
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-DEFAULT?sockets_size=8MB}"
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

distro="$(cat "$venv/share/gem_ros/ros_distro" 2>/dev/null || echo "${ROS_DISTRO:-jazzy}")"
# Each ViT-B-16 node is about 1.5 GB and many tests wait on DDS, model loads and frames: one
# worker more than the cores, as memory allows (measured on 2 cores: 3 workers 935 s, 4
# 1004 s, 2 983 s; docs/build.md).
default_workers() {
    "$venv/bin/python" - <<'PY'
import os
cores = len(os.sched_getaffinity(0))
with open('/proc/meminfo') as f:
    avail_gib = next(int(l.split()[1]) for l in f if l.startswith('MemAvailable')) / 2**20
print(max(1, min(cores + 1, int((avail_gib - 2) // 2.5), 8)))
PY
}
workers="${GEM_ROS_TEST_WORKERS:-$(default_workers)}"
serially=0
[ "$workers" -le 1 ] && serially=1
whole=(--whole)
for arg in "$@"; do
    case "$arg" in
        no:xdist) serially=1 ;;
        -*) ;;
        *) whole=() ;;  # tests named: not the whole suite
    esac
done
records="$(mktemp -d "${TMPDIR:-/tmp}/gem_ros_test_records.XXXXXX")"
trap 'rm -rf "$records"' EXIT
pytest=("$venv/bin/python" -m pytest)
status=0
if [ "$serially" = 1 ]; then
    echo "=== tests: serially ==="
    GEM_ROS_TEST_RECORD="$records/serial.jsonl" "${pytest[@]}" "$@" || status=$?
else
    echo "=== tests: $workers workers, then the serial group ==="
    # Exit 5 is "no tests collected": a part can be empty when tests are named.
    GEM_ROS_TEST_RECORD="$records/parallel.jsonl" "${pytest[@]}" -n "$workers" \
        --dist loadfile -m 'not serial' "$@" || status=$?
    [ "$status" = 5 ] && status=0
    part=0
    GEM_ROS_TEST_RECORD="$records/serial.jsonl" "${pytest[@]}" -p no:xdist -m serial "$@" \
        || part=$?
    [ "$part" = 5 ] && part=0
    [ "$status" = 0 ] && status=$part
fi
"$venv/bin/python" scripts/check_test_run.py "$records"/*.jsonl --distro "$distro" \
    "${whole[@]}" || { [ "$status" = 0 ] && status=1; }
exit "$status"
