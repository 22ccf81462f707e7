"""sensor_msgs image <-> numpy conversion for the node.

Incoming images become HxWx3 uint8 RGB arrays for the model. cv_bridge is used when it is
importable (a ROS workspace); otherwise a built-in numpy/OpenCV conversion produces the same
pixels (cv_bridge is not on PyPI). Both paths are preceded by the same checks, so malformed
messages fail with one clear ValueError whichever path runs.

Sizes are checked before any pixel is copied or decoded: a raw image by its header fields, a
compressed one by the size its header declares (a 1 KB JPEG can declare 30000x30000).
"""

import array
import io

import cv2
import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import Image

from gem_ros.ros.parameters import DEFAULT_MAX_IMAGE_PIXELS

try:
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None

# encoding -> (bytes per pixel, OpenCV conversion to RGB, or None when already RGB).
# yuv422 is UYVY byte order (ROS's historic name); yuv422_yuy2 is YUYV.
_ENCODINGS = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    'mono16': (2, cv2.COLOR_GRAY2RGB),
    'yuv422': (2, cv2.COLOR_YUV2RGB_UYVY),
    'uyvy': (2, cv2.COLOR_YUV2RGB_UYVY),
    'yuv422_yuy2': (2, cv2.COLOR_YUV2RGB_YUY2),
    'yuyv': (2, cv2.COLOR_YUV2RGB_YUY2),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)

_bridge = CvBridge() if CvBridge is not None else None
DEFAULT_MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS


def short(text: str, limit: int = 40) -> str:
    """`text` as repr, cut to about `limit` characters: message fields end up in logs."""
    return repr(text) if len(text) <= limit else f'{text[:limit]!r}... ({len(text)} chars)'


def check_size(width: int, height: int, max_pixels: int, what: str = '') -> None:
    if width * height > max_pixels:
        raise ValueError(
            f'declared size {width}x{height} is larger than max_image_pixels '
            f'({width * height} > {max_pixels} pixels); refused before decoding'
            + (f' ({what})' if what else '')
        )


def image_msg_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return the image as an HxWx3 uint8 RGB array (a view of msg.data for rgb8 input).

    Raises ValueError for unsupported encodings, zero-size, oversized or truncated images.
    """
    check_size(msg.width, msg.height, max_pixels)
    encoding = msg.encoding.lower()
    _check_image_msg(msg, encoding)
    if _bridge is not None:
        try:
            return _bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')
        except Exception as exc:  # CvBridgeError is a TypeError: one error type for callers
            raise ValueError(
                f'cv_bridge cannot convert {short(msg.encoding)} to rgb8: {exc}'
            ) from exc
    return _builtin_to_rgb(msg, encoding)


def _check_image_msg(msg: Image, encoding: str) -> None:
    if encoding not in _ENCODINGS:
        raise ValueError(
            f'unsupported image encoding {short(msg.encoding)} '
            f"(supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    if msg.width == 0 or msg.height == 0:
        raise ValueError(f'zero-size image ({msg.width}x{msg.height})')
    bytes_per_pixel, _ = _ENCODINGS[encoding]
    row_bytes = msg.width * bytes_per_pixel
    if msg.step < row_bytes:
        raise ValueError(
            f"image step {msg.step} is smaller than width*bytes per pixel "
            f"({msg.width}*{bytes_per_pixel} = {row_bytes}) for '{encoding}'"
        )
    if bytes_per_pixel == 2 and encoding != 'mono16' and msg.width % 2:
        raise ValueError(f"'{encoding}' needs an even width, got {msg.width}")
    expected = msg.height * msg.step
    if len(msg.data) < expected:
        raise ValueError(
            f'truncated image data: {len(msg.data)} bytes, expected height*step = '
            f'{msg.height}*{msg.step} = {expected}'
        )


def _builtin_to_rgb(msg: Image, encoding: str) -> np.ndarray:
    bytes_per_pixel, conversion = _ENCODINGS[encoding]
    # Rows as bytes, padding cut off: still a view of the message buffer.
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.height * msg.step)
    rows = rows.reshape(msg.height, msg.step)[:, : msg.width * bytes_per_pixel]
    if encoding == 'mono16':
        pixels = rows.view('>u2' if msg.is_bigendian else '<u2')
        if not pixels.dtype.isnative:
            pixels = pixels.astype(np.uint16)
        # cv_bridge scales 16 to 8 bits by 255/65535 with rounding and saturation.
        return cv2.cvtColor(cv2.convertScaleAbs(pixels, alpha=255.0 / 65535.0), cv2.COLOR_GRAY2RGB)
    pixels = rows.reshape(msg.height, msg.width, bytes_per_pixel)
    if conversion is None:
        return pixels
    return cv2.cvtColor(pixels, conversion)


def compressed_msg_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS, device=None):
    """Decode a sensor_msgs/CompressedImage (jpeg, png, ...) to an HxWx3 uint8 RGB array;
    a JPEG for a CUDA `device` whose torchvision decodes there, to an HxWx3 uint8 tensor on
    it (gem_ros.gem.decode: the pixels are born where the model reads them).

    The size the image's header declares is read first (Pillow reads headers without
    decoding) and checked against max_pixels, so a decompression bomb is never decoded.
    """
    if len(msg.data) == 0:
        raise ValueError('empty compressed image')
    what = f'compressed image (format {short(msg.format)}, {len(msg.data)} bytes)'
    try:
        with PILImage.open(io.BytesIO(msg.data)) as header:
            width, height = header.size
            jpeg = header.format == 'JPEG'
    except PILImage.DecompressionBombError as exc:  # Pillow's own, far higher limit
        raise ValueError(f'declared size is huge: {exc} ({what})') from exc
    except Exception as exc:  # not an image format Pillow can read the header of
        raise ValueError(f'cannot decode {what}: unreadable header') from exc
    check_size(width, height, max_pixels, what)
    decode = None
    if jpeg and device is not None and device.type == 'cuda':
        from gem_ros.gem.decode import jpeg_decoder  # torch: only where a GPU decodes

        decode = jpeg_decoder(device)
    if decode is not None:
        try:
            return decode(msg.data)
        except ValueError as exc:
            raise ValueError(f'cannot decode {what}: {exc}') from exc
    bgr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot decode {what}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_image_msg(rgb: np.ndarray, header) -> Image:
    """An rgb8 sensor_msgs/Image of an HxWx3 uint8 array."""
    height, width = rgb.shape[:2]
    return _image_msg(header, height, width, 'rgb8', width * 3, rgb)


def mask_to_image_msg(mask: np.ndarray, header) -> Image:
    """A mono8 sensor_msgs/Image with 255 where the boolean mask is set, 0 elsewhere."""
    height, width = mask.shape
    return _image_msg(header, height, width, 'mono8', width, mask.view(np.uint8) * 255)


def _image_msg(header, height, width, encoding, step, pixels) -> Image:
    msg = Image(header=header, height=height, width=width, encoding=encoding, step=step)
    # An array.array skips the per-element checks the message's setter does for sequences.
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(pixels))
    msg.data = data
    return msg
