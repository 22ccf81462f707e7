#!/usr/bin/env bash
# Runs the whole test suite in .venv (made by scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Fast DDS's default shared-memory segment is smaller than one 640x480 rgb8 frame; without
# this, best-effort delivery of the node tests' images mostly fails.
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
exec .venv/bin/python -m pytest "$@"
