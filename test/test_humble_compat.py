"""gem_ros uses no rclpy, launch, launch_ros or message_filters name that ROS 2 Humble (JetPack
6) lacks, except behind a fallback in gem_ros/ros/compat.py.

Nothing can run Humble here (no wheels), so this reads Humble's Python sources
(../shared/ros-humble-reference) and the installed distro's, and compares what the shipped code
(gem_ros/, launch/, scripts/gem_node) uses with what Humble defines:
- every `from M import N` / `import M` of those packages must exist in Humble, unless it sits
  in a `try` that catches ImportError (a fallback);
- every attribute or keyword name that the installed distro's packages define and Humble's do
  not must appear nowhere but in compat.py, which checks for it with hasattr() first.
"""

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HUMBLE = REPO.parent / 'shared' / 'ros-humble-reference'
HUMBLE_SOURCES = {
    'rclpy': HUMBLE / 'rclpy-3.3.15' / 'rclpy' / 'rclpy',
    'launch': HUMBLE / 'launch-humble' / 'launch' / 'launch',
    'launch_ros': HUMBLE / 'launch_ros-humble' / 'launch_ros' / 'launch_ros',
    'message_filters': HUMBLE / 'message_filters-humble' / 'src' / 'message_filters',
}
COMPAT = REPO / 'gem_ros' / 'ros' / 'compat.py'

pytestmark = pytest.mark.skipif(
    not HUMBLE.is_dir(), reason=f'no Humble sources at {HUMBLE} (../shared is not here)'
)


def shipped_sources() -> dict[str, str]:
    """The code users run: the package, the launch file and the node's launcher script."""
    paths = [*(REPO / 'gem_ros').rglob('*.py'), *(REPO / 'launch').glob('*.py')]
    paths.append(REPO / 'scripts' / 'gem_node')
    return {str(p.relative_to(REPO)): p.read_text() for p in sorted(paths)}


def installed_source(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def defined_names(root: Path) -> set[str]:
    """Every name a package's Python sources define: modules, classes, functions, their
    parameters, attributes assigned (self.x = ...) and module-level names."""
    names = set()
    for path in root.rglob('*.py'):
        names.add(path.stem)
        tree = ast.parse(path.read_text(errors='replace'))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            if isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split('.')[0] for a in node.names)
        names -= _type_variables(tree)
    return names


def _type_variables(tree: ast.AST) -> set[str]:
    """Names bound to TypeVar(...): typing helpers (Kilted's `T`), no API a caller can use;
    counting them flagged numpy's `.T` in a ROS module."""
    return {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, 'id', getattr(node.value.func, 'attr', None)) == 'TypeVar'
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def mentioned_names(root: Path) -> set[str]:
    """Every identifier a package's Python sources mention (defined or used)."""
    names = set()
    for path in root.rglob('*.py'):
        names.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text(errors='replace'))):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update(part for a in node.names for part in a.name.split('.'))
    return names


def pybind_names(root: Path) -> set[str]:
    """What rclpy's C extension (`_rclpy_pybind11`, no Python source) has in Humble: the names
    Humble's own Python code takes from it (`_rclpy.X`)."""
    names = set()
    for path in root.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(errors='replace'))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == '_rclpy'
            ):
                names.add(node.attr)
    return names


def module_defines(root: Path, package: str, module: str, name: str | None) -> bool:
    """Whether Humble's `module` (dotted, under `package`) exists and defines `name`."""
    if module == 'rclpy._rclpy_pybind11':
        return name is None or name in pybind_names(root)
    parts = module.split('.')[1:]
    base = root.joinpath(*parts)
    path = base / '__init__.py' if base.is_dir() else base.with_suffix('.py')
    if not path.is_file():
        return False
    if name is None or (base / f'{name}.py').is_file() or (base / name).is_dir():
        return True
    tree = ast.parse(path.read_text(errors='replace'))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) and sub.id == name:
                return True
            if isinstance(sub, (ast.Import, ast.ImportFrom)) and any(
                (a.asname or a.name).split('.')[0] == name for a in sub.names
            ):
                return True
    return False


def _guarded_imports(tree: ast.AST) -> set[int]:
    """ids of import statements inside a try that catches ImportError (they have a
    fallback)."""
    guarded = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {
            n.id
            for h in node.handlers
            for n in ast.walk(h.type)
            if h.type is not None
            if isinstance(n, ast.Name)
        }
        if caught & {'ImportError', 'ModuleNotFoundError', 'Exception'}:
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return guarded


def compat_provides() -> set[str]:
    """The methods compat.py's classes add (e.g. add_post_set_parameters_callback on
    Humble): a node built on them may call these anywhere."""
    tree = ast.parse(COMPAT.read_text())
    return {
        item.name
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for item in cls.body
        if isinstance(item, ast.FunctionDef)
    }


