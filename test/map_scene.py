"""A rendered RGB-D view for the map tests: coloured squares (scene CLIP colours) before a
grey wall, seen by a 320x240 pinhole camera 1 m up the map's x axis, looking along it."""

import numpy as np

from gem_ros.eval import scenes
from gem_ros.feature_map import apply_pose

WIDTH, HEIGHT, SIDE = 320, 240, 70  # frame and square sizes, pixels
K = np.array([[260.0, 0, 159.5], [0, 260.0, 119.5], [0, 0, 1]])
WALL = 2.5
# map <- optical: optical z forward = map x, optical x right = -map y, optical y down = -map z.
POSE = ((1.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5))


def frame(squares: dict):
    """RGB and depth of squares (colour -> (u0, v0, depth)) before the wall."""
    rgb = np.full((HEIGHT, WIDTH, 3), 170, np.uint8)
    depth = np.full((HEIGHT, WIDTH), WALL, np.float32)
    for colour, (u0, v0, z) in squares.items():
        rgb[v0 : v0 + SIDE, u0 : u0 + SIDE] = scenes.COLOURS[colour]
        depth[v0 : v0 + SIDE, u0 : u0 + SIDE] = z
    return rgb, depth


def in_map(u0, v0, z):
    """Where a square's centre is in the map."""
    u, v = u0 + SIDE / 2 - 0.5, v0 + SIDE / 2 - 0.5
    camera = np.array([[(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z]])
    return apply_pose(camera, POSE)[0]


OPTICAL = 'camera_optical'


def static_transform():
    """The TF map <- camera_optical (POSE), stamped 0: valid at every stamp."""
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = 'map', OPTICAL
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = POSE[0]
    q = t.transform.rotation
    q.x, q.y, q.z, q.w = POSE[1]
    return t


def write_bag(path, squares: dict, count: int):
    """`count` frames of `squares`, 1 s apart, each with its depth (32FC1) and camera_info
    just before it, and /tf_static first: what `gem-ros bag --map` reads (MCAP)."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from depth_scene import camera_info_msg, depth_msg
    from ros_helpers import image_msg

    rgb, depth = frame(squares)
    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:

        def add(topic, msgtype):
            return writer.add_connection(topic, msgtype, typestore=typestore)

        image_type = 'sensor_msgs/msg/Image'
        tf, depth_topic = add('/tf_static', 'tf2_msgs/msg/TFMessage'), add('/depth', image_type)
        info, image = add('/camera_info', 'sensor_msgs/msg/CameraInfo'), add('/image', image_type)
        writer.write(
            tf, 1000 * 10**9, serialize_message(TFMessage(transforms=[static_transform()]))
        )
        for i in range(count):
            header = Header(frame_id=OPTICAL)
            header.stamp.sec = 1001 + i
            when = header.stamp.sec * 10**9
            writer.write(
                depth_topic, when - 10**7, serialize_message(depth_msg(depth, '32FC1', header))
            )
            writer.write(
                info, when - 10**7, serialize_message(camera_info_msg(header, (WIDTH, HEIGHT), K))
            )
            msg = image_msg(rgb, 'rgb8', frame_id=OPTICAL)
            msg.header = header
            writer.write(image, when, serialize_message(msg))
    return path
