"""Bytes per frame of gem_node's outputs, by mask format (serialised as DDS sends them).

    python benchmarks/message_size.py                # 640x480, 16 queries, input 448

Real detections of the tiny test CLIP (message sizes do not depend on the weights; presence
off so every query has a mask); no node needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import gem_ros.gem as gem  # noqa: E402
from gem_ros.ros import messages  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=448)
    args = ap.parse_args()
    fixtures = ROOT / "test" / "fixtures"
    model = gem.load_model(
        str(fixtures / "gem-tiny-test.json"),
        str(fixtures / "gem-tiny-test.pt"),
        input_size=args.input_size,
    )
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    queries = [f"thing {i}" for i in range(args.queries)]
    dets = model.locate(image, queries, presence_rule="off", return_patch_logits=True)
    header = Header(frame_id="camera")
    print(f"{args.width}x{args.height}, {args.queries} queries, input {args.input_size}")
    print(f"{'message':40s} {'bytes/frame':>12s}")
    for mask_format in messages.MASK_FORMATS:
        msg = messages.gem_result(header, dets, 0.1, mask_format=mask_format)
        print(f"{'~/results, mask_format ' + mask_format:40s} {len(serialize_message(msg)):12,d}")
    print(
        f"{'~/heatmaps (32FC1 patch grids)':40s} "
        f"{len(serialize_message(messages.heatmaps(header, dets))):12,d}"
    )
    if messages.Detection2DArray is not None:
        size = len(serialize_message(messages.detection_array(header, dets)))
        print(f"{'~/detections (Detection2DArray)':40s} {size:12,d}")


if __name__ == "__main__":
    main()
