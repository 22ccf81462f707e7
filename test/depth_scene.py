"""A synthetic, physically consistent RGB-D view for the depth tests: a wall 2 m away and a
box whose front face is 1.2 m away, seen by a 640x480 pinhole camera; and its messages."""

import array

import numpy as np

WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
WALL_Z = 2.0
BOX_Z = 1.2  # front face of a box straddling the optical axis: its sides are hidden
BOX_X, BOX_Y = (-0.3, 0.1), (-0.2, 0.15)  # metres, on the front face


def rays(size, K):
    """Per pixel the ray through its centre, scaled to z = 1: [h, w, 3]."""
    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)


def wall_and_box(size=(WIDTH, HEIGHT), K=K):
    """Depth (m) of the wall with the box in front, and the box's pixel mask."""
    r = rays(size, K)
    x, y = r[..., 0] * BOX_Z, r[..., 1] * BOX_Z  # where each ray meets the box's plane
    box = (x >= BOX_X[0]) & (x <= BOX_X[1]) & (y >= BOX_Y[0]) & (y <= BOX_Y[1])
    return np.where(box, BOX_Z, WALL_Z), box


def box_pixel(x, y):
    """The colour pixel (u, v) where the box's front-face point (x, y) is seen."""
    return K[0, 0] * x / BOX_Z + K[0, 2], K[1, 1] * y / BOX_Z + K[1, 2]


def expected(u, v, z):
    """The analytic back-projection of colour pixel (u, v) at depth z."""
    return (u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z


def encode(depth_m, encoding):
    """Depth readings as a camera driver sends them: 16UC1 millimetres, 32FC1 metres."""
    if encoding == '16UC1':
        return np.round(np.nan_to_num(depth_m) * 1000).astype(np.uint16)
    return depth_m.astype(np.float32)


def depth_msg(depth_m, encoding, header):
    from sensor_msgs.msg import Image

    pixels = encode(depth_m, encoding)
    msg = Image(
        header=header,
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        step=pixels[0].nbytes,
    )
    msg.data = array.array('B', pixels.tobytes())
    return msg


def camera_info_msg(header, size=(WIDTH, HEIGHT), K=K):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo(header=header, width=size[0], height=size[1], distortion_model='plumb_bob')
    info.k = [float(v) for v in np.ravel(K)]
    info.d = [0.0] * 5
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [K[0, 0], 0.0, K[0, 2], 0.0, 0.0, K[1, 1], K[1, 2], 0.0, 0.0, 0.0, 1.0, 0.0]
    return info
