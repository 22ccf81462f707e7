"""What Fast DDS's default transports do to 640x480 frames, against LARGE_DATA.

    .venv/bin/python benchmarks/transport_rate.py                # both settings, 20 s each

For each setting of FASTDDS_BUILTIN_TRANSPORTS (unset, LARGE_DATA, and LARGE_DATA with 8 MB
socket buffers: gem_ros/ros/transports.py), a fresh gem_node (tiny
model) and this process's publisher run with it; frames (640x480 rgb8, 921 KB) are published
at --rate Hz for --seconds, best effort as cameras do, and the results received are counted.
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))


def run(transports, seconds: float, rate: float) -> tuple[int, int]:
    import subprocess

    code = f'''
import os, sys, time
sys.path.insert(0, {str(REPO / 'test')!r})
from ros_helpers import TINY_MODEL, NodeProcess, RosClient, header, image_msg, random_rgb
if {transports!r} is None:
    os.environ.pop('FASTDDS_BUILTIN_TRANSPORTS', None)
else:
    os.environ['FASTDDS_BUILTIN_TRANSPORTS'] = {transports!r}
node = NodeProcess(__import__('pathlib').Path({tempfile.mkdtemp()!r}) / 'node.log', *TINY_MODEL,
                   'queries:=[red]', 'publish_overlay:=false', 'input_size:=64')
client = RosClient()
try:
    node.wait_for_log('loaded model')
    client.wait_matched()
    msg = image_msg(random_rgb(480, 640), 'rgb8')
    sent, end = 0, time.monotonic() + {seconds}
    while time.monotonic() < end:
        msg.header = header()
        client.image_pub.publish(msg)
        sent += 1
        time.sleep(1.0 / {rate})
    time.sleep(2.0)
    print('RESULT', sent, len(client.results))
finally:
    client.close()
    node.stop()
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith('RESULT'))
    _, sent, received = line.split()
    return int(sent), int(received)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--rate', type=float, default=10.0)
    args = ap.parse_args()
    print(f'640x480 rgb8 frames at {args.rate:g} Hz for {args.seconds:g} s, tiny model')
    print(f"{'FASTDDS_BUILTIN_TRANSPORTS':28s} {'sent':>6s} {'results':>8s} {'share':>7s}")
    sys.path.insert(0, str(REPO))
    from gem_ros.ros.transports import RECOMMENDED

    for transports in (None, 'LARGE_DATA', RECOMMENDED):
        sent, received = run(transports, args.seconds, args.rate)
        name = transports or '(unset: the default)'
        print(f'{name:28s} {sent:6d} {received:8d} {received / sent:7.0%}')


if __name__ == '__main__':
    main()
