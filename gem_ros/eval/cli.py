"""`gem-ros eval ...` / `python -m gem_ros.eval ...`: the evaluation command.

    gem-ros eval voc ~/data/VOCdevkit/VOC2012                 # VOC21 + VOC20 mIoU
    gem-ros eval context59 ~/data/VOCdevkit/VOC2010           # Context59 mIoU
    gem-ros eval openimages --points oidv7-val-annotations-point-labels.csv \\
        --classes oidv7-class-descriptions.csv --images ~/data/oi/validation
    gem-ros eval directory ~/data/my_set                      # images/ labels/ classes.txt
    gem-ros eval scenes --method clip gem --ss-attn-iter 1 0  # procedural, bundled model
    gem-ros eval scenes --method all                          # every method, one row each
    gem-ros eval scenes --vocab colour --protocol presence    # is each class there at all?
    gem-ros eval scenes --protocol presence --objects 0 3 --radii 0.04 0.08  # empty, small
    gem-ros eval scenes --method gem sclip naclip --protocol authors  # each its published settings
    gem-ros eval scenes --size 960x540 --count 100            # wide scenes
    gem-ros eval write-scenes out/scenes --count 300          # the same scenes as a directory

Each run evaluates every combination of --method, --gem-depth and --ss-attn-iter given, prints
a table and, with --json, writes all figures (per class too).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

from ..settings import (
    DEFAULT_BACKGROUND_THRESHOLD,
    METHODS,
    PRESENCE_ASKING,
    FrameSettings,
    ModelSettings,
    add_arguments,
    from_arguments,
)
from . import authors, datasets
from .runner import GemPredictor, evaluate, format_table, write_json

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SCENE_MODEL = WEIGHTS_DIR / "scene-clip-s16.json"
SCENE_WEIGHTS = WEIGHTS_DIR / "scene-clip-s16.pt"
SWEPT = ("method", "gem_depth", "ss_attn_iter")
DEFAULT_PROTOCOL = {
    "voc": "segmentation",
    "context59": "segmentation",
    "directory": "segmentation",
    "openimages": "points",
    "scenes": "localisation",
}


def _model_arguments(parser: argparse.ArgumentParser, scenes: bool) -> None:
    # The node's and `gem-ros locate`'s flags (gem_ros.settings); these take several values.
    add_arguments(
        parser,
        ModelSettings,
        sweep=SWEPT,
        defaults=dict(model=str(SCENE_MODEL), pretrained=str(SCENE_WEIGHTS)) if scenes else None,
    )
    add_arguments(parser, FrameSettings, title="frame")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is fastest on a busy CPU)",
    )


def _protocol_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    g = parser.add_argument_group("protocol")
    if kind == "openimages":
        choices, text = ("points",), "points: OpenImages V7 point IoU"
    else:
        choices = ("segmentation", "localisation", "presence", "authors")
        text = (
            "segmentation: mIoU of label maps; localisation: per present class, pointing "
            "accuracy and IoU of the thresholded heatmap; presence: every class asked in "
            "every image, AUROC of the presence confidence, precision/recall/F1 of found, "
            "pointing on the present ones; authors: segmentation with each method's "
            "published inference settings (input size, sliding windows, PAMR, logit scale, "
            "background words and thresholds: gem_ros/eval/authors.py), which replace the "
            "frame flags and --background-threshold for every row"
        )
    g.add_argument(
        "--protocol",
        choices=choices,
        default=DEFAULT_PROTOCOL[kind],
        help=f"{text} (default: %(default)s)",
    )
    if kind != "openimages":
        g.add_argument(
            "--asking",
            choices=PRESENCE_ASKING,
            default="all",
            help="presence protocol: 'all' classes asked together, or 'single': one class "
            "per call, with only the background prompts as rivals (default: %(default)s)",
        )
    g.add_argument(
        "--background-threshold",
        type=float,
        default=DEFAULT_BACKGROUND_THRESHOLD,
        help="softmax probability under which a pixel is background (default: 0.8)",
    )
    g.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    g.add_argument("--json", type=Path, default=None, help="write all results to this file")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the eval sub-commands (one per data set kind) to `parser`."""
    kinds = parser.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    for kind, help_text in (
        ("voc", "PASCAL VOC 2012 (VOC21, VOC20)"),
        ("context59", "PASCAL Context 59 (MMSeg converted layout)"),
        ("directory", "images/ + labels/ + classes.txt"),
        ("openimages", "OpenImages V7 point labels"),
        ("scenes", "procedural scenes from a seed"),
    ):
        p = kinds.add_parser(kind, help=help_text, description=help_text)
        if kind in ("voc", "context59", "directory"):
            p.add_argument("root", type=Path, help="data set folder")
        if kind in ("voc", "context59"):
            p.add_argument("--split", default="val", help="image list name (default: val)")
        if kind in ("voc", "context59", "directory"):
            p.add_argument(
                "--class-names",
                type=Path,
                default=None,
                help="file with one class name per line, replacing the built-in "
                "names (same order and count as the label values)",
            )
        if kind == "openimages":
            p.add_argument("--points", type=Path, required=True, help="point-label CSV")
            p.add_argument(
                "--classes",
                type=Path,
                required=True,
                help="class-description CSV (LabelName,DisplayName)",
            )
            p.add_argument("--images", type=Path, required=True, help="folder of <ImageId>.jpg")
        if kind == "scenes":
            _scene_arguments(p)
        _model_arguments(p, scenes=kind == "scenes")
        _protocol_arguments(p, kind)
    w = kinds.add_parser("write-scenes", help="write procedural scenes as a directory data set")
    w.add_argument("out", type=Path, help="output folder")
    w.add_argument(
        "--bag",
        type=Path,
        help="also write them as a recorded camera, a rosbag2 bag (MCAP; /camera/image_raw at "
        "10 Hz) in this folder, for gem-ros bag (needs rosbags)",
    )
    _scene_arguments(w)


