"""Run a documentation page's example block as a reader would: the ```bash block after an
HTML comment marker (`<!-- NAME: ... -->`), in a scratch folder holding this checkout's
gem_ros/ and venv (`source .venv/bin/activate` works there), offline (Hugging Face hub off)."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def example_block(page: str, marker: str) -> str:
    text = (REPO / page).read_text()
    match = re.search(rf'<!-- {marker}[^>]*-->\s*```bash\n(.*?)```', text, re.S)
    assert match, f'{page} lost its {marker} block'
    return match.group(1)


def run_example(page: str, marker: str, folder: Path, env: dict = None):
    """The finished bash run (CompletedProcess) of the block; asserts it exited 0."""
    (folder / '.venv').symlink_to(Path(sys.prefix))
    (folder / 'gem_ros').symlink_to(REPO / 'gem_ros')
    env = dict(env or os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=str(folder))
    run = subprocess.run(
        ['bash', '-e', '-c', example_block(page, marker)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run
