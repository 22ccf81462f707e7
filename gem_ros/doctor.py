"""`gem-ros doctor`: what this machine has for gem_ros, what is wrong, and the fix.

One line per check: `ok`, `warn` (works, but less or slower than it could) or `FAIL` (the node
cannot run here). Exit status 1 when anything FAILs, 0 otherwise. Nothing is downloaded and
no node is started; each probe imports only what it names.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .cpu_name import cpu_model
from .ros.transports import FIX, VARIABLE, transport_problem

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_PYTHON = (3, 10)  # JetPack 6 (Humble)
TESTED_DISTROS = ("jazzy", "kilted")
DESIGNED_DISTROS = ("humble",)


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001 - a broken install is as absent as a missing one
        return False


def pip_distro() -> str | None:
    """The distro of the ROS 2 PyPI wheels here: the ros-<distro>-rclpy meta wheel."""
    found = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("ros-") and name.endswith("-rclpy") and name.count("-") == 2:
            found.add(name.split("-")[1])
    return found.pop() if len(found) == 1 else None


def ros_distro() -> str | None:
    """The ROS distro this environment runs: a sourced installation's ROS_DISTRO, else the
    PyPI wheels'."""
    return os.environ.get("ROS_DISTRO") or pip_distro()


def share_directory(package: str) -> Path | None:
    """share/<package> in the ament index, or None."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except Exception:  # noqa: BLE001 - no index, no package: both mean not found
        return None


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info < MIN_PYTHON:
        return Check("python", FAIL, version, "gem_ros needs Python >= 3.10")
    return Check("python", OK, f"{version} ({sys.executable})")


def check_ros() -> list[Check]:
    checks = []
    distro = ros_distro()
    try:
        import rclpy  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return [
            Check(
                "rclpy",
                FAIL,
                f"does not import: {exc}",
                "source your ROS 2 installation (Humble, Jazzy, Kilted), or run "
                "scripts/setup.sh (ROS 2 Jazzy wheels from PyPI in .venv)",
            )
        ]
    rclpy_version = _version("ros-rclpy") or _package_xml_version("rclpy") or "unknown version"
    if distro in TESTED_DISTROS:
        checks.append(Check("ros distro", OK, f"{distro} (tested in CI), rclpy {rclpy_version}"))
    elif distro in DESIGNED_DISTROS:
        checks.append(
            Check(
                "ros distro",
                OK,
                f"{distro} (supported by design, not run in CI), rclpy {rclpy_version}",
            )
        )
    else:
        checks.append(
            Check(
                "ros distro",
                WARN,
                f"{distro or 'unknown'}, rclpy {rclpy_version}",
                "gem_ros is tested on Jazzy and Kilted and written for Humble too",
            )
        )
    from gem_ros.ros.compat import fallbacks_in_use

    if fallbacks_in_use():
        checks.append(Check("rclpy fallbacks", OK, ", ".join(fallbacks_in_use())))
    checks.append(check_messages(distro))
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")
    checks.append(Check("rmw", OK, rmw))
    if rmw.startswith("rmw_fastrtps"):
        checks.append(check_fastdds())
    problem = transport_problem()
    if problem:
        checks.append(Check(VARIABLE, WARN, problem, FIX))
    elif rmw.startswith("rmw_fastrtps"):
        checks.append(Check(VARIABLE, OK, os.environ[VARIABLE]))
    return checks


def check_fastdds() -> Check:
    """Fast DDS's version, and whether it has the teardown deadlock of Fast-DDS#6066."""
    from gem_ros.ros.teardown import UPSTREAM_FIX, fastdds_version, has_teardown_deadlock

    version = fastdds_version()
    deadlock = has_teardown_deadlock(version)
    if deadlock:
        return Check(
            "fast dds",
            WARN,
            f"{version}: has a TCP teardown deadlock ({UPSTREAM_FIX}); gem_node and gem-ros "
            "bound their teardown and exit anyway, other nodes on it may hang when they stop",
            "a Fast DDS with the fix, when your distro ships one (docs/deployment.md)",
        )
    if deadlock is None:
        return Check(
            "fast dds",
            OK,
            f"{version or 'unknown version'} (whether it has {UPSTREAM_FIX} fixed is in its "
            "release notes; gem_ros bounds its teardown either way)",
        )
    return Check("fast dds", OK, f"{version} ({UPSTREAM_FIX} fixed)")


def _package_xml_version(package: str) -> str | None:
    share = share_directory(package)
    if share is None or not (share / "package.xml").is_file():
        return None
    text = (share / "package.xml").read_text()
    start = text.find("<version>")
    return text[start + 9 : text.find("</version>")] if start >= 0 else None


def check_messages(distro: str | None) -> Check:
    """gem_ros's generated messages import, and were built by this distro's rosidl."""
    try:
        from gem_ros.msg import GemResult  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return Check(
            "gem_ros messages",
            FAIL,
            f"do not import: {exc}",
            "build them: scripts/setup.sh (pip) or colcon build in a sourced workspace",
        )
    share = share_directory("gem_ros")
    built = (share / "ros_distro").read_text().strip() if share else ""
    if share is None:
        return Check(
            "gem_ros messages",
            WARN,
            "import, but the ament index has no gem_ros (launch files are not found)",
            f"export AMENT_PREFIX_PATH={sys.prefix}" + "${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}",
        )
    if built and distro and built != distro:
        return Check(
            "gem_ros messages",
            FAIL,
            f"built against ROS 2 {built}, but this environment runs {distro}",
            f"rebuild: GEM_ROS_DISTRO={distro} scripts/setup.sh in a fresh venv, or colcon build "
            "in a sourced workspace",
        )
    return Check("gem_ros messages", OK, f"built for {built or 'an unrecorded distro'} ({share})")