def _scene_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="scene seed (default: 1000; training used other streams)",
    )
    parser.add_argument("--count", type=int, default=300, help="number of scenes")
    parser.add_argument(
        "--size",
        type=_scene_size,
        default=224,
        metavar="N|WxH",
        help="scene side in pixels, or WIDTHxHEIGHT for a non-square scene such as 960x540 "
        "(object sizes scale with the shorter side) (default: %(default)s)",
    )
    parser.add_argument(
        "--objects",
        type=int,
        nargs=2,
        default=(1, 3),
        metavar=("MIN", "MAX"),
        help="objects per scene; MIN 0 gives empty scenes (default: 1 3)",
    )
    parser.add_argument(
        "--radii",
        type=float,
        nargs=2,
        default=(0.09, 0.2),
        metavar=("LOW", "HIGH"),
        help="object radius as a fraction of the side (default: 0.09 0.2, objects of 2 to "
        "12%% of the image; 0.04 0.08 gives small ones of 0.5 to 2%%)",
    )
    parser.add_argument(
        "--vocab",
        choices=("colour-shape", "colour"),
        default="colour-shape",
        help="class names: '<colour> <shape>' or the colour alone",
    )


def _scene_size(text: str):
    """'224' -> 224 (the square scenes, as before); '960x540' -> (960, 540)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or WIDTHxHEIGHT, e.g. 960x540, got {text!r}")
    values = [int(p) for p in parts]
    if not all(16 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"scene sides must be 16 to 4096 pixels, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _dataset(args):
    kind = args.eval_kind
    names = None
    if getattr(args, "class_names", None):
        names = datasets.read_class_names(args.class_names)
    if kind == "voc":
        return datasets.voc(args.root, args.split, args.limit, names or datasets.VOC_CLASSES)
    if kind == "context59":
        return datasets.context59(
            args.root, args.split, args.limit, names or datasets.CONTEXT59_CLASSES
        )
    if kind == "directory":
        return datasets.directory(args.root, args.limit, names)
    if kind == "openimages":
        return datasets.OpenImagesPoints(args.points, args.classes, args.images, args.limit)
    return _scenes(args, args.count if args.limit is None else min(args.count, args.limit))


def _scenes(args, count: int):
    return datasets.GeneratedScenes(
        args.seed,
        count,
        args.size,
        args.vocab,
        objects=tuple(args.objects),
        radii=tuple(args.radii),
    )


def _protocol(args, dataset, published=None):
    from . import protocols  # torch: imported when a run needs it, not for the parser

    if published is not None:
        return protocols.Segmentation(
            dataset.class_names,
            dataset.background,
            published.prob_threshold,
            logit_scale=published.logit_scale,
            background_queries=published.background_queries,
            area_threshold=published.area_threshold,
        )
    if args.protocol == "points":
        return protocols.PointLabels(args.mask_threshold)
    if args.protocol == "presence":
        return protocols.ClassPresence(dataset.class_names, dataset.background, args.asking)
    if args.protocol == "localisation":
        return protocols.ClassLocalisation(
            dataset.class_names, dataset.background, args.mask_threshold
        )
    return protocols.Segmentation(
        dataset.class_names, dataset.background, args.background_threshold
    )


def settings(args) -> list[tuple[str, ModelSettings]]:
    """The combinations of the swept flags to run, named: GEM's depth and iterations are
    swept for GEM only; every other method is one row (with its own settings, e.g. NACLIP's
    --naclip-std)."""
    out = []
    gem_only = dict(gem_depth=ModelSettings.gem_depth, ss_attn_iter=ModelSettings.ss_attn_iter)
    methods = METHODS if "all" in args.method else dict.fromkeys(args.method)
    if getattr(args, "protocol", None) == "authors" and "all" in args.method:
        methods = [m for m in methods if m in authors.SOURCES]
        print(
            "gem-ros eval: --protocol authors: 'all' runs the methods with published "
            f"settings ({', '.join(methods)}); clip has none",
            file=sys.stderr,
        )
    for method in methods:
        if method != "gem":
            name = f"naclip std {args.naclip_std:g}" if method == "naclip" else method
            out.append((name, from_arguments(ModelSettings, args, method=method, **gem_only)))
            continue
        for depth, it in itertools.product(
            dict.fromkeys(args.gem_depth), dict.fromkeys(args.ss_attn_iter)
        ):
            out.append(
                (
                    f"{method} depth {depth} iter {it}",
                    from_arguments(
                        ModelSettings, args, method=method, gem_depth=depth, ss_attn_iter=it
                    ),
                )
            )
    return out


def run_eval(args: argparse.Namespace) -> int:
    """Run the command parsed by `add_eval_arguments`; returns the exit status."""
    if args.eval_kind == "write-scenes":
        scenes = _scenes(args, args.count)
        n = datasets.write_directory(scenes, args.out)
        print(f"wrote {n} scenes to {args.out} (evaluate with: gem-ros eval directory {args.out})")
        if args.bag is not None:
            n = datasets.write_bag(_scenes(args, args.count), args.bag)
            print(f"wrote {n} scenes as a bag to {args.bag} (label it: gem-ros bag {args.bag})")
        return 0
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _evaluate_all(args)
    finally:
        torch.set_num_threads(threads)  # a library caller keeps its own setting


def _evaluate_all(args: argparse.Namespace) -> int:
    import gem_ros.gem as gem  # torch and open_clip load only when a model is needed

    try:
        dataset = _dataset(args)
    except datasets.DatasetError as exc:
        print(f"gem-ros eval: {exc}", file=sys.stderr)
        return 2
    rows = []
    frame = from_arguments(FrameSettings, args)
    runs = settings(args)
    published = {}
    if args.protocol == "authors":
        try:
            published = {
                m.method: authors.settings_for(m.method, dataset.background) for _, m in runs
            }
        except authors.NoAuthorsSettings as exc:
            print(f"gem-ros eval: --protocol authors: {exc}", file=sys.stderr)
            return 2
        for own in published.values():
            _say_overridden(args, own)
    for name, model_settings in runs:
        own = published.get(model_settings.method)
        row_frame = frame if own is None else dataclasses.replace(frame, **own.frame_overrides())
        try:
            model = gem.load_model(
                model_settings,
                input_size=row_frame.input_size,
                max_input_pixels=row_frame.max_input_pixels,
            )
        except gem.ModelLoadError as exc:
            print(f"gem-ros eval: {exc.told('--pretrained /path/to/file.bin')}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"gem-ros eval: {exc}", file=sys.stderr)
            return 2
        protocol = _protocol(args, dataset, own)
        metrics = evaluate(
            GemPredictor(model, row_frame),
            dataset,
            protocol,
            progress=not args.no_progress,
            description=name,
        )
        rows.append(_row(name, model_settings, metrics, own))
    _report(args, dataset, frame, rows, list(model.templates), bool(published))
    return 0


def _row(name: str, model_settings, metrics: dict, own) -> dict:
    """One setting's row of the table and of --json."""
    gem_only = model_settings.method == "gem"
    row = {
        "setting": name,
        "method": model_settings.method,
        "gem_depth": model_settings.gem_depth if gem_only else None,
        "ss_attn_iter": model_settings.ss_attn_iter if gem_only else None,
        "metrics": metrics,
    }
    if own is not None:
        row.update(inference=own.as_dict(), inference_summary=own.describe())
    return row


