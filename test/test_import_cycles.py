"""No two gem_ros modules import each other, directly or through others: every import (at
module level or inside a function) read from the source with `ast`, and the module graph
searched for a cycle. A package's own `__init__` counts as a module (importing a submodule
runs its package first, so `a.b -> a` is no edge of its own)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'gem_ros'


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports(path: Path, modules: set) -> set:
    """The gem_ros modules `path` imports (the longest known prefix of each name)."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[: len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod where that is a module.
            targets = [f'{base}.{a.name}' for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition('.')[0]
            if target and target != name and not name.startswith(target + '.'):
                found.add(target)
    return found


def cycles(graph: dict) -> list:
    """Every cycle found by a depth-first search, each as the list of its modules."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_no_module_of_gem_ros_imports_itself_through_others():
    files = sorted(PACKAGE.rglob('*.py'))
    modules = {module_name(p) for p in files}
    graph = {module_name(p): imports(p, modules) for p in files}
    assert 'gem_ros.model_args' in graph['gem_ros.ros.bag'], 'the parser saw no imports'
    assert cycles(graph) == []


def test_the_search_finds_a_cycle():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]
