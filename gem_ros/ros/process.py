"""A node's process: rclpy, the executor, signals and a bounded stop (`run_node`), and
`--help` (made from the parameters). gem_node and gem_lifecycle_node run their node class
through it; the node itself knows nothing of processes.
"""

import os
import signal
import sys
import threading
import time

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

from gem_ros.deadline import Deadline
from gem_ros.ros.guards import spin_until_shutdown
from gem_ros.ros.parameters import PARAMETERS
from gem_ros.ros.teardown import finish_middleware

EXIT_BOUND_S = 10.0  # interpreter exit after a clean stop; it takes well under 1 s


def stop_with_launch() -> bool:
    """Under `ros2 launch` (gem.launch.py names its pid in GEM_ROS_LAUNCH_PID), have the
    kernel send this process SIGINT, a clean stop, when launch dies, even by SIGKILL, so a
    launch never leaves its node behind. Linux only; whether the guard is set. Exits at once
    if launch is already gone."""
    expected = os.environ.get('GEM_ROS_LAUNCH_PID', '')
    if not expected.isdigit() or not sys.platform.startswith('linux'):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGINT), 0, 0, 0) != 0:
        return False
    if os.getppid() != int(expected):  # launch died before the guard was set
        rclpy.logging.get_logger('gem').warning('ros2 launch has already exited: stopping')
        raise SystemExit(0)
    return True


def _on_second_signal(hurry: threading.Event):
    def handler(signum, frame):
        hurry.set()  # already stopping: stop waiting for threads, no KeyboardInterrupt

    return handler


USAGE = """usage: gem_node [--ros-args -r image:=TOPIC -p NAME:=VALUE ...]
       gem_lifecycle_node [...]   (the same node, managed: lifecycle transitions)

GEM open-vocabulary localisation on camera images (gem_ros). Topics (remap with -r):
  image, image/compressed (with use_compressed), depth and camera_info (with use_depth),
  queries (std_msgs/String, 'red mug; person'). Publishes ~/results, ~/detections,
  ~/heatmaps, ~/heatmap_image, ~/overlay, ~/markers, ~/active_queries, /diagnostics;
  services ~/set_queries, ~/locate.
  From a shell: gem-ros queries 'red mug; person', gem-ros where 'red mug'.

parameters (-p name:=value, or --params-file FILE):
"""


def usage() -> str:
    lines = [USAGE]
    for spec in PARAMETERS:
        default = repr(spec.default) if isinstance(spec.default, str) else spec.default
        lines.append(f'  {spec.name} (default {default})\n      {spec.descriptor().description}')
    return '\n'.join(lines) + '\n'


def _help_asked(args) -> bool:
    argv = list(sys.argv[1:] if args is None else args)
    own = argv[: argv.index('--ros-args')] if '--ros-args' in argv else argv
    return any(a in ('-h', '--help') for a in own)


def run_node(node_class, args=None) -> int:
    """The process of a node: rclpy, one node of `node_class`, its executor, and a bounded
    stop on SIGINT or SIGTERM (a second signal hurries it)."""
    if _help_asked(args):  # before rclpy: --help must not start a node
        sys.stdout.write(usage())
        return 0
    stop_with_launch()
    rclpy.init(args=args)
    hurry = threading.Event()
    try:
        node = node_class()
    except KeyboardInterrupt:  # ctrl-c during start-up
        rclpy.try_shutdown()
        return 0
    except Exception as exc:  # bad start-up parameters: say which, exit without a traceback
        if not rclpy.ok():  # SIGTERM during start-up
            return 0
        rclpy.logging.get_logger('gem').fatal(f'cannot start: {exc}')
        rclpy.try_shutdown()
        return 2
    threads = node_class.EXECUTOR_THREADS
    executor = MultiThreadedExecutor(threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_shutdown(executor, node._log)
    except KeyboardInterrupt:
        pass
    finally:
        # rclpy's handlers turn the first SIGINT/SIGTERM into the end of spin(); a second
        # one while stopping must not raise KeyboardInterrupt out of the clean-up.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_second_signal(hurry))
        started = time.monotonic()
        log = rclpy.logging.get_logger('gem')
        finished = node.close(hurry)
        log.info(
            f'threads stopped in {time.monotonic() - started:.2f} s'
            + ('' if finished else ' (a load or frame in flight left unfinished)')
        )
        # Bounded: Fast DDS 2.14.5 can deadlock here (teardown.py); the stop is done.
        finish_middleware(
            [('destroy_node', node.destroy_node), ('rclpy.try_shutdown', rclpy.try_shutdown)],
            who=node_class.__name__,
        )
        log.info(f'stopped in {time.monotonic() - started:.2f} s')
        # Python's finalisation puts SIG_DFL back for handled signals: a late second signal
        # would then kill the process with -2 instead of letting it exit 0.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    if not finished:
        # A model load (or, after a second signal, a frame) is still running in C code that
        # cannot be interrupted; interpreter finalisation under it can crash. Leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    # What is left (interpreter exit, the rcl context's finalisation) gets a bound too: main
    # owns its process (rclpy.init, signal handlers), so it may end it.
    Deadline(EXIT_BOUND_S, f'[{node_class.__name__}] interpreter exit hung; leaving', 0)
    return 0
