"""`gem-ros`: GEM on image files, no ROS needed.

    gem-ros locate photo.jpg more/*.png -q "red mug; person" -o out/
    gem-ros eval ...        (the paper's evaluation protocols; see `gem-ros eval -h`)
    gem-ros queries "red mug; person"   gem-ros where "red mug"   (a running gem_node)
    gem-ros doctor          (what this machine has for gem_ros, and what is wrong)
    gem-ros export -o gem.onnx --height 448 --width 448   (the visual side as ONNX)
    gem-ros bag recording/ -q "red mug; person" -o labelled/   (every frame of a ROS 2 bag)

`locate` writes, per image, <stem>_overlay.png and <stem>_mask_<k>_<query>.png (0/255), and
one results.json with every query's presence (found, confidence), peak, raw score, box
(x, y, width, height in pixels) and area.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from .model_args import add_model_arguments, detection_records, model_from_args

log = logging.getLogger("gem-ros")


def run_locate(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    import gem_ros.gem as gem

    from .images import read_rgb
    from .locate_files import check_outputs, image_outputs, write_results
    from .overlay import draw_overlay
    from .owned_files import replace_atomically
    from .settings import FrameSettings, from_arguments

    queries = gem.check_queries(gem.parse_queries(";".join(args.queries)))
    if not queries:
        raise gem.QueryError("no queries: pass -q 'red mug; person'")
    frame = from_arguments(FrameSettings, args)
    out_dir, images = Path(args.out), [Path(p) for p in args.images]
    files = check_outputs(out_dir, images, queries)  # before the model: nothing half-done
    model = model_from_args(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failed = {}, 0

    def save_png(array: np.ndarray, name: str) -> None:
        replace_atomically(out_dir / name, lambda f: Image.fromarray(array).save(f, "PNG"))
        files.add(name)

    for path in tqdm(images, desc="images", unit="img", disable=args.quiet):
        try:
            image = read_rgb(path)
            dets = model.locate(
                image, queries, **frame.locate_arguments(), max_peaks=args.max_peaks
            )
        except (OSError, ValueError) as exc:  # unreadable file, bad image: report, go on
            log.error("%s: %s", path, exc)
            failed += 1
            continue
        overlay_name, *mask_names = image_outputs(path, [det.query for det in dets])
        save_png(draw_overlay(image, dets), overlay_name)
        for det, name in zip(dets, mask_names):
            save_png(det.mask.astype(np.uint8) * 255, name)
        results[str(path)] = {
            "width": image.shape[1],
            "height": image.shape[0],
            "queries": detection_records(dets),
        }
    meta = {
        "model": model.name,
        "pretrained": args.pretrained,
        "method": model.method,
        "mask_threshold": frame.mask_threshold,
        "presence": frame.presence,
        "presence_threshold": frame.presence_threshold,
        "background_prompts": frame.background_prompts,
        "templates": list(model.templates),
    }
    write_results(out_dir, meta, results, files)
    log.info(
        "wrote %d image(s) to %s%s", len(results), out_dir, f"; {failed} failed" if failed else ""
    )
    return 1 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    import gem_ros.gem as gem

    from .gem.export import check_graph_target, export_onnx
    from .settings import ModelSettings, from_arguments

    # The graph backends 'onnxruntime' and 'tensorrt' run: exported from PyTorch, in fp32.
    settings = from_arguments(ModelSettings, args, backend="torch", precision="fp32")
    check_graph_target(Path(args.out))  # before the model: a user's file is never replaced
    model = gem.load_model(settings)
    p = model.patch_size
    input_hw = (args.height, args.width or args.height)
    info = export_onnx(model, args.out, input_hw)
    log.info(
        "wrote %s (%s, method %s, input %dx%d, patch grid %dx%d) and its sidecar %s",
        args.out,
        model.name,
        model.method,
        input_hw[1],
        input_hw[0],
        input_hw[1] // p,
        input_hw[0] // p,
        Path(args.out).with_suffix(".json"),
    )
    return 0 if info else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gem-ros",
        description="GEM open-vocabulary localisation on image files, and a client of gem_node",
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    loc = sub.add_parser("locate", help="heatmaps, masks and peaks for text queries")
    loc.add_argument("images", nargs="+", help="image files")
    loc.add_argument(
        "-q",
        "--queries",
        action="append",
        required=True,
        help="queries separated by ',' or ';' (repeatable)",
    )
    loc.add_argument("-o", "--out", default="gem_out", help="output folder (default: %(default)s)")
    loc.add_argument(
        "--max-peaks",
        type=int,
        default=5,
        help="local maxima listed per query (default: %(default)s)",
    )
    loc.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(loc)
    loc.set_defaults(func=run_locate)
    try:
        from .eval.cli import add_eval_arguments, run_eval
    except ImportError:  # the evaluation module is optional for the one-shot command
        pass
    else:
        ev = sub.add_parser("eval", help="the paper's evaluation protocols on a dataset")
        add_eval_arguments(ev)
        ev.set_defaults(func=run_eval)
    exp = sub.add_parser(
        "export",
        help="the model's visual side as an ONNX graph (opset 17, batch axis dynamic) and a "
        "sidecar JSON, for ONNX Runtime or TensorRT",
    )
    exp.add_argument("-o", "--out", required=True, help="the .onnx file to write")
    exp.add_argument(
        "--height", type=int, default=448, help="input height, pixels (default: %(default)s)"
    )
    exp.add_argument("--width", type=int, help="input width, pixels (default: the height)")
    from .settings import ModelSettings, add_arguments

    add_arguments(exp, ModelSettings)
    exp.set_defaults(func=run_export)
    from . import doctor

    doc = sub.add_parser(
        "doctor",
        help="what this machine has for gem_ros (ROS, torch, CUDA, weights), what is wrong, "
        "and the fix; exit 1 when the node cannot run here",
    )
    doctor.add_arguments(doc)
    doc.set_defaults(func=doctor.run)
    from . import map_command
    from .ros import bag_command, client  # import rclpy only when their commands run

    map_command.add_arguments(sub)

    client.add_arguments(sub)
    bag_command.add_arguments(sub)
    return ap


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gem_ros")
    except PackageNotFoundError:  # a source tree that was never installed
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    # open_clip logs every step of model creation at INFO on the root logger: keep our own.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # a QueryError, a BagError: bad input, said plainly
        log.error("%s", exc)
        return 2
    except RuntimeError as exc:
        # The model's errors, looked up where they live: a command that never loaded the
        # model (a refusal, `gem-ros queries`) never imports torch for them.
        loading = sys.modules.get("gem_ros.gem.loading")
        export = sys.modules.get("gem_ros.gem.export")
        if loading is not None and isinstance(exc, loading.ModelLoadError):
            log.error("%s", exc.told("--pretrained /path/to/open_clip_pytorch_model.bin"))
        elif export is not None and isinstance(exc, export.ExportError):
            log.error("%s", exc)
        else:
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