def humble_problems(sources: dict[str, str], new_names: set[str]) -> list[str]:
    """What `sources` use that Humble lacks with no fallback, as 'file:line: why' lines."""
    problems = []
    provided = compat_provides()
    for filename, text in sources.items():
        tree = ast.parse(text)
        guarded = _guarded_imports(tree)
        in_compat = filename == str(COMPAT.relative_to(REPO))
        hasattr_checked = {
            n.args[1].value
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id in ('hasattr', 'getattr')
            and len(n.args) >= 2
            and isinstance(n.args[1], ast.Constant)
        }
        uses_compat_node = 'CompatNode' in text
        # Attribute names count only where ROS objects live: modules importing a ROS package
        # (numpy's `.T` elsewhere is not rclpy's TypeVar T).
        uses_ros = (
            any(
                (isinstance(n, ast.ImportFrom) and (n.module or '').split('.')[0] in HUMBLE_SOURCES)
                or (
                    isinstance(n, ast.Import)
                    and any(a.name.split('.')[0] in HUMBLE_SOURCES for a in n.names)
                )
                for n in ast.walk(tree)
            )
            or 'ros' in Path(filename).parts
        )

        def on_compat_self(node, uses_compat_node=uses_compat_node) -> bool:
            return (
                uses_compat_node
                and isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == 'self'
            )

        for node in ast.walk(tree):
            where = f'{filename}:{getattr(node, "lineno", "?")}'
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded:
                if isinstance(node, ast.ImportFrom):
                    if node.level or not node.module:
                        continue
                    imports = [(node.module, a.name) for a in node.names]
                else:
                    imports = [(a.name, None) for a in node.names]
                for module, name in imports:
                    package = module.split('.')[0]
                    if package in HUMBLE_SOURCES and not module_defines(
                        HUMBLE_SOURCES[package], package, module, name
                    ):
                        what = f'{module}.{name}' if name else module
                        problems.append(f'{where}: Humble has no {what} (no ImportError fallback)')
            names = []
            if not uses_ros:
                pass
            elif isinstance(node, ast.Attribute):
                names.append(node.attr)
            elif isinstance(node, ast.keyword) and node.arg:
                names.append(node.arg)
            for name in names:
                if on_compat_self(node) and name in provided:
                    continue  # a method of CompatNode, which has it on every distro
                if name in new_names and not (in_compat and name in hasattr_checked):
                    problems.append(
                        f'{where}: {name!r} is not in Humble (use gem_ros/ros/compat.py, which '
                        'checks with hasattr() and falls back)'
                    )
    return problems


@pytest.fixture(scope='module')
def new_names() -> set[str]:
    """Names the installed distro's rclpy/launch/launch_ros/message_filters define and
    Humble's never mention."""
    current, humble = set(), set()
    for package, humble_root in HUMBLE_SOURCES.items():
        root = installed_source(package)
        if root is None:
            continue
        current |= defined_names(root)
        humble |= mentioned_names(humble_root)
    return current - humble


def test_the_shipped_code_uses_nothing_humble_lacks(new_names):
    problems = humble_problems(shipped_sources(), new_names)
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize(
    'snippet, flagged',
    [
        # The three differences Humble's sources show (its README), used without a fallback.
        ('from rclpy.event_handler import SubscriptionEventCallbacks', 'rclpy.event_handler'),
        ('node.add_post_set_parameters_callback(cb)', 'add_post_set_parameters_callback'),
        ('from rclpy.subscription import MessageInfo', 'rclpy.subscription.MessageInfo'),
        ('from rclpy.qos_event import NoSuchName', 'rclpy.qos_event.NoSuchName'),
    ],
)
def test_the_check_flags_a_name_humble_lacks(new_names, snippet, flagged):
    problems = humble_problems({'gem_ros/ros/node.py': snippet}, new_names)
    assert problems and flagged in problems[0], problems


def test_a_fallback_is_not_flagged(new_names):
    guarded = (
        'try:\n    from rclpy.event_handler import SubscriptionEventCallbacks\n'
        'except ImportError:\n    from rclpy.qos_event import SubscriptionEventCallbacks\n'
    )
    assert humble_problems({'gem_ros/ros/node.py': guarded}, new_names) == []
    # compat.py may use a new name it checks with hasattr(); no other module may.
    checked = (
        "if hasattr(Node, 'add_post_set_parameters_callback'):\n"
        '    node.add_post_set_parameters_callback(cb)\n'
    )
    compat = str(COMPAT.relative_to(REPO))
    assert humble_problems({compat: checked}, new_names) == []
    assert humble_problems({'gem_ros/ros/node.py': checked}, new_names)


def test_a_type_variable_is_not_a_new_name(tmp_path):
    # Kilted's rclpy binds `T = TypeVar('T')`; counted as API, it flagged numpy's `.T` in
    # gem_ros/ros/map_input.py on Kilted only (stop 43's CI).
    (tmp_path / 'typed.py').write_text("from typing import TypeVar\nT = TypeVar('T')\nU = 1\n")
    names = defined_names(tmp_path)
    assert 'T' not in names and 'U' in names


def test_humble_has_the_fallbacks_compat_uses():
    assert module_defines(
        HUMBLE_SOURCES['rclpy'], 'rclpy', 'rclpy.qos_event', 'SubscriptionEventCallbacks'
    )
    node_py = (HUMBLE_SOURCES['rclpy'] / 'node.py').read_text()
    # HumblePostSetParameters hooks the method every Humble parameter change goes through.
    assert 'def _set_parameters_atomically(' in node_py
    assert node_py.count('self._set_parameters_atomically(') >= 2
    service = (HUMBLE_SOURCES['rclpy'] / 'parameter_service.py').read_text()
    assert 'set_parameters_atomically(' in service
