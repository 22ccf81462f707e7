"""One prepared check of gem_ros's GPU paths, for the first CUDA machine at hand: what it can
prove there, written to OUT/gpu_check.md and OUT/gpu_check.json.

    python benchmarks/gpu_check.py OUT            # under 8 minutes on a desktop GPU
    python benchmarks/gpu_check.py OUT --quick    # fewer scenes and rounds: about 2 minutes
    python benchmarks/gpu_check.py OUT --dry-run  # the script itself, on a CPU (tiny model)

It needs torch with CUDA, open_clip_torch (and its ftfy and wcwidth), numpy; not rclpy or
the ROS wheels (the core and the engine only). onnx, onnxruntime(-gpu) and tensorrt are used
where they import, and skipped with the reason where they do not. Exit status: 0 when every
check that ran passed, 1 when one failed, 2 without a CUDA device.

What it checks:
- every method on CUDA in fp32, fp16 and bf16 against the CPU fp32 result (which matches the
  authors' code to 1e-7: test/test_gem_parity.py, test_successors_parity.py), on the tiny
  test CLIP and on ViT-B-16 (random weights) at 448: patch logits, image embedding, peaks;
- the presence decisions and pointing of fp16 and bf16 on the generated scenes (the shipped
  scene CLIP) against CPU fp32: at least 99% of the decisions, pointing within 1 point;
- the engine (threads, slot, budgets) serving frames on CUDA, with backends torch and
  onnxruntime (the graph built by the loader, IO binding; CPU-only onnxruntime says so);
- masks and heatmaps leave the GPU in pinned host memory, in one wait per frame;
- a 720p JPEG decoded on the GPU against the CPU's decode: pixels, `locate`, time;
- TensorRT fp32 and fp16 against torch where TensorRT imports;
- three cameras on one engine (one model, batched) against three engines of one camera each,
  frames/s in total (ViT-B-16 at 448);
- the speed table: ViT-B-16 at 448 and ViT-B-32 at 288, torch fp32/fp16/bf16, batches of
  1, 3 and 8: frames/s, the ratio to open_clip's forward in the same precision and rounds,
  and the model's share of `locate`'s time at batch 1 (the rest is pre- and post-processing).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's code
import gem_ros.gem as gem  # noqa: E402
from gem_ros.cpu_name import cpu_model  # noqa: E402
from gem_ros.gem.backends import onnxruntime_available, tensorrt_available  # noqa: E402

TINY = (
    str(REPO / "test/fixtures/gem-tiny-test.json"),
    str(REPO / "test/fixtures/gem-tiny-test.pt"),
)
PRECISIONS = ("fp32", "fp16", "bf16")
# Largest |patch logit| difference from CPU fp32 allowed per precision (cosines in [-1, 1]).
TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2, "bf16": 6e-2}
QUERIES = ["red", "blue", "a green thing"]
DEVICE = "cuda"  # "cpu" for --dry-run: the script's own logic, checked without a GPU


class Report:
    def __init__(self, out: Path):
        self.out, self.checks, self.tables = out, [], {}
        out.mkdir(parents=True, exist_ok=True)

    def check(self, name: str, fn, *args) -> None:
        """Run one check: 'pass' with its details, 'skip' with the reason, 'fail' with the
        error; each written at once, so a later crash loses nothing."""
        started = time.monotonic()
        try:
            detail = fn(*args)
            status = "skip" if isinstance(detail, Skip) else "pass"
            detail = str(detail) if status == "skip" else detail
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, the rest run
            status = "fail"
            detail = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        self.checks.append(
            dict(name=name, status=status, detail=detail, seconds=time.monotonic() - started)
        )
        print(f"{status:5} {name} ({self.checks[-1]['seconds']:.1f} s)", flush=True)
        self.write()

    def write(self) -> None:
        info = machine()
        (self.out / "gpu_check.json").write_text(
            json.dumps(dict(machine=info, checks=self.checks, tables=self.tables), indent=1)
        )
        lines = [f"# gem_ros GPU check, {time.strftime('%Y-%m-%d')}", ""]
        lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
        lines += ["| check | result | seconds | detail |", "|---|---|---|---|"]
        for c in self.checks:
            detail = c["detail"] if isinstance(c["detail"], str) else json.dumps(c["detail"])
            detail = detail.replace("\n", " ").replace("|", "/")[:400]
            lines.append(f"| {c['name']} | {c['status']} | {c['seconds']:.1f} | {detail} |")
        for title, rows in self.tables.items():
            lines += ["", f"## {title}", ""] + rows
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


class Skip(str):
    """A check that cannot run here, and why."""


def machine() -> dict:
    if DEVICE == "cpu":
        return {"gpu": "none (a dry run on the CPU)", "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": f"{props.name} (compute {props.major}.{props.minor}, {props.multi_processor_count} "
        f"SMs, {props.total_memory / 2**30:.0f} GiB)",
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda})",
        "python": platform.python_version(),
        "cpu": cpu_model(),
    }


def _image(seed=0, size=(96, 128)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
    image[size[0] // 5 : size[0] // 2, size[1] // 4 : size[1] // 2] = (220, 30, 30)
    return image


def _load(source, device, precision="fp32", **kw):
    torch.manual_seed(0)  # random weights: the same in every load
    return gem.load_model(*source, device=device, precision=precision, **kw)


def methods_against_cpu(source, size) -> dict:
    """Each method on CUDA in each precision against the CPU fp32 result."""
    out = {}
    image = _image(size=size)
    for method in gem.METHODS:
        cpu = _load(source, "cpu", method=method)
        pixels = cpu.preprocess(image)
        ref_logits = cpu.patch_logits(pixels, QUERIES)
        _, ref_embedding = cpu.features(pixels, True)
        ref_peaks = [(d.peak_x, d.peak_y) for d in cpu.locate(image, QUERIES)]
        del cpu
        for precision in PRECISIONS:
            model = _load(source, DEVICE, precision, method=method)
            logits = model.patch_logits(pixels.to(DEVICE), QUERIES).float().cpu()
            _, embedding = model.features(pixels.to(DEVICE), True)
            peaks = [(d.peak_x, d.peak_y) for d in model.locate(image, QUERIES)]
            diff = float((logits - ref_logits).abs().max())
            emb = float((embedding.float().cpu() - ref_embedding).abs().max())
            out[f"{method} {precision}"] = dict(
                logits=diff, embedding=emb, peaks=peaks == ref_peaks
            )
            assert diff < TOLERANCE[precision] and emb < TOLERANCE[precision], (method, precision)
            if precision == "fp32":
                assert peaks == ref_peaks, (method, peaks, ref_peaks)
            del model
        torch.cuda.empty_cache()
    return out


def scenes(count: int) -> dict:
    from gem_ros.eval import scenes as scene_gen
    from gem_ros.eval.cli import SCENE_MODEL, SCENE_WEIGHTS

    def answers(precision, device):
        model = _load((str(SCENE_MODEL), str(SCENE_WEIGHTS)), device, precision, input_size=224)
        rng = np.random.default_rng(1000)  # the scenes benchmark's seed
        hits, decisions = [], []
        for _ in range(count):
            scene = scene_gen.generate_scene(rng)
            masks = {o.colour: o.mask for o in scene.objects}
            for det in model.locate(scene.image, list(scene_gen.COLOURS)):
                decisions.append(det.found)
                if det.query in masks:
                    hits.append(bool(masks[det.query][det.peak_y, det.peak_x]))
        return 100 * float(np.mean(hits)), np.array(decisions), len(hits)

    base_pointing, base_decisions, pointed = answers("fp32", "cpu")
    # 1 point on the benchmark's 100 scenes; on fewer, one peak that moves.
    bound = max(1.0, 100 / pointed) + 1e-9
    out = {"cpu fp32 pointing": base_pointing, "bound": bound}
    for precision in PRECISIONS:
        pointing, decisions, _ = answers(precision, DEVICE)
        same = float((decisions == base_decisions).mean())
        out[f"cuda {precision}"] = dict(pointing=pointing, same_decisions=same)
        assert abs(pointing - base_pointing) <= bound and same >= 0.99, (precision, out)
    return out


def engine_serves(backend: str) -> dict:
    import logging
    import threading

    from gem_ros.engine import Engine
    from gem_ros.settings import ModelSettings
    from gem_ros.threads import ThrottledLog

    if backend == "onnxruntime" and not onnxruntime_available():
        return Skip("onnxruntime and onnx are not installed")
    logging.basicConfig(level=logging.INFO)
    results, done = [], threading.Event()

    def publish(result):
        results.append((result.seconds, [d.confidence for d in result.published]))
        if len(results) >= 20:
            done.set()

    engine = Engine(
        ThrottledLog(logging.getLogger("gpu-check-engine"), 1.0),
        convert=lambda frame, max_pixels: frame,
        publish=publish,
    )
    settings = ModelSettings(
        model=str(TINY[0]), pretrained=str(TINY[1]), device=DEVICE, backend=backend
    )
    try:
        engine.set_queries(["red", "blue"])
        error = engine.wait_for_model(settings)
        assert error is None, error
        frames = [_image(seed, (480, 640)) for seed in range(4)]
        deadline = time.monotonic() + 120
        i = 0
        while not done.is_set() and time.monotonic() < deadline:
            engine.offer(frames[i % 4])
            i += 1
            time.sleep(0.005)
        assert done.is_set(), f"{len(results)} results in 120 s"
        assert engine.model.device.type == DEVICE
        assert all(np.isfinite(c).all() for _, c in results)
        return dict(
            frames_offered=i,
            served=len(results),
            dropped=engine.dropped,
            median_ms=1e3 * statistics.median(s for s, _ in results),
        )
    finally:
        engine.close()


def cameras_batched(model_source, seconds: float) -> dict:
    """Three cameras on one engine (one model, their frames batched) against three engines
    of one camera each (three models, run side by side), frames/s in total; the issue's
    target on a GPU is at least 1.5x."""
    import logging
    import threading

    from gem_ros.engine import Engine
    from gem_ros.settings import ModelSettings
    from gem_ros.threads import ThrottledLog

    settings = ModelSettings(model=model_source[0], pretrained=model_source[1], device=DEVICE)
    frames = [_image(seed, (480, 640)) for seed in range(3)]

    def run(cameras_per_engine: list) -> float:
        count = [0]
        lock = threading.Lock()

        def publish(*_):
            with lock:
                count[0] += 1

        engines = []
        for _ in cameras_per_engine:
            engine = Engine(
                ThrottledLog(logging.getLogger("gpu-check-cameras"), 5.0),
                convert=lambda frame, max_pixels: frame,
                publish=publish,
            )
            engine.set_queries(["red", "blue"])
            error = engine.wait_for_model(settings)
            assert error is None, error
            engines.append(engine)
        try:
            warm = time.monotonic() + 3.0
            started = None
            while True:
                now = time.monotonic()
                if started is None and now > warm:
                    started, first = now, count[0]
                if started is not None and now > started + seconds:
                    return (count[0] - first) / (now - started)
                for engine, cameras in zip(engines, cameras_per_engine):
                    for i, camera in enumerate(cameras):
                        engine.offer(frames[i % 3], camera)
                time.sleep(0.002)
        finally:
            for engine in engines:
                engine.close()
            if DEVICE == "cuda":
                torch.cuda.empty_cache()

    one_engine = run([["front", "left", "right"]])
    three_engines = run([["front"], ["left"], ["right"]])
    return dict(
        one_engine_fps=one_engine,
        three_engines_fps=three_engines,
        ratio=one_engine / three_engines,
        target=">= 1.5 on a GPU",
    )


def masks_leave_once() -> dict:
    """Masks and heatmaps of `locate` on CUDA come back in pinned host memory (one wait per
    frame, DMA copies; gem_ros.gem.postprocess.to_host), with the same detections as the
    CPU's."""
    model = _load(TINY, DEVICE)
    cpu = _load(TINY, "cpu")
    image = _image(3)
    dets = model.locate(image, QUERIES, return_heatmaps=True, presence_rule="off")
    want = cpu.locate(image, QUERIES, return_heatmaps=True, presence_rule="off")
    pinned = [d.mask.base.base.is_pinned() for d in dets]
    if DEVICE == "cuda" and not all(pinned):
        raise AssertionError(f"masks not in pinned memory: {pinned}")
    same = [bool((a.mask == b.mask).mean() > 0.99) for a, b in zip(dets, want)]
    if not all(same):
        raise AssertionError(f"masks differ from the CPU's: {same}")
    return {"pinned": pinned, "masks match the CPU (99% of pixels)": same}