def _report(args, dataset, frame, rows: list, templates: list, per_row: bool) -> None:
    """The table on stdout, and everything that made it in --json."""
    inputs = "input per row" if per_row else f"input {args.input_size}"
    print(
        f"\n{dataset.name}: {args.protocol}, model {args.model} ({args.pretrained}), "
        f"{inputs}, prompts {templates}"
    )
    print(format_table(rows, args.protocol))
    if getattr(dataset, "missing_images", 0):
        print(f"note: {dataset.missing_images} images of the CSV are not in {args.images}")
    payload = {
        "dataset": dataset.name,
        "protocol": args.protocol,
        "model": args.model,
        "pretrained": args.pretrained,
        "prompt_templates": templates,
        "input_size": args.input_size,
        "background_threshold": args.background_threshold,
        "mask_threshold": args.mask_threshold,
        "presence": {
            "rule": frame.presence,
            "threshold": frame.presence_threshold,
            "background_prompts": frame.background_prompts,
            "asking": getattr(args, "asking", None),
        },
        "class_names": dataset.class_names,
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "results": rows,
    }
    write_json(args.json, payload)
    if args.json:
        print(f"wrote {args.json}")


def _say_overridden(args, own: authors.AuthorsSettings) -> None:
    """A line for each flag given a value of its own that a method's published settings
    replace, so none is replaced silently."""
    given = dict(
        input_size=(args.input_size, own.input_size),
        slide=(args.slide, own.slide),
        slide_stride=(args.slide_stride, own.slide_stride) if own.slide else None,
        refine=(args.refine, "pamr" if own.pamr_steps else "none"),
        pamr_steps=(args.pamr_steps, own.pamr_steps) if own.pamr_steps else None,
        pamr_dilations=(args.pamr_dilations, own.pamr_dilations) if own.pamr_steps else None,
        background_threshold=(args.background_threshold, own.prob_threshold),
    )
    defaults = dict(
        background_threshold=DEFAULT_BACKGROUND_THRESHOLD,
        **{f.name: f.default for f in dataclasses.fields(FrameSettings)},
    )
    for key, pair in given.items():
        if pair is None:
            continue
        yours, theirs = pair
        if yours != defaults[key] and yours != theirs:
            flag = "--" + key.replace("_", "-")
            print(
                f"gem-ros eval: --protocol authors: {own.method} runs with its authors' "
                f"{key} {theirs}, not {flag} {yours}",
                file=sys.stderr,
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gem_ros.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_eval_arguments(parser)
    return run_eval(parser.parse_args(argv))
