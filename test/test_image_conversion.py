"""Image message conversion: every supported encoding against known pixels."""

import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from gem_ros.ros.image_conversion import (
    SUPPORTED_ENCODINGS,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    mask_to_image_msg,
    rgb_to_image_msg,
)

# 2 rows x 4 columns of distinct colours (even width, as yuv422 needs).
RGB = np.array(
    [
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]],
        [[0, 0, 0], [10, 20, 30], [200, 100, 50], [1, 2, 3]],
    ],
    dtype=np.uint8,
)


def make_msg(pixels, encoding, padding=0, is_bigendian=False):
    """An Image of an HxWxC (or HxW) array, each row followed by `padding` junk bytes."""
    height, width = pixels.shape[:2]
    row_bytes = pixels[0].nbytes
    rows = np.full((height, row_bytes + padding), 0xAB, dtype=np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        step=row_bytes + padding,
        is_bigendian=is_bigendian,
        data=array.array('B', rows.tobytes()),
    )


@pytest.mark.parametrize('padding', [0, 5])
def test_rgb8_is_returned_as_is(padding):
    msg = make_msg(RGB, 'rgb8', padding)
    rgb = image_msg_to_rgb(msg)
    np.testing.assert_array_equal(rgb, RGB)
    assert rgb.dtype == np.uint8


def test_rgb8_is_a_view_of_the_message_data():
    msg = make_msg(RGB, 'rgb8')
    assert np.shares_memory(image_msg_to_rgb(msg), np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize('padding', [0, 3])
def test_bgr8_swaps_channels(padding):
    np.testing.assert_array_equal(image_msg_to_rgb(make_msg(RGB[..., ::-1], 'bgr8', padding)), RGB)


@pytest.mark.parametrize('padding', [0, 7])
def test_alpha_encodings_drop_alpha(padding):
    alpha = np.array([[0, 64, 128, 255], [255, 1, 2, 3]], dtype=np.uint8)[..., None]
    rgba = np.concatenate([RGB, alpha], axis=2)
    bgra = np.concatenate([RGB[..., ::-1], alpha], axis=2)
    np.testing.assert_array_equal(image_msg_to_rgb(make_msg(rgba, 'rgba8', padding)), RGB)
    np.testing.assert_array_equal(image_msg_to_rgb(make_msg(bgra, 'bgra8', padding)), RGB)


@pytest.mark.parametrize('padding', [0, 1])
def test_mono8_is_grey(padding):
    grey = np.array([[0, 1, 127, 255], [30, 60, 90, 120]], dtype=np.uint8)
    rgb = image_msg_to_rgb(make_msg(grey, 'mono8', padding))
    assert rgb.shape == (2, 4, 3)
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


MONO16 = np.array([[0, 65535, 257 * 100, 32768], [128, 129, 65534, 1000]], dtype=np.uint16)
# 16 to 8 bits as cv_bridge does it: v * 255 / 65535, rounded.
MONO16_AS_8 = np.array([[0, 255, 100, 128], [0, 1, 255, 4]], dtype=np.uint8)


@pytest.mark.parametrize('padding', [0, 6])
@pytest.mark.parametrize('is_bigendian', [False, True])
def test_mono16_scales_to_8_bits_in_either_byte_order(padding, is_bigendian):
    pixels = MONO16.astype('>u2' if is_bigendian else '<u2')
    rgb = image_msg_to_rgb(make_msg(pixels, 'mono16', padding, is_bigendian))
    np.testing.assert_array_equal(rgb, np.repeat(MONO16_AS_8[..., None], 3, axis=2))


def yuv_to_rgb_bt601(y, u, v):
    """Reference BT.601 video-range YUV -> RGB, as OpenCV's YUV422 conversions define it."""
    c, d, e = y - 16.0, u - 128.0, v - 128.0
    rgb = [1.164 * c + 1.596 * e, 1.164 * c - 0.391 * d - 0.813 * e, 1.164 * c + 2.018 * d]
    return np.clip(np.round(rgb), 0, 255)


# Two pixel pairs: (Y0, Y1, U, V) per pair.
YUV_PAIRS = [(16, 235, 128, 128), (81, 145, 90, 240)]
YUV_EXPECTED = np.array(
    [[yuv_to_rgb_bt601(y, u, v) for y0, y1, u, v in YUV_PAIRS for y in (y0, y1)]]
)


@pytest.mark.parametrize('encoding', ['yuv422', 'uyvy'])
@pytest.mark.parametrize('padding', [0, 4])
def test_uyvy_byte_order(encoding, padding):
    packed = np.array([[b for y0, y1, u, v in YUV_PAIRS for b in (u, y0, v, y1)]], np.uint8)
    rgb = image_msg_to_rgb(make_msg(packed.reshape(1, 4, 2), encoding, padding))
    assert np.abs(rgb.astype(int) - YUV_EXPECTED).max() <= 2
    np.testing.assert_array_equal(rgb[0, :2], [[0, 0, 0], [255, 255, 255]])


@pytest.mark.parametrize('encoding', ['yuv422_yuy2', 'yuyv'])
@pytest.mark.parametrize('padding', [0, 4])
def test_yuyv_byte_order(encoding, padding):
    packed = np.array([[b for y0, y1, u, v in YUV_PAIRS for b in (y0, u, y1, v)]], np.uint8)
    rgb = image_msg_to_rgb(make_msg(packed.reshape(1, 4, 2), encoding, padding))
    assert np.abs(rgb.astype(int) - YUV_EXPECTED).max() <= 2
    np.testing.assert_array_equal(rgb[0, :2], [[0, 0, 0], [255, 255, 255]])


def test_every_supported_encoding_is_covered():
    assert set(SUPPORTED_ENCODINGS) == {
        'rgb8',
        'bgr8',
        'rgba8',
        'bgra8',
        'mono8',
        'mono16',
        'yuv422',
        'uyvy',
        'yuv422_yuy2',
        'yuyv',
    }


def test_data_longer_than_height_times_step_is_accepted():
    msg = make_msg(RGB, 'rgb8')
    msg.data.extend([9, 9, 9])
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


@pytest.mark.parametrize('encoding', ['rgb8', 'mono16', 'yuv422'])
def test_truncated_data_is_rejected(encoding):
    channels = {'rgb8': 3, 'mono16': 2, 'yuv422': 2}[encoding]
    msg = make_msg(np.zeros((2, 4, channels), np.uint8), encoding)
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match=r'truncated image data: \d+ bytes, expected'):
        image_msg_to_rgb(msg)


