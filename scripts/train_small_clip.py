#!/usr/bin/env python3
"""Train a small open_clip CLIP on procedural scenes (gem_ros.eval.scenes).

Contrastive image-caption training from scratch with the standard open_clip
tokenizer, sized for a few tens of minutes on a CPU core. Writes an fp16
state_dict that ``open_clip.create_model(<config>, pretrained=<file>)`` loads.

Example (the committed weights):
    python scripts/train_small_clip.py --seed 0 --steps 2000 \
        --out gem_ros/eval/weights/scene-clip-s16.pt
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gem_ros.eval.scenes import COLOURS, SHAPES, caption, generate_scene  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "gem_ros/eval/weights/scene-clip-s16.json"
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return (batch - MEAN) / STD


def make_batch(rng: np.random.Generator, size: int, batch_size: int):
    scenes = [generate_scene(rng, size) for _ in range(batch_size)]
    return to_pixels([s.image for s in scenes]), [caption(s, rng) for s in scenes]


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, size: int, seed: int, count: int = 200):
    """Accuracy of naming the colour and the shape of single-object scenes."""
    model.eval()
    rng = np.random.default_rng(seed)
    scenes = [generate_scene(rng, size, min_objects=1, max_objects=1) for _ in range(count)]
    image_features = model.encode_image(to_pixels([s.image for s in scenes]), normalize=True)
    result = {}
    for name, words, truth in (
        ("colour", list(COLOURS), [list(COLOURS).index(s.objects[0].colour) for s in scenes]),
        ("shape", list(SHAPES), [SHAPES.index(s.objects[0].shape) for s in scenes]),
    ):
        prompts = [
            f"a photo of a {w} shape." if name == "colour" else f"a photo of a {w}." for w in words
        ]
        text_features = model.encode_text(tokenizer(prompts), normalize=True)
        predicted = (image_features @ text_features.T).argmax(1).numpy()
        result[name] = float((predicted == np.array(truth)).mean())
    model.train()
    return result


def save_fp16(model: torch.nn.Module, path: Path) -> None:
    state = {
        k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="open_clip model config JSON"
    )
    parser.add_argument("--out", type=Path, required=True, help="fp16 state_dict to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop early (and save) after this wall time"
    )
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument(
        "--eval-scenes",
        type=int,
        default=200,
        help="held-out single-object scenes for the zero-shot check",
    )
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="train in fp32 (bf16 autocast is about 2x faster on CPU)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    open_clip.add_model_config(args.config)
    model = open_clip.create_model(args.config.stem)
    tokenizer = open_clip.get_tokenizer(args.config.stem)
    size = (
        model.visual.image_size[0]
        if isinstance(model.visual.image_size, tuple)
        else model.visual.image_size
    )
    print(
        f"model {args.config.stem}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"params, image {size}, seed {args.seed}",
        flush=True,
    )

    # No weight decay on gains, biases, embeddings and the logit scale (CLIP recipe).
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(
            p
        )
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    loss_fn = open_clip.ClipLoss()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    model.train()
    for step in range(1, args.steps + 1):
        lr = args.lr * (
            step / args.warmup
            if step <= args.warmup
            else 0.5
            * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        pixels, captions = make_batch(rng, size, args.batch_size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
            image_features = model.encode_image(pixels, normalize=True)
            text_features = model.encode_text(tokenizer(captions), normalize=True)
            loss = loss_fn(image_features.float(), text_features.float(), model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        elapsed = time.monotonic() - start
        if step % args.log_every == 0 or step == 1:
            print(
                f"step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} "
                f"scale {model.logit_scale.exp().item():.1f} "
                f"{step * args.batch_size / elapsed:.1f} img/s {elapsed / 60:.1f} min",
                flush=True,
            )
        out_of_time = args.max_minutes is not None and elapsed > args.max_minutes * 60
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            acc = zero_shot_accuracy(
                model, tokenizer, size, seed=args.seed + 10_000, count=args.eval_scenes
            )
            print(
                f"step {step} zero-shot colour {acc['colour']:.3f} shape {acc['shape']:.3f}",
                flush=True,
            )
            save_fp16(model, args.out)
        if out_of_time:
            print(f"stopped at step {step} after {elapsed / 60:.1f} min (--max-minutes)")
            break
    print(f"wrote {args.out} after {(time.monotonic() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
