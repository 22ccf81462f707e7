"""The launch file's arguments and the parameter YAMLs, without starting anything (the launches
themselves are in test_launch_run.py)."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from gem_ros.ros.parameters import PARAMETERS, check_value
from gem_ros.settings import check_input_budget

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'gem.launch.py'
DECLARED = {spec.name: spec for spec in PARAMETERS}  # what gem_node declares
needs_launch = pytest.mark.skipif(
    importlib.util.find_spec('launch_ros') is None,
    reason='launch_ros is not installed (not on PyPI: scripts/setup.sh installs it from '
    '../shared/ros-launch when present, or source a ROS 2 installation)',
)


@pytest.fixture(scope='module')
def launch_module():
    spec = importlib.util.spec_from_file_location('gem_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_launch
def test_every_node_parameter_is_a_launch_argument(launch_module, monkeypatch):
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(Path(__import__('sys').prefix)))
    description = launch_module.generate_launch_description()
    names = {argument.name for argument in description.get_launch_arguments()}
    assert names == set(DECLARED) | {
        'params_file',
        'lifecycle',
        'rviz',
        'stop_timeout',
        'image_topic',
        'depth_topic',
        'camera_info_topic',
    }


@needs_launch
@pytest.mark.parametrize(
    'name,text,value',
    [
        ('mask_threshold', '0.6', 0.6),
        ('mask_threshold', '1', 1.0),
        ('use_depth', 'true', True),
        ('use_depth', 'False', False),
        ('input_size', '96', 96),
        ('pretrained', '2023', '2023'),
        ('queries', 'red mug; person', 'red mug; person'),
    ],
)
def test_arguments_become_their_parameters_type(launch_module, name, text, value):
    value_type = launch_module.PARAMETER_ARGUMENTS[name][0]
    converted = launch_module.typed(name, text, value_type)
    assert converted == value and type(converted) is type(value)


@needs_launch
@pytest.mark.parametrize(
    'name,text,why',
    [
        ('mask_threshold', 'abc', "mask_threshold:='abc' must be a number"),
        ('use_depth', 'yes please', "use_depth:='yes please' must be true or false"),
        ('input_size', '9.5', "input_size:='9.5' must be an integer"),
    ],
)
def test_badly_typed_arguments_are_named(launch_module, name, text, why):
    with pytest.raises(ValueError, match=why.replace('(', r'\(')):
        launch_module.typed(name, text, launch_module.PARAMETER_ARGUMENTS[name][0])


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
    merged = {name: spec.default for name, spec in DECLARED.items()} | params
    assert check_input_budget(merged['input_size'], merged['max_input_pixels']) is None


def test_default_file_lists_every_parameter_with_its_default():
    params = yaml.safe_load((REPO / 'config' / 'gem.yaml').read_text())['/**']['ros__parameters']
    assert params == {name: spec.default for name, spec in DECLARED.items()}


def test_node_parameter_constants_match_the_core():
    import gem_ros.gem as gem
    import gem_ros.ros.image_conversion as conversion
    import gem_ros.ros.parameters as table

    assert table.MAX_IMAGE_PIXELS == gem.MAX_IMAGE_PIXELS
    assert table.DEFAULT_MAX_IMAGE_PIXELS == conversion.DEFAULT_MAX_PIXELS


def test_the_rviz_config_shows_the_images_people_look_at():
    rviz = yaml.safe_load((REPO / 'config' / 'gem.rviz').read_text())
    images = {
        d['Topic']['Value']
        for d in rviz['Visualization Manager']['Displays']
        if d['Class'] == 'rviz_default_plugins/Image'
    }
    assert images == {'/gem/overlay', '/gem/heatmap_image'}
    clouds = [
        d['Topic']['Value']
        for d in rviz['Visualization Manager']['Displays']
        if d['Class'] == 'rviz_default_plugins/PointCloud2'
    ]
    assert clouds == ['/gem/map_cloud']  # the map of dense features (issue 40)
