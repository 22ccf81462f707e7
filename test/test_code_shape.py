"""The sizes docs/python-and-cli.md promises a reader (issue 38): `ros/node.py` under 300
lines, no class in gem_ros over 300 lines and no function over 80 (the eval tables, data
rather than code, aside), read from the source with `ast`."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'gem_ros'
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80
MAX_NODE_LINES = 299


def _oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            lines = getattr(node, 'end_lineno', 0) - getattr(node, 'lineno', 0) + 1
            if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                found.append(f'class {path.relative_to(PACKAGE)}:{node.name} {lines} lines')
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if lines > MAX_FUNCTION_LINES:
                    found.append(f'def {path.relative_to(PACKAGE)}:{node.name} {lines} lines')
    return found


def test_no_class_or_function_of_gem_ros_is_over_its_size():
    assert not _oversized(), 'split these (docs/python-and-cli.md): ' + '; '.join(_oversized())


def test_the_node_is_a_composition_under_300_lines():
    lines = len((PACKAGE / 'ros' / 'node.py').read_text(encoding='utf-8').splitlines())
    assert lines <= MAX_NODE_LINES, f'gem_ros/ros/node.py is {lines} lines'