# Optional ROS packages: (name, module, status and what is lost without it, apt package).
OPTIONAL_ROS = (
    ("vision_msgs", "vision_msgs.msg", WARN, "no ~/detections (Detection2DArray)", "vision-msgs"),
    ("message_filters", "message_filters", OK, "depth sync uses gem_ros's own", ""),
    ("cv_bridge", "cv_bridge", OK, "not needed: gem_ros converts images itself", ""),
    ("launch_ros", "launch_ros.actions", WARN, "no gem.launch.py", "launch-ros"),
    ("ros2launch", "ros2launch", WARN, "no `ros2 launch` command", "ros2launch"),
    (
        "tf2_ros",
        "tf2_ros",
        WARN,
        "no target_frame, no ~/locate point in another frame, no memory_frame (~/recall)",
        "tf2-ros",
    ),
)


def check_optional_ros() -> list[Check]:
    checks = []
    for name, module, status, without, apt in OPTIONAL_ROS:
        if _importable(module):
            checks.append(Check(name, OK, "installed"))
        else:
            fix = (
                f"apt install ros-$ROS_DISTRO-{apt}; in a PyPI venv scripts/setup.sh installs "
                f"it from the {'tf2' if name == 'tf2_ros' else 'launch'} bundle (README.md, Set up)"
            )
            checks.append(Check(name, status, f"not installed ({without})", fix))
    return checks


def check_torch() -> list[Check]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return [Check("torch", FAIL, f"does not import: {exc}", _torch_fix())]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    where = Path(torch.__file__).parent
    checks = [Check("torch", OK, f"{torch.__version__} ({build}) from {where}")]
    from gem_ros.gem.loading import cpu_bf16

    flag = cpu_bf16()
    checks.append(
        Check(
            "cpu",
            OK,
            f"{cpu_model()}: {flag or 'no native bf16'}; precision auto on the CPU runs "
            f"{'bf16' if flag else 'fp32'}",
        )
    )
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            checks.append(
                Check(
                    f"cuda:{index}",
                    OK,
                    f"{torch.cuda.get_device_name(index)}, compute capability {major}.{minor}",
                )
            )
    elif platform.machine() == "aarch64" and not torch.version.cuda:
        checks.append(
            Check(
                "cuda",
                WARN,
                "this torch is PyPI's CPU-only aarch64 build: on a Jetson the GPU goes unused",
                _torch_fix(),
            )
        )
    else:
        checks.append(
            Check("cuda", OK, "no CUDA device: the node runs on the CPU (device auto picks it)")
        )
    return checks


def _torch_fix() -> str:
    if platform.machine() == "aarch64":
        return (
            "on a Jetson install NVIDIA's JetPack torch wheel (docs/deployment.md, Jetson), "
            "then make the venv with --system-site-packages so it is kept"
        )
    return "pip install torch (or run scripts/setup.sh)"


def check_open_clip(model: str, pretrained: str) -> list[Check]:
    version = _version("open_clip_torch")
    if version is None or not _importable("open_clip"):
        return [Check("open_clip", FAIL, "not installed", "pip install 'open_clip_torch>=3.3,<4'")]
    checks = [Check("open_clip", OK, version)]
    from gem_ros.gem.loading import ModelLoadError, local_weights

    try:
        where = local_weights(model, pretrained)
        checks.append(Check("weights", OK, f"{model} / {pretrained}: {where}"))
    except ModelLoadError as exc:
        # The node starts and says the same; it cannot process frames until weights load.
        local = "the node's pretrained:=/path/to/open_clip_pytorch_model.bin"
        checks.append(Check("weights", WARN, exc.told(local)))
    return checks


def check_accelerators() -> list[Check]:
    checks = []
    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    if ort and _importable("onnxruntime"):
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        checks.append(Check("onnxruntime", OK, f"{ort} ({providers})"))
    trt = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13")
    if trt or _importable("tensorrt"):
        checks.append(Check("tensorrt", OK, trt or "installed (JetPack)"))
    return checks


def run_checks(model: str, pretrained: str) -> list[Check]:
    checks = [check_python()]
    checks += check_ros()
    checks += check_optional_ros()
    checks += check_torch()
    checks += check_open_clip(model, pretrained)
    checks += check_accelerators()
    return checks


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append(
        f"gem_ros cannot run here: {', '.join(failed)}" if failed else "gem_ros can run here"
    )
    return "\n".join(lines) + "\n"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from .settings import ModelSettings

    defaults = ModelSettings()
    ap.add_argument(
        "--model",
        default=defaults.model,
        help="the model whose weights to look for (default: %(default)s, the node's)",
    )
    ap.add_argument(
        "--pretrained", default=defaults.pretrained, help="its tag or file (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    checks = run_checks(args.model, args.pretrained)
    sys.stdout.write(report(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
