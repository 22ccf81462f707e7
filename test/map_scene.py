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
