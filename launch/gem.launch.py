"""Launch gem_node.

    ros2 launch gem_ros gem.launch.py image_topic:=/camera/image_raw queries:='red mug; person'
    ros2 launch gem_ros gem.launch.py \
        params_file:=$(ros2 pkg prefix gem_ros)/share/gem_ros/config/fast_jetson.yaml
    ros2 launch gem_ros gem.launch.py use_depth:=true rviz:=true \
        image_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/aligned_depth_to_color/camera_info

Parameters come from params_file (default: the package's config/gem.yaml). The arguments
below override single parameters of it; left empty, the file's value stays.
"""
import os
import shutil

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# Launch argument (= node parameter) -> (parameter type, description).
PARAMETER_ARGUMENTS = {
    'model': (str, 'open_clip model name (ViT-B-16, ...) or path of a JSON model config'),
    'pretrained': (str, "open_clip pretrained tag, checkpoint path, or 'none' for random weights"),
    'method': (str, 'gem or clip'),
    'mask_threshold': (float, 'mask threshold on the normalised heatmap, 0..1'),
    'device': (str, 'auto, cpu, cuda or cuda:N'),
    'queries': (str, "start-up queries separated by ',' or ';'"),
    'use_depth': (bool, 'true: 3D points from depth + camera_info, rviz markers'),
}


def _gem_node(context):
    # Only arguments given a value override the params file; typed, so that e.g. a
    # pretrained tag of digits stays a string.
    overrides = {}
    for name, (value_type, _) in PARAMETER_ARGUMENTS.items():
        value = LaunchConfiguration(name).perform(context)
        if value != '':
            overrides[name] = ParameterValue(value, value_type=value_type)
    actions = [Node(package='gem_ros', executable='gem_node', name='gem', output='screen',
                    parameters=[LaunchConfiguration('params_file'), overrides],
                    remappings=[('image', LaunchConfiguration('image_topic')),
                                ('depth', LaunchConfiguration('depth_topic')),
                                ('camera_info', LaunchConfiguration('camera_info_topic'))])]
    if LaunchConfiguration('rviz').perform(context).lower() in ('true', '1'):
        if shutil.which('rviz2'):
            rviz_config = os.path.join(get_package_share_directory('gem_ros'), 'config',
                                       'gem.rviz')
            actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                                arguments=['-d', rviz_config]))
        else:
            actions.append(LogInfo(msg='rviz:=true, but rviz2 is not installed; not started'))
    return actions


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('gem_ros'), 'config', 'gem.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='parameters YAML of the node'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='sensor_msgs/Image topic to subscribe'),
        DeclareLaunchArgument('depth_topic', default_value='depth',
                              description='depth image aligned to the colour image (use_depth)'),
        DeclareLaunchArgument('camera_info_topic', default_value='camera_info',
                              description='camera_info of the depth image (use_depth)'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='true: start rviz2 with config/gem.rviz, if installed'),
        *(DeclareLaunchArgument(name, default_value='',
                                description=f'{description} (empty: from params_file)')
          for name, (_, description) in PARAMETER_ARGUMENTS.items()),
        OpaqueFunction(function=_gem_node),
    ])
