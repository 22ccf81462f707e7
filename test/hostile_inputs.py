"""Inputs a field robot's world can send gem_node that once cost it gigabytes, and a runner
that measures the node's peak memory and time for each (used by test_node_robustness.py and
benchmarks/bad_inputs.py).

Peak memory is the node process's VmHWM, reset before each case through /proc/PID/clear_refs
(Linux >= 4.0), so each case's figure is its own.
"""

import array
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from ros_helpers import header, image_msg, random_rgb


def huge_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header (IHDR, CRC fixed up) declares width x height."""
    ok, png = cv2.imencode('.png', np.zeros((1, 1, 3), np.uint8))
    assert ok
    data = bytearray(png.tobytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack('>II', width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack('>I', zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return bytes(data)


def huge_jpeg(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose frame header (SOF0) declares width x height."""
    ok, jpg = cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(jpg.tobytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5 : sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def compressed(data: bytes, fmt: str):
    from sensor_msgs.msg import CompressedImage

    return CompressedImage(header=header('hostile'), format=fmt, data=array.array('B', data))


def header_only_image(width: int, height: int, data_bytes: int):
    """An rgb8 Image whose header claims width x height but carries data_bytes of data."""
    from sensor_msgs.msg import Image

    msg = Image(
        header=header('hostile'), width=width, height=height, encoding='rgb8', step=width * 3
    )
    msg.data = array.array('B', bytes(data_bytes))
    return msg


@dataclass
class Case:
    name: str
    what: str  # the input, in words
    send: Callable  # send(client): publishes the input
    expect: str  # a text the node logs for it, or 'result' for a published result
    error: bool = True  # the node refuses it with an ERROR line


def _publish(attribute: str, make) -> Callable:
    def send(client):
        msg = make()
        getattr(client, attribute).publish(msg)
        return msg

    return send


def _query_text(n: int) -> Callable:
    from std_msgs.msg import String

    def send(client):
        client.queries_pub.publish(String(data='; '.join(f'thing {i}' for i in range(n))))

    return send


CASES = [
    Case(
        '1x10000',
        '1x10000 rgb8 frame (30 KB): a 10000:1 aspect ratio',
        _publish('image_pub', lambda: image_msg(random_rgb(1, 10_000), 'rgb8', 'hostile')),
        'cannot be fed within max_input_pixels',
    ),
    Case(
        '100x2000',
        '100x2000 rgb8 frame: fed smaller, within the budget',
        _publish('image_pub', lambda: image_msg(random_rgb(100, 2000), 'rgb8', 'hostile')),
        'result',
        error=False,
    ),
    Case(
        'raw-30000x30000',
        'rgb8 header declaring 30000x30000 with 30 KB of data',
        _publish('image_pub', lambda: header_only_image(30_000, 30_000, 30_000)),
        'larger than max_image_pixels',
    ),
    Case(
        'jpeg-30000x30000',
        'JPEG of 700 bytes declaring 30000x30000',
        _publish('compressed_pub', lambda: compressed(huge_jpeg(30_000, 30_000), 'jpeg')),
        'declared size is huge',
    ),
    Case(
        'png-5000x5000',
        'PNG of 70 bytes declaring 5000x5000 (25 MP)',
        _publish('compressed_pub', lambda: compressed(huge_png(5000, 5000), 'png')),
        'larger than max_image_pixels',
    ),
    Case(
        '1000-queries',
        '1,000 queries in one message on the queries topic',
        _query_text(1000),
        '1000 queries at once; at most 32',
    ),
]


def read_kib(pid: int, field: str) -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'no {field} for pid {pid}')


def reset_peak_rss(pid: int) -> None:
    Path(f'/proc/{pid}/clear_refs').write_text('5')


@dataclass
class Outcome:
    case: Case
    seconds: float  # publish -> the expected log line or result
    idle_mib: float  # VmRSS before
    peak_mib: float  # VmHWM during the case
    log: str

    @property
    def peak_over_idle_mib(self) -> float:
        return self.peak_mib - self.idle_mib


def run_case(node, client, case: Case, timeout: float = 60.0) -> Outcome:
    """Send the case's input and wait for its answer. Before an error case, wait out the
    node's log throttle (one line per kind of error per ERROR_LOG_PERIOD_S), so that its line
    is not held back as a repeat of the previous case's."""
    from gem_ros.ros.node import ERROR_LOG_PERIOD_S

    if case.error:
        time.sleep(ERROR_LOG_PERIOD_S + 0.2)
    pid = node.proc.pid
    idle = read_kib(pid, 'VmRSS') / 1024
    reset_peak_rss(pid)
    mark = len(node.log())
    started = time.monotonic()
    msg = case.send(client)
    if case.expect == 'result':
        client.result_for(msg.header, timeout)
        log = node.log()[mark:]
    else:
        log = node.wait_for_log(case.expect, after=mark, timeout=timeout)
    seconds = time.monotonic() - started
    return Outcome(case, seconds, idle, read_kib(pid, 'VmHWM') / 1024, log)


def error_line(log: str, text: str) -> Optional[str]:
    return next((line for line in log.splitlines() if text in line), None)
