"""The parameters of the node's depth input (gem_ros.depth_input), in the node's table format.

Kept apart from depth_input so the table can be read without ROS message or model imports.
"""
from gem_ros.node_parameters import ParameterSpec

DEPTH_PARAMETERS = (
    ParameterSpec('use_depth', False,
                  'subscribe depth (sensor_msgs/Image aligned to the colour image) and '
                  'camera_info, and give each query the 3D point of its peak', read_only=True),
    ParameterSpec('depth_scale', 0.0,
                  'metres per depth unit; 0 = from the encoding (16UC1/mono16: millimetres, '
                  '32FC1: metres)', range=(0.0, 1000.0)),
    ParameterSpec('sync_slop', 0.05,
                  'most seconds between the stamps of a colour frame, its depth and its '
                  'camera_info; depth further off gives no points', range=(0.0, 10.0),
                  read_only=True),
    ParameterSpec('depth_min', 0.1, 'nearest valid depth reading, metres', range=(0.0, 1000.0)),
    ParameterSpec('depth_max', 10.0, 'farthest valid depth reading, metres',
                  range=(0.0, 1000.0)),
    ParameterSpec('depth_window', 5,
                  'half-size of the square window around the peak whose valid depth readings '
                  "(those in the query's mask, if enough) give the depth (median), depth pixels",
                  range=(0, 100)),
    ParameterSpec('target_frame', '',
                  'also give each point in this TF frame (target_point; needs tf2_ros); '
                  "'' = none", read_only=True),
)
