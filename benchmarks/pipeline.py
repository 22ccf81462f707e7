"""The node's saturated frame rate as a ratio to the model's own rate, in one run: how much of
a frame's time the node spends outside `locate` (conversion, mask encoding, overlays,
serialisation), with a fast model where that share shows (the tiny model, a GPU model's
stand-in).

    .venv/bin/python benchmarks/pipeline.py [--seconds 15] [--model tiny|vit]

1. `locate` alone, in this process, in a loop on one 1280x720 frame with 5 queries: frames/s.
2. The node (its own process, over Fast DDS), fed 1280x720 rgb8 frames faster than it takes
   them (newest wins), with ~/overlay and ~/heatmap_image subscribed: results/s.
The ratio is 2 / 1; the non-model time per frame is 1/rate(2) - 1/rate(1) where the stages
run in series, and less where they overlap. Say which CPU it ran on (printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))
sys.path.insert(0, str(REPO))

from gem_ros.cpu_name import cpu_model  # noqa: E402

from ros_helpers import TINY_MODEL, NodeProcess, RosClient, header, image_msg, random_rgb  # noqa: E402

QUERIES = ['red mug', 'person', 'chair', 'a green bottle', 'door']
MODELS = {'tiny': TINY_MODEL, 'vit': ('model:=ViT-B-16', 'pretrained:=none', 'device:=cpu')}


def locate_rate(model_args, seconds: float, threads: int) -> float:
    import torch

    import gem_ros.gem as gem

    torch.set_num_threads(threads)
    values = dict(a.split(':=', 1) for a in model_args)
    model = gem.load_model(values['model'], values['pretrained'], device='cpu')
    image = random_rgb(720, 1280)
    presence = values.get('presence', 'image')
    model.locate(image, QUERIES, presence_rule=presence)  # warm-up
    times = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        t0 = time.perf_counter()
        model.locate(image, QUERIES, presence_rule=presence, return_patch_logits=True)
        times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def node_rate(client, model_args, seconds: float, log: Path, threads: int) -> float:
    from sensor_msgs.msg import Image

    node = NodeProcess(
        log,
        *model_args,
        f"queries:=[{', '.join(QUERIES)}]",
        'overlay_max_rate_hz:=0.0',
        'heatmaps_max_rate_hz:=0.0',
        threads=threads,
    )
    overlays, heatmaps = [], []
    client.node.create_subscription(Image, '/gem/overlay', overlays.append, 5)
    client.node.create_subscription(Image, '/gem/heatmap_image', heatmaps.append, 5)
    try:
        node.wait_for_log('loaded model', timeout=300)
        client.wait_matched()
        msg = image_msg(random_rgb(720, 1280), 'rgb8')
        client.publish_and_wait(msg, timeout=120)
        stop = threading.Event()

        def feed():  # always a frame waiting: the node runs saturated
            while not stop.is_set():
                msg.header = header()
                client.image_pub.publish(msg)
                time.sleep(0.01)

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        time.sleep(2.0)
        start_count, t0 = len(client.results), time.monotonic()
        time.sleep(seconds)
        count, t1 = len(client.results), time.monotonic()
        stop.set()
        thread.join(5)
        if not overlays or not heatmaps:
            print('warning: the overlay or heatmap image was not received', flush=True)
        return (count - start_count) / (t1 - t0)
    finally:
        node.stop()
        client.clear()


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=float, default=15.0)
    ap.add_argument('--model', default='tiny', choices=list(MODELS))
    ap.add_argument('--threads', type=int, default=1, help='torch threads, both sides')
    args = ap.parse_args()
    model_args = MODELS[args.model]
    cpu = cpu_model()
    print(
        f'CPU: {cpu}, {os.cpu_count()} cores; model {args.model}, 1280x720, '
        f'{len(QUERIES)} queries, {args.threads} thread(s)'
    )
    alone = locate_rate(model_args, args.seconds, args.threads)
    client = RosClient()
    try:
        with tempfile.TemporaryDirectory() as logs:
            node = node_rate(
                client, model_args, args.seconds, Path(logs) / 'node.log', args.threads
            )
    finally:
        client.close()
    outside = 1e3 * (1 / node - 1 / alone)
    print('| locate alone (frames/s) | node saturated (results/s) | ratio | non-model ms/frame |')
    print('|---|---|---|---|')
    print(f'| {alone:.1f} | {node:.1f} | {node / alone:.2f} | {outside:.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
