"""The child process of `export_apart` (gem_ros/gem/export_apart.py says why): builds the
model from the spec's settings, loads the parent's visual weights, checks their fingerprint
and exports the graph; its last line on stdout is its pid and niceness, as JSON.

    python -m gem_ros.gem.export_child SPEC
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ..settings import ModelSettings
from .export import export_onnx, weights_fingerprint
from .export_apart import CHILD_NICE
from .loading import load_model


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (a node killed mid-export
    leaves no exporter behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's stop still kills it


def main(spec_path: str) -> int:
    _die_with_parent()
    if not os.environ.get("GEM_ROS_EXPORT_NICED"):  # started without `nice`
        os.nice(CHILD_NICE)
    spec = json.loads(Path(spec_path).read_text())
    settings = replace(ModelSettings(**spec["settings"]), pretrained="none", backend="torch")
    model = load_model(settings)
    state = torch.load(spec["weights"], map_location=model.device, weights_only=True)
    model.clip.visual.load_state_dict(state)
    if weights_fingerprint(model) != spec["fingerprint"]:
        print("the weights read back are not the parent's (fingerprint differs)", flush=True)
        return 3
    model.settings = ModelSettings(**spec["settings"])  # the sidecar's, as the parent's export
    export_onnx(model, spec["out"], tuple(spec["input_hw"]), spec["precision"])
    print(json.dumps({"pid": os.getpid(), "nice": os.nice(0)}), flush=True)  # the last line
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
