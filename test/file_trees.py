"""A folder's whole content, for tests that plant a user's files and folders and check that
nothing there was renamed, moved or overwritten (issue 39)."""

from pathlib import Path


def tree(root: Path) -> dict:
    """{relative path: its bytes, or 'folder'} of everything under `root`."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else 'folder'
        for p in sorted(Path(root).rglob('*'))
    }
