"""The README's first example runs as written, offline: the block after the `first-run`
marker, in a scratch folder holding this checkout's gem_ros/ and venv, with the Hugging Face
hub switched off."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def first_run_block() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- first-run[^>]*-->\s*```bash\n(.*?)```", readme, re.S)
    assert match, "README.md lost its first-run block"
    return match.group(1)


def test_readme_first_run_works_offline(tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "gem_ros").symlink_to(REPO / "gem_ros")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(tmp_path))
    out = subprocess.run(
        ["bash", "-e", "-c", first_run_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    results = json.loads((tmp_path / "demo" / "out" / "results.json").read_text())
    (image,) = results["images"].values()
    found = {q["query"]: q["found"] for q in image["queries"]}
    assert found == {"red": True, "orange": True, "pink": True, "blue": False}
    assert (tmp_path / "demo" / "out" / "scene00000_overlay.png").is_file()
