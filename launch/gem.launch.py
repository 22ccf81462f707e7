"""Launch gem_node.

    ros2 launch gem_ros gem.launch.py image_topic:=/camera/image_raw queries:='red mug; person'
    ros2 launch gem_ros gem.launch.py \
        params_file:=$(ros2 pkg prefix gem_ros)/share/gem_ros/config/fast_jetson.yaml
    ros2 launch gem_ros gem.launch.py use_depth:=true rviz:=true \
        image_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/aligned_depth_to_color/camera_info
    ros2 launch gem_ros gem.launch.py lifecycle:=true autostart:=false   # for a manager
    ros2 launch gem_ros gem.launch.py --show-args

Parameters come from params_file (default: the package's config/gem.yaml). Every node
parameter is also a launch argument (from the node's parameter table, with its description);
one given a value overrides the file's, converted to the parameter's type here (0.6 a float,
true a bool, a digits-only pretrained tag still a string). Left empty, the file's value stays.
When the node exits the launch ends with it, with exit code 1 if the node failed (e.g. a
bad parameter value).

lifecycle:=true starts the managed node (gem_lifecycle_node, as a launch_ros LifecycleNode,
so launch's lifecycle events and ChangeState work on it); its `autostart` parameter (default
true) brings it to active by itself, false leaves that to a lifecycle manager.
"""

import os
import shutil

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
)
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from gem_ros.ros.parameters import PARAMETERS
from launch import LaunchDescription

# Launch argument (= node parameter) -> its type and description, from the node's table.
PARAMETER_ARGUMENTS = {
    spec.name: (str if spec.dynamic_typing else type(spec.default), spec.description)
    for spec in PARAMETERS
}
TOPIC_ARGUMENTS = {  # remapped name -> (launch argument, default, description)
    'image': ('image_topic', 'image', 'sensor_msgs/Image topic to subscribe'),
    'depth': ('depth_topic', 'depth', 'depth image aligned to the colour image (use_depth)'),
    'camera_info': (
        'camera_info_topic',
        'camera_info',
        'camera_info of the depth image (use_depth)',
    ),
}
_BOOLS = {'true': True, 'false': False}


def typed(name: str, text: str, value_type: type):
    """A launch argument's text as its parameter's type; ValueError naming it otherwise."""
    try:
        if value_type is bool:
            return _BOOLS[text.strip().lower()]
        return value_type(text)
    except (KeyError, ValueError):
        kind = {bool: 'true or false', int: 'an integer', float: 'a number'}[value_type]
        raise ValueError(f'launch argument {name}:={text!r} must be {kind}') from None


def _on_node_exit(event, context):
    """The launch ends with the node; with an error (and exit code 1) if the node failed,
    e.g. on a bad parameter value, so that scripts starting the launch can tell."""
    if event.returncode != 0:
        raise RuntimeError(f'gem_node exited with code {event.returncode}; see its log above')
    if context.is_shutdown:
        # Already stopping (ctrl-c): a second Shutdown would stop launch_ros's ROS adapter
        # twice (it runs for a LifecycleNode), which launch reports as an error, exit code 1.
        return None
    return [Shutdown(reason='gem_node exited')]


def _gem_node(context):
    overrides = {}
    for name, (value_type, _) in PARAMETER_ARGUMENTS.items():
        text = LaunchConfiguration(name).perform(context)
        if text != '':
            value = typed(name, text, value_type)
            # A string stays a string (ParameterValue), not YAML-parsed into a number.
            overrides[name] = ParameterValue(value, value_type=str) if value_type is str else value
    remappings = [
        (topic, LaunchConfiguration(argument))
        for topic, (argument, _, _) in TOPIC_ARGUMENTS.items()
    ]
    managed = typed('lifecycle', LaunchConfiguration('lifecycle').perform(context), bool)
    kind, extra = (LifecycleNode, {'namespace': ''}) if managed else (Node, {})
    node = kind(
        package='gem_ros',
        executable='gem_lifecycle_node' if managed else 'gem_node',
        name='gem',
        output='screen',
        **extra,
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=remappings,
        # GEM_ROS_LAUNCH_PID: the node stops (SIGINT) when this launch process dies, however.
        additional_env={'PYTHONUNBUFFERED': '1', 'GEM_ROS_LAUNCH_PID': str(os.getpid())},
        # After ctrl-c the node finishes its frame in flight (seconds on a CPU) and tears the
        # middleware down (bounded, 3 s); launch's own 5 s before SIGTERM would cut that short.
        sigterm_timeout=LaunchConfiguration('stop_timeout'),
    )
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_node_exit))]
    if typed('rviz', LaunchConfiguration('rviz').perform(context), bool):
        if shutil.which('rviz2'):
            rviz_config = os.path.join(get_package_share_directory('gem_ros'), 'config', 'gem.rviz')
            actions.append(
                Node(
                    package='rviz2', executable='rviz2', name='rviz2', arguments=['-d', rviz_config]
                )
            )
        else:
            actions.append(LogInfo(msg='rviz:=true, but rviz2 is not installed; not started'))
    return actions


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('gem_ros'), 'config', 'gem.yaml')
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'params_file',
                default_value=default_params,
                description='parameters YAML of the node',
            ),
            *(
                DeclareLaunchArgument(argument, default_value=default, description=description)
                for argument, default, description in TOPIC_ARGUMENTS.values()
            ),
            DeclareLaunchArgument(
                'lifecycle',
                default_value='false',
                description='true: the managed (lifecycle) node; with autostart:=false it waits '
                'for a lifecycle manager to configure and activate it',
            ),
            DeclareLaunchArgument(
                'rviz',
                default_value='false',
                description='true: start rviz2 with config/gem.rviz, if installed',
            ),
            DeclareLaunchArgument(
                'stop_timeout',
                default_value='30',
                description='seconds launch waits after ctrl-c for the node (its frame in flight '
                'and its bounded teardown) before it sends SIGTERM',
            ),
            *(
                DeclareLaunchArgument(
                    name, default_value='', description=f'{description} (empty: from params_file)'
                )
                for name, (_, description) in PARAMETER_ARGUMENTS.items()
            ),
            OpaqueFunction(function=_gem_node),
        ]
    )
