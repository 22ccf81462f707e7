"""Seconds from a stop signal to the exit of gem_node, and of `ros2 launch`, idle and mid-frame.

    .venv/bin/python benchmarks/stop_times.py [--repeats 3]

Idle: the tiny test model, stopped once it has loaded. Mid-frame: ViT-B-16 with random weights
(seconds a 640x480 frame on one CPU thread), stopped 0.5 s after a frame was published; the
frame's inference time (from a first frame) is printed beside it. `ros2 launch` rows need the
launch packages (scripts/setup.sh installs them where the bundle is found).
"""

import argparse
import importlib.util
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))

from ros_helpers import (  # noqa: E402
    TINY_MODEL,
    LaunchProcess,
    NodeProcess,
    RosClient,
    image_msg,
    random_rgb,
    source_env,
)

VIT = ('model:=ViT-B-16', 'pretrained:=none', 'device:=cpu')


def one(client, log_path: Path, how: str, busy: bool, signals) -> tuple[float, float, int]:
    """(seconds to exit, frame inference seconds or 0, exit code)."""
    if how == 'launch':
        process = LaunchProcess(
            log_path, *(VIT if busy else TINY_MODEL), 'queries:=red', 'publish_overlay:=false'
        )
    else:
        process = NodeProcess(
            log_path, *(VIT if busy else TINY_MODEL), 'queries:=[red]', 'publish_overlay:=false'
        )
    try:
        process.wait_for_log('loaded model', timeout=120)
        frame_s = 0.0
        if busy:
            client.wait_matched()
            frame_s = client.publish_and_wait(
                image_msg(random_rgb(480, 640), 'rgb8'), timeout=120, resend_s=60
            ).inference_seconds
            client.image_pub.publish(image_msg(random_rgb(480, 640), 'rgb8'))
            time.sleep(0.5)
        code, seconds = process.interrupt(*signals)
    finally:
        process.stop()
    return seconds, frame_s, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    has_launch = (
        importlib.util.find_spec('launch_ros') is not None
        and shutil.which('ros2', path=source_env()['PATH']) is not None
    )
    cases = [
        ('gem_node', 'SIGINT', (signal.SIGINT,)),
        ('gem_node', 'SIGTERM', (signal.SIGTERM,)),
        ('gem_node', 'SIGINT twice', (signal.SIGINT, signal.SIGINT)),
    ]
    if has_launch:
        cases.append(('launch', 'SIGINT', (signal.SIGINT,)))
    client = RosClient()
    print('| process | signal | state | median s to exit | frame inference s | exit codes |')
    print('|---|---|---|---|---|---|')
    try:
        with tempfile.TemporaryDirectory() as log_dir:
            for how, name, signals in cases:
                for busy in (False, True):
                    runs = [
                        one(client, Path(log_dir) / f'{how}{i}.log', how, busy, signals)
                        for i in range(args.repeats)
                    ]
                    state = 'mid-frame (ViT-B-16)' if busy else 'idle (tiny)'
                    frame = f'{statistics.median(r[1] for r in runs):.2f}' if busy else '-'
                    print(
                        f"| {'ros2 launch' if how == 'launch' else how} | {name} | {state} | "
                        f'{statistics.median(r[0] for r in runs):.2f} | {frame} | '
                        f"{', '.join(str(r[2]) for r in runs)} |",
                        flush=True,
                    )
    finally:
        client.close()


if __name__ == '__main__':
    main()