def jpeg_on_the_gpu(rounds: int) -> dict:
    """A 1280x720 JPEG decoded on the GPU (gem_ros.gem.decode, nvJPEG) against torchvision's
    CPU decoder: pixels within 2 levels on average, `locate` on it within the fp32 tolerance
    of `locate` on the CPU-decoded frame, and the decode-plus-upload time as a ratio to the
    CPU's decode plus upload (median of `rounds`)."""
    from gem_ros.gem.decode import jpeg_decoder

    if DEVICE != "cuda":
        return Skip("decoding on the GPU needs CUDA (a dry run)")
    decode = jpeg_decoder(torch.device(DEVICE))
    if decode is None:
        return Skip("this torchvision cannot decode JPEGs on this GPU (see the log line)")
    from torchvision.io import decode_jpeg, encode_jpeg

    frame = torch.from_numpy(np.ascontiguousarray(_image(4, (720, 1280)).transpose(2, 0, 1)))
    data = encode_jpeg(frame, quality=90).numpy().tobytes()
    on_gpu = decode(data)
    on_cpu = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)).permute(1, 2, 0)
    pixel_error = float((on_gpu.cpu().int() - on_cpu.int()).abs().float().mean())
    if pixel_error > 2:
        raise AssertionError(f"GPU and CPU decodes differ by {pixel_error:.2f} levels on average")
    model = _load(TINY, DEVICE)
    a = model.locate(on_gpu, QUERIES, presence_rule="off")
    b = model.locate(on_cpu.numpy(), QUERIES, presence_rule="off")
    score_error = max(abs(x.score - y.score) for x, y in zip(a, b))
    if score_error > 2e-2:
        raise AssertionError(f"locate on the GPU decode differs by {score_error:.3g} in score")

    def cpu_path():
        decoded = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        decoded.to(DEVICE)
        torch.cuda.synchronize()

    def gpu_path():
        decode(data)
        torch.cuda.synchronize()

    cpu_s = statistics.median(_timed(cpu_path) for _ in range(rounds))
    gpu_s = statistics.median(_timed(gpu_path) for _ in range(rounds))
    return {
        "mean pixel difference": round(pixel_error, 3),
        "max score difference": round(score_error, 5),
        "CPU decode + upload (ms)": round(cpu_s * 1e3, 2),
        "GPU decode (ms)": round(gpu_s * 1e3, 2),
        "GPU / CPU time": round(gpu_s / cpu_s, 3),
    }


