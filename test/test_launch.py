"""The launch file and the parameter YAMLs name parameters the node declares, with valid values."""
import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from gem_ros.depth_parameters import DEPTH_PARAMETERS
from gem_ros.node_parameters import PARAMETERS, check_value

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'gem.launch.py'
NON_PARAMETER_ARGUMENTS = {'params_file', 'image_topic', 'depth_topic', 'camera_info_topic', 'rviz'}
# What gem_node declares (gem_ros.node.DECLARED_PARAMETERS, without importing the model).
DECLARED = {spec.name: spec for spec in PARAMETERS + DEPTH_PARAMETERS}


def launch_tree():
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def parameter_arguments(tree) -> list[str]:
    """Keys of the launch file's PARAMETER_ARGUMENTS dict (arguments passed as parameters)."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(getattr(t, 'id', None) == 'PARAMETER_ARGUMENTS' for t in node.targets)):
            return [ast.literal_eval(key) for key in node.value.keys]
    raise AssertionError('no PARAMETER_ARGUMENTS dict in the launch file')


def declared_argument_constants(tree) -> set[str]:
    """Names of DeclareLaunchArgument calls whose name is a literal."""
    return {call.args[0].value for call in ast.walk(tree)
            if isinstance(call, ast.Call)
            and getattr(call.func, 'id', '') == 'DeclareLaunchArgument'
            and isinstance(call.args[0], ast.Constant)}


def test_launch_arguments_name_declared_parameters():
    arguments = parameter_arguments(launch_tree())
    assert set(arguments) >= {'model', 'pretrained', 'method', 'mask_threshold', 'device',
                              'queries'}
    unknown = [name for name in arguments if name not in DECLARED]
    assert not unknown, f'launch arguments that are no node parameter: {unknown}'


def test_launch_arguments_are_all_declared():
    tree = launch_tree()
    assert declared_argument_constants(tree) == NON_PARAMETER_ARGUMENTS
    # The parameter arguments are declared by a loop over PARAMETER_ARGUMENTS.
    loops = [gen for gen in ast.walk(tree) if isinstance(gen, ast.comprehension)
             and 'PARAMETER_ARGUMENTS' in ast.unparse(gen.iter)]
    assert any('DeclareLaunchArgument' in ast.unparse(parent) for parent in ast.walk(tree)
               if isinstance(parent, ast.GeneratorExp) and parent.generators[0] in loops)


def test_launch_file_remaps_image_and_uses_the_node_name():
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(source)
    node_calls = [call for call in ast.walk(tree)
                  if isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'Node']
    calls = [{k.arg: k.value for k in call.keywords} for call in node_calls]
    assert sorted(ast.literal_eval(c['package']) for c in calls) == ['gem_ros', 'rviz2']
    keywords = next(c for c in calls if ast.literal_eval(c['package']) == 'gem_ros')
    assert ast.literal_eval(keywords['executable']) == 'gem_node'
    assert ast.literal_eval(keywords['name']) == 'gem'
    remaps = ast.unparse(keywords['remappings'])
    for topic, argument in (('image', 'image_topic'), ('depth', 'depth_topic'),
                            ('camera_info', 'camera_info_topic')):
        assert f"('{topic}', LaunchConfiguration('{argument}'))" in remaps
    # rviz2 is started with the package's rviz config, and only where it is installed.
    assert "'gem.rviz'" in source and "shutil.which('rviz2')" in source


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installable here (not on PyPI)')
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location('gem_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {argument.name for argument in description.get_launch_arguments()}
    assert names == NON_PARAMETER_ARGUMENTS | set(module.PARAMETER_ARGUMENTS)


@pytest.mark.parametrize('path', sorted((REPO / 'config').glob('*.yaml')), ids=lambda p: p.name)
def test_parameter_files_hold_valid_node_parameters(path):
    params = yaml.safe_load(path.read_text())['/**']['ros__parameters']
    assert params
    for name, value in params.items():
        spec = DECLARED.get(name)
        assert spec is not None, f'{path.name}: {name} is no node parameter'
        if not spec.dynamic_typing:
            assert type(value) is type(spec.default), f'{path.name}: {name}={value!r}'
        assert check_value(name, value) is None, f'{path.name}: {name}={value!r}'
        if spec.range is not None:
            assert spec.range[0] <= value <= spec.range[1], f'{path.name}: {name}={value!r}'


def test_default_file_lists_every_parameter_with_its_default():
    params = yaml.safe_load((REPO / 'config' / 'gem.yaml').read_text())['/**']['ros__parameters']
    assert params == {name: spec.default for name, spec in DECLARED.items()}
