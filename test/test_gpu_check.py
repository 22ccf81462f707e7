"""benchmarks/gpu_check.py, the prepared check for the first GPU at hand, kept working where
there is none: its --dry-run runs every check on the CPU with the tiny model and must pass,
writing both reports; without a GPU and without --dry-run it says so and exits 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


def _run(*args, timeout=540):
    return subprocess.run(
        [sys.executable, str(REPO / 'benchmarks/gpu_check.py'), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_dry_run_passes_and_writes_both_reports(tmp_path):
    out = _run(str(tmp_path), '--dry-run')
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    statuses = {c['name']: c['status'] for c in report['checks']}
    assert statuses == {
        'methods on CUDA vs CPU fp32, tiny CLIP': 'pass',
        'presence and pointing on the scenes': 'pass',
        'engine serves on CUDA, backend torch': 'pass',
        'engine serves on CUDA, backend onnxruntime': 'pass',
        'masks leave the GPU once, in pinned memory': 'pass',
        'JPEG frames decoded on the GPU': 'skip',  # CUDA only
        'TensorRT against torch': 'skip',  # CUDA only
        'three cameras on one engine against three engines': 'pass',
    }, report['checks']
    assert '| TensorRT against torch | skip |' in (tmp_path / 'gpu_check.md').read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is here')
def test_without_a_gpu_it_says_so(tmp_path):
    out = _run(str(tmp_path), timeout=120)
    assert out.returncode == 2 and 'no CUDA device here' in out.stdout
