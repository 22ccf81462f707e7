"""A graph exported in a process of its own at low priority, for a model that serves meanwhile.

    export_apart(model, path, input_hw, precision, stop)   # the node's loader (or a build)
    python -m gem_ros.gem.export_child SPEC                 # the child it starts

Why: in the node's process, torch.onnx.export (ViT-B-16 at 448, 2 cores) held the interpreter
lock for up to 0.9 s at a time (a 5 ms probe thread's longest gaps: 0.93, 0.76, 0.57 s) and
both cores for 8 s, beside the stage threads of the model still serving: a switch to
onnxruntime left 2.5-3.1x the usual period between two results (benchmarks/backend_switch.py).
The child has an interpreter of its own and runs on one thread at nice CHILD_NICE from its
start, so the serving process keeps its other cores and most of that one (the same probe
beside export_apart: no gap over 0.01 s).

The child builds the same model from its settings (random weights, no download), loads the
parent's visual weights from a file the parent writes beside the graph, checks their
fingerprint (the graph cache is keyed on it), and calls `export_onnx`, which writes the graph
and its sidecar atomically. The parent waits, polling `stop`: a stopping node kills the child
at once; a child whose parent dies is killed by the kernel (PR_SET_PDEATHSIG). The weights,
spec and log files are removed whatever happens.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from .export import ExportError, weights_fingerprint

CHILD_MODULE = "gem_ros.gem.export_child"  # what the child runs (it imports the loader)
# CFS weight 335 against the node's 1024, on one core (CHILD_THREADS): the node keeps the
# others and most of that one. At nice 10 (weight 110), with CI's three test processes on two
# cores, a tiny model's export took over 45 s (the node's test waits 60 s for a switch).
CHILD_NICE = 5
CHILD_THREADS = 1
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
                [*_nice(), sys.executable, "-m", CHILD_MODULE, str(spec)],
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


def _nice() -> list[str]:
    """`nice -n CHILD_NICE`: the child is niced from its start, its imports (torch: seconds
    of a core) included; where there is no `nice`, the child nices itself."""
    command = shutil.which("nice")
    return [command, "-n", str(CHILD_NICE)] if command else []


def _child_env() -> dict:
    """This process's environment, with this gem_ros first on the child's path."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    threads = str(CHILD_THREADS)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "GEM_ROS_EXPORT_NICED": "1" if _nice() else "",
        "OMP_NUM_THREADS": threads,  # torch's intra-op threads: one core of the node's
        "MKL_NUM_THREADS": threads,
    }
