"""The two builds of gem_ros, for real: the pip-installed package in this venv, and colcon.

The pip install is what scripts/setup.sh made (re-run it after changing msg/, srv/,
CMakeLists.txt or the file set of launch/ and config/). The colcon test builds a copy of the
repository in a temporary workspace with PyPI's colcon and the ament/rosidl wheels; it takes
about a minute, so it is skipped when GEM_ROS_SKIP_SLOW=1.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.prefix) / 'bin'
SITE_PACKAGES = Path(sysconfig.get_paths()['purelib'])

slow = pytest.mark.skipif(
    os.environ.get('GEM_ROS_SKIP_SLOW') == '1', reason='GEM_ROS_SKIP_SLOW=1 skips real builds'
)

# Run in a subprocess with the working directory outside the repository, so only an
# installed copy of gem_ros can be imported. Prints where things came from, as JSON.
ROUNDTRIP = r'''
import json, os
import gem_ros, gem_ros.gem
from ament_index_python.packages import get_package_share_directory
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header
from gem_ros.msg import GemResult, QueryResult
from gem_ros.srv import SetQueries

mask = Image(height=2, width=3, encoding='mono8', step=3, data=bytes([0, 255, 0, 255, 255, 0]))
result = GemResult(
    header=Header(stamp=Time(sec=12, nanosec=34), frame_id='camera_optical'),
    results=[QueryResult(query='red mug', score=0.25, peak_x=2, peak_y=1,
                         bbox=RegionOfInterest(x_offset=1, y_offset=0, width=2, height=2),
                         area=3, mask=mask, has_point=True, point=Point(x=0.5, y=-1.0, z=2.0))],
    inference_seconds=0.125)
back = deserialize_message(serialize_message(result), GemResult)
assert back == result, back
request = SetQueries.Request(queries=['a cup', 'a chair'])
assert deserialize_message(serialize_message(request), SetQueries.Request) == request
response = SetQueries.Response(success=True, message='2 queries')
assert deserialize_message(serialize_message(response), SetQueries.Response) == response
print(json.dumps({
    'package': list(gem_ros.__path__),
    'msg': gem_ros.msg.__file__,
    'gem': gem_ros.gem.__file__,
    'share': get_package_share_directory('gem_ros'),
    'query': back.results[0].query,
    'mask': list(back.results[0].mask.data),
}))
'''


def _files(directory):
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob('*') if p.is_file())


def _check_roundtrip(report):
    assert report['query'] == 'red mug'
    assert report['mask'] == [0, 255, 0, 255, 255, 0]


def test_source_tree_finds_installed_messages():
    # pytest puts the repository first on sys.path (pythonpath = .): our modules come from the
    # source tree, the generated messages from the installed copy (pkgutil.extend_path).
    import gem_ros
    import gem_ros.gem
    from gem_ros.msg import GemResult
    from gem_ros.srv import SetQueries

    assert Path(gem_ros.__path__[0]) == REPO / 'gem_ros'
    assert Path(gem_ros.gem.__file__).is_relative_to(REPO / 'gem_ros')
    assert Path(sys.modules[GemResult.__module__].__file__).is_relative_to(SITE_PACKAGES)
    assert Path(sys.modules[SetQueries.__module__].__file__).is_relative_to(SITE_PACKAGES)


def test_installed_package_alone(tmp_path):
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix)
    env.pop('PYTHONPATH', None)
    out = subprocess.run(
        [sys.executable, '-c', ROUNDTRIP],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    _check_roundtrip(report)
    assert report['package'] == [str(SITE_PACKAGES / 'gem_ros')]
    assert Path(report['gem']).is_relative_to(SITE_PACKAGES / 'gem_ros')

    share = Path(report['share'])
    assert share == Path(sys.prefix) / 'share' / 'gem_ros'
    for sub in ('launch', 'config'):
        missing = set(_files(REPO / sub)) - set(_files(share / sub))
        assert not missing, f'{sub}/ files not installed (re-run scripts/setup.sh): {missing}'
    assert (share / 'launch' / 'gem.launch.py').is_file()


@pytest.mark.parametrize(
    'script, target', [('gem_node', 'gem_ros.ros.node:main'), ('gem-ros', 'gem_ros.cli:main')]
)
def test_console_scripts(script, target):
    (entry,) = metadata.entry_points(group='console_scripts', name=script)
    assert entry.value == target
    assert callable(entry.load())
    assert shutil.which(script, path=str(VENV_BIN)) == str(VENV_BIN / script)


_NOT_SOURCES = shutil.ignore_patterns(
    '.git', 'build', 'install', 'log', '__pycache__', '.pytest_cache', 'out'
)


def _not_sources(directory, names):
    venvs = {n for n in names if (Path(directory, n, 'pyvenv.cfg')).is_file()}
    return venvs | set(_NOT_SOURCES(directory, names))


@slow
@pytest.mark.timeout(600)
def test_colcon_build(tmp_path):
    workspace = tmp_path / 'ws'
    # A copy, not a symlink: others may edit the checkout while colcon builds. Without
    # virtual environments (any name: CI has .venv-jazzy and .venv-kilted, 6 GB each).
    shutil.copytree(REPO, workspace / 'src' / 'gem_ros', ignore=_not_sources)
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        # No sourced ROS here: the ament/rosidl wheels live in this venv's prefix.
        AMENT_PREFIX_PATH=sys.prefix,
        MAKEFLAGS='-j2',
    )
    env.pop('PYTHONPATH', None)
    build = subprocess.run(
        [str(VENV_BIN / 'colcon'), 'build', '--event-handlers', 'console_direct-'],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    copied = sum(p.stat().st_size for p in (workspace / 'src').rglob('*') if p.is_file())
    assert copied < 100e6, f'{copied / 1e6:.0f} MB copied into the workspace: a venv?'

    prefix = workspace / 'install' / 'gem_ros'
    launcher = prefix / 'lib' / 'gem_ros' / 'gem_node'
    assert launcher.is_file() and os.access(launcher, os.X_OK)
    assert (prefix / 'share' / 'gem_ros' / 'launch' / 'gem.launch.py').is_file()
    assert set(_files(REPO / 'config')) <= set(_files(prefix / 'share' / 'gem_ros' / 'config'))
    package_dir = next(prefix.glob('lib/python3*/site-packages/gem_ros'))
    assert (package_dir / 'msg' / '_gem_result.py').is_file()
    assert (package_dir / 'srv' / '_set_queries.py').is_file()
    assert (package_dir / 'gem' / '__init__.py').is_file()

    # As a user would: source the workspace, then use the package from elsewhere.
    script = (
        f'source {workspace}/install/setup.bash && python3 -c "$ROUNDTRIP" && '
        'python3 -c "from gem_ros.ros.node import main; assert callable(main)"'
    )
    out = subprocess.run(
        ['bash', '-c', script],
        cwd=tmp_path,
        env=dict(env, ROUNDTRIP=ROUNDTRIP),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    _check_roundtrip(report)
    assert Path(report['msg']).is_relative_to(package_dir)
    assert Path(report['gem']).is_relative_to(package_dir)
    assert Path(report['share']) == prefix / 'share' / 'gem_ros'