def test_truncated_padding_is_rejected():
    msg = make_msg(RGB, 'rgb8', padding=4)
    msg.data = msg.data[:-4]  # the pixels are all there, the last row's padding is not
    with pytest.raises(ValueError, match='truncated'):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize('height,width', [(0, 4), (2, 0), (0, 0)])
def test_zero_size_is_rejected(height, width):
    msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
    with pytest.raises(ValueError, match='zero-size image'):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize('encoding', ['32FC1', 'bayer_rggb8', 'nv21', ''])
def test_unsupported_encoding_is_rejected(encoding):
    msg = make_msg(RGB, encoding)
    with pytest.raises(ValueError, match=r"unsupported image encoding .*\(supported: rgb8"):
        image_msg_to_rgb(msg)


def test_step_smaller_than_a_row_is_rejected():
    msg = make_msg(RGB, 'rgb8')
    msg.step = 11
    with pytest.raises(ValueError, match='step 11 is smaller'):
        image_msg_to_rgb(msg)


def test_odd_width_yuv422_is_rejected():
    msg = make_msg(np.zeros((2, 3, 2), np.uint8), 'yuyv')
    with pytest.raises(ValueError, match='even width'):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize('extension', ['.png', '.bmp'])
def test_compressed_lossless_round_trip(extension):
    ok, encoded = cv2.imencode(extension, RGB[..., ::-1])
    assert ok
    msg = CompressedImage(format=extension[1:], data=array.array('B', encoded.tobytes()))
    np.testing.assert_array_equal(compressed_msg_to_rgb(msg), RGB)


def test_compressed_garbage_and_empty_are_rejected():
    with pytest.raises(ValueError, match="cannot decode compressed image \\(format 'jpeg'"):
        compressed_msg_to_rgb(CompressedImage(format='jpeg', data=array.array('B', b'no jpeg')))
    with pytest.raises(ValueError, match='empty compressed image'):
        compressed_msg_to_rgb(CompressedImage(format='jpeg'))


def test_rgb_to_image_msg_round_trip_keeps_header():
    header = Header(frame_id='cam')
    header.stamp.sec = 7
    msg = rgb_to_image_msg(RGB, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('rgb8', 2, 4, 12)
    assert msg.header.frame_id == 'cam' and msg.header.stamp.sec == 7
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


def test_mask_to_image_msg_is_mono8_0_or_255():
    mask = np.array([[True, False, False], [False, True, True]])
    msg = mask_to_image_msg(mask, Header(frame_id='cam'))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ('mono8', 2, 3, 3)
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(2, 3), mask * 255)