def tensorrt_matches() -> dict:
    if DEVICE != "cuda":
        return Skip("TensorRT runs on a CUDA device only (a dry run)")
    if not tensorrt_available():
        return Skip("TensorRT's Python package (or onnx) is not installed here")
    out = {}
    image = _image()
    for method in gem.METHODS:
        reference = _load(TINY, DEVICE, method=method)
        pixels = torch.cat([reference.preprocess(_image(s)) for s in range(3)]).to(DEVICE)
        a = reference.patch_logits(pixels, QUERIES)
        for precision, tolerance in (("fp32", 1e-3), ("fp16", 2e-2)):
            model = _load(TINY, DEVICE, precision, method=method, backend="tensorrt")
            b = model.patch_logits(pixels, QUERIES)
            same = [
                (x.found, x.peak_x, x.peak_y) == (y.found, y.peak_x, y.peak_y)
                for x, y in zip(reference.locate(image, QUERIES), model.locate(image, QUERIES))
            ]
            out[f"{method} {precision}"] = dict(logits=float((a - b).abs().max()), same=all(same))
            assert out[f"{method} {precision}"]["logits"] < tolerance and all(same), out
    return out


def speed(report: Report, rounds: int) -> dict:
    import open_clip

    rows = [
        "| model | precision | batch | ms | frames/s | x open_clip same precision | "
        "model share of locate |",
        "|---|---|---|---|---|---|---|",
    ]
    out = {}
    for name, size in (("ViT-B-16", 448), ("ViT-B-32", 288)):
        plain = open_clip.create_model(name, pretrained=None, device=DEVICE, force_image_size=size)
        plain.eval()
        for precision in PRECISIONS:
            model = gem.load_model(name, "none", device=DEVICE, precision=precision)
            for batch in (1, 3, 8):
                t, ratio, share = _measure(model, plain, size, batch, precision, rounds)
                out[f"{name} {precision} b{batch}"] = dict(
                    ms=1e3 * t, fps=batch / t, ratio=ratio, share=share
                )
                rows.append(
                    f"| {name} at {size} | {precision} | {batch} | {1e3 * t:.1f} | "
                    f"{batch / t:.0f} | {ratio:.2f} | {share} |"
                )
            model = None  # one model on the GPU at a time
            torch.cuda.empty_cache()
    report.tables["speed (median of rounds; ratio per round against open_clip)"] = rows
    return out


