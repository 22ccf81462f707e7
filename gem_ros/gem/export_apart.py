"""A graph exported in a process of its own at low priority, for a model that serves meanwhile.

    export_apart(model, path, input_hw, precision, stop)   # the node's loader (or a build)
    python -m gem_ros.gem.export_apart SPEC                 # the child it starts

Why: torch.onnx.export traces in Python and runs its graph passes holding the interpreter
lock for seconds at a time; in the node's process that held the stage threads of the model
still serving (a switch to onnxruntime stopped results for 7.5 s on 2 cores, issue 38). The
child has an interpreter of its own and runs at nice CHILD_NICE, so the serving process keeps
its cores and the child takes what they leave.

The child builds the same model from its settings (random weights, no download), loads the
parent's visual weights from a file the parent writes beside the graph, checks their
fingerprint (the graph cache is keyed on it), and calls `export_onnx`, which writes the graph
and its sidecar atomically. The parent waits, polling `stop`: a stopping node kills the child
at once; a child whose parent dies is killed by the kernel (PR_SET_PDEATHSIG). The weights,
spec and log files are removed whatever happens.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from .export import ExportError, export_onnx, weights_fingerprint

CHILD_NICE = 10  # CFS weight 110 against the node's 1024: about a tenth of a busy core
POLL_S = 0.2
LOG_TAIL = 2000  # characters of the child's output in an error


def export_apart(
    model,
    path: str | Path,
    input_hw: tuple[int, int],
    precision: str = "fp32",
    stop: Optional[threading.Event] = None,
) -> dict:
    """`export_onnx(model, path, input_hw, precision)` in a child process at low priority;
    the child's pid and niceness. ExportError with the child's own words when it fails, or
    when `stop` is set meanwhile (the child killed, its partial files removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = f"{path.stem}.{os.getpid()}.{threading.get_ident()}.partial"
    weights, spec, log = (path.with_name(stem + s) for s in (".weights", ".spec.json", ".log"))
    try:
        torch.save(model.clip.visual.state_dict(), weights)
        spec.write_text(
            json.dumps(
                {
                    "settings": asdict(model.settings),
                    "weights": str(weights),
                    "fingerprint": weights_fingerprint(model),
                    "input_hw": [int(v) for v in input_hw],
                    "precision": precision,
                    "out": str(path),
                }
            )
        )
        with open(log, "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(spec)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_child_env(),
            )
            try:
                code = _wait(child, stop)
            finally:  # stopped (or this thread interrupted): the child and its half a graph
                if child.poll() is None:
                    child.kill()
                    child.wait()
                pattern = f"{glob.escape(path.stem)}.{child.pid}.*.partial.*"
                for partial in path.parent.glob(pattern):
                    partial.unlink(missing_ok=True)
        words = log.read_text(errors="replace")
        if code == 0:
            return json.loads(words.strip().splitlines()[-1])
        raise ExportError(
            f"the export of {path.name} in a child process failed (exit {code}): "
            + words[-LOG_TAIL:].strip()
        )
    finally:
        for leftover in (weights, spec, log):
            leftover.unlink(missing_ok=True)


def _wait(child: subprocess.Popen, stop: Optional[threading.Event]) -> int:
    while True:
        try:
            return child.wait(POLL_S)
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                raise ExportError("the export was stopped (the node is stopping)") from None


def _child_env() -> dict:
    """This process's environment, with this gem_ros first on the child's path."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (a node killed mid-export
    leaves no exporter behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's stop still kills it


def _child(spec_path: str) -> int:
    _die_with_parent()
    os.nice(CHILD_NICE)
    from dataclasses import replace

    from ..settings import ModelSettings
    from .loading import load_model

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
    sys.exit(_child(sys.argv[1]))