def test_raw_image_over_the_pixel_limit_is_refused_by_its_header():
    # The header claims 30000x30000; the data is never looked at.
    msg = Image(
        width=30_000, height=30_000, encoding='rgb8', step=90_000, data=array.array('B', bytes(100))
    )
    with pytest.raises(
        ValueError,
        match=r'declared size 30000x30000 is larger than '
        r'max_image_pixels \(900000000 > 8294400 pixels\)',
    ):
        image_msg_to_rgb(msg)
    small = make_msg(RGB, 'rgb8')
    with pytest.raises(ValueError, match='larger than max_image_pixels'):
        image_msg_to_rgb(small, max_pixels=7)
    assert image_msg_to_rgb(small, max_pixels=8).shape == (2, 4, 3)


def test_compressed_image_declaring_a_huge_size_is_never_decoded(monkeypatch):
    from hostile_inputs import huge_jpeg, huge_png

    def no_decoding(*args, **kwargs):
        raise AssertionError('decoded')

    monkeypatch.setattr(cv2, 'imdecode', no_decoding)
    for data, fmt, why in [
        (huge_png(5000, 5000), 'png', 'declared size 5000x5000 is larger'),
        (huge_jpeg(4000, 3000), 'jpeg', 'declared size 4000x3000 is larger'),
        (huge_jpeg(30_000, 30_000), 'jpeg', 'declared size is huge'),
    ]:
        msg = CompressedImage(format=fmt, data=array.array('B', data))
        with pytest.raises(ValueError, match=why):
            compressed_msg_to_rgb(msg)


def _jpeg_msg(rgb):
    ok, encoded = cv2.imencode('.jpg', rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return CompressedImage(format='jpeg', data=array.array('B', encoded.tobytes()))


def _scene(height=96, width=128):
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (200, 40, 40)
    rgb[20:70, 80:120] = (40, 40, 200)
    return rgb


def test_a_jpeg_for_the_cpu_decodes_on_the_cpu():
    import torch

    msg = _jpeg_msg(_scene())
    for device in (None, torch.device('cpu')):
        rgb = compressed_msg_to_rgb(msg, device=device)
        assert isinstance(rgb, np.ndarray) and rgb.shape == (96, 128, 3)
        assert np.abs(rgb.astype(int) - _scene()).mean() < 2


cuda = pytest.mark.skipif(
    not __import__('torch').cuda.is_available(), reason='decoding on the GPU needs CUDA'
)


@cuda
def test_a_jpeg_for_a_gpu_decodes_on_it_like_the_cpu_and_is_refused_the_same():
    import torch

    from gem_ros.gem.decode import jpeg_decoder

    device = torch.device('cuda')
    assert jpeg_decoder(device) is not None, 'this torchvision cannot decode on the GPU'
    msg = _jpeg_msg(_scene())
    on_gpu = compressed_msg_to_rgb(msg, device=device)
    assert isinstance(on_gpu, torch.Tensor) and on_gpu.device.type == 'cuda'
    assert tuple(on_gpu.shape) == (96, 128, 3) and on_gpu.dtype == torch.uint8
    on_cpu = compressed_msg_to_rgb(msg)
    assert np.abs(on_gpu.cpu().numpy().astype(int) - on_cpu).mean() < 2  # decoders round apart
    cut = CompressedImage(format='jpeg', data=msg.data[: len(msg.data) // 2])
    with pytest.raises(ValueError, match='cannot decode compressed image'):
        compressed_msg_to_rgb(cut, device=device)
    with pytest.raises(ValueError, match='larger than max_image_pixels'):
        compressed_msg_to_rgb(msg, max_pixels=100, device=device)  # the header, first


def test_the_gpu_decoder_gives_rgb_in_the_models_layout_run_on_the_cpu():
    """The decoder used on a GPU (torchvision's decode_jpeg), run on the CPU where no GPU is:
    [H, W, 3] RGB as cv2's decode (channel order and layout), and a corrupt JPEG a
    ValueError."""
    import torch

    from gem_ros.gem.decode import torchvision_decoder

    decode = torchvision_decoder(torch.device('cpu'))
    msg = _jpeg_msg(_scene())
    rgb = decode(msg.data)
    assert tuple(rgb.shape) == (96, 128, 3) and rgb.dtype == torch.uint8
    assert np.abs(rgb.numpy().astype(int) - compressed_msg_to_rgb(msg)).mean() < 2
    with pytest.raises(ValueError, match='cannot decode this JPEG'):
        decode(msg.data[:40])