def _measure(model, plain, size: int, batch: int, precision: str, rounds: int):
    """(seconds per forward, median ratio to open_clip's forward in the same precision in
    the same rounds, the model's share of locate's time at batch 1 or '')."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    pixels = torch.randn(batch, 3, size, size, device=DEVICE)

    def plain_forward():
        with torch.autocast(DEVICE, dtype=dtype, enabled=dtype is not None):
            plain.encode_image(pixels)

    def forward():
        model.features(pixels, True)

    t_model, t_plain = [], []
    with torch.inference_mode():
        forward()  # warm-up
        plain_forward()
        for _ in range(rounds):
            t_plain.append(_timed(plain_forward))
            t_model.append(_timed(forward))
    t = statistics.median(t_model)
    ratio = statistics.median(m / p for m, p in zip(t_model, t_plain))
    if batch != 1:
        return t, ratio, ""
    image = _image(size=(size, size))

    def locate():
        model.locate(image, QUERIES)

    locate()
    t_locate = statistics.median(_timed(locate) for _ in range(rounds))
    return t, ratio, f"{t / t_locate:.0%}"


def _timed(fn) -> float:
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for gpu_check.md and gpu_check.json")
    ap.add_argument("--quick", action="store_true", help="20 scenes, 5 rounds")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="run the checks on the CPU (tiny model, 5 scenes, no ViT-B-16, no speed table): "
        "the script's own logic, where no GPU is",
    )
    args = ap.parse_args()
    global DEVICE, PRECISIONS
    if args.dry_run:
        # On the CPU, fp32 against the CPU's fp32 compares a model with itself: bf16 only.
        DEVICE, PRECISIONS = "cpu", ("bf16",)
    elif not torch.cuda.is_available():
        print("no CUDA device here: this check needs one (--dry-run runs it on the CPU)")
        return 2
    report = Report(args.out)
    report.check("methods on CUDA vs CPU fp32, tiny CLIP", methods_against_cpu, TINY, (96, 128))
    if not args.dry_run:
        report.check(
            "methods on CUDA vs CPU fp32, ViT-B-16 random at 448",
            methods_against_cpu,
            ("ViT-B-16", "none"),
            (448, 448),
        )
    count = 5 if args.dry_run else 20 if args.quick else 100
    report.check("presence and pointing on the scenes", scenes, count)
    report.check("engine serves on CUDA, backend torch", engine_serves, "torch")
    report.check("engine serves on CUDA, backend onnxruntime", engine_serves, "onnxruntime")
    report.check("masks leave the GPU once, in pinned memory", masks_leave_once)
    report.check("JPEG frames decoded on the GPU", jpeg_on_the_gpu, 5 if args.quick else 20)
    report.check("TensorRT against torch", tensorrt_matches)
    report.check(
        "three cameras on one engine against three engines",
        cameras_batched,
        TINY if args.dry_run else ("ViT-B-16", "none"),
        1.5 if args.dry_run else 3.0 if args.quick else 15.0,
    )
    if not args.dry_run:
        report.check("speed table", speed, report, 5 if args.quick else 20)
    failed = [c["name"] for c in report.checks if c["status"] == "fail"]
    print(f"report: {args.out / 'gpu_check.md'}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
