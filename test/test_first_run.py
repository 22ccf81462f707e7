"""The README's first example runs as written, offline: the block after the `first-run`
marker, in a scratch folder holding this checkout's gem_ros/ and venv, with the Hugging Face
hub switched off."""

import json

import pytest

from doc_examples import run_example

pytestmark = pytest.mark.timeout(300)


def test_readme_first_run_works_offline(tmp_path):
    run_example("README.md", "first-run", tmp_path)
    results = json.loads((tmp_path / "demo" / "out" / "results.json").read_text())
    (image,) = results["images"].values()
    found = {q["query"]: q["found"] for q in image["queries"]}
    assert found == {"red": True, "orange": True, "pink": True, "blue": False}
    assert (tmp_path / "demo" / "out" / "scene00000_overlay.png").is_file()
