"""Helpers for the node tests and benchmarks: a gem_node (or `ros2 launch`) in its own
process, and a ROS client in this one.

Both talk over real Fast DDS on loopback, in a DDS domain of their own per test session.
"""

import array
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = (
    'model:=test/fixtures/gem-tiny-test.json',
    'pretrained:=test/fixtures/gem-tiny-test.pt',
    'device:=cpu',
    # The tiny model's weights are random: its presence decisions mean nothing, and these
    # tests are about masks, peaks and points. Presence is tested with the scene CLIP
    # (test_node_presence.py).
    'presence:=off',
)

# Set before any rclpy.init, in this process and (inherited) in the node's.
# No crosstalk between sessions, nor between the workers of one parallel session: each
# pytest-xdist worker (gw0, gw1, ...) takes the session's base domain plus its index, so two
# workers never share a domain. A helper process of a test (a benchmark's client) inherits its
# worker's domain. Fast DDS's ports are 7400 + 250 * domain + ...: domains stay <= 232.
MAX_WORKERS = 32


def _test_domain() -> str:
    worker = os.environ.get('PYTEST_XDIST_WORKER', '')
    if worker and os.environ.get('GEM_ROS_TEST_DOMAIN_WORKER') != worker:
        # The controller's domain (inherited) is the base of its workers'.
        base = int(os.environ.get('GEM_ROS_TEST_DOMAIN_ID') or 10 + os.getpid() % 190)
        index = int(worker.removeprefix('gw'))
        if index >= MAX_WORKERS:
            raise RuntimeError(f'at most {MAX_WORKERS} test workers (a DDS domain each)')
        os.environ['GEM_ROS_TEST_DOMAIN_WORKER'] = worker
        return str(min(base, 232 - MAX_WORKERS) + index)
    return os.environ.get('GEM_ROS_TEST_DOMAIN_ID') or str(10 + os.getpid() % 190)


os.environ['GEM_ROS_TEST_DOMAIN_ID'] = _test_domain()
os.environ['ROS_DOMAIN_ID'] = os.environ['GEM_ROS_TEST_DOMAIN_ID']
os.environ['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
# Fast DDS's default transports lose most 640x480 frames; so does Jazzy's plain LARGE_DATA
# (gem_ros/ros/transports.py). (Measured: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST undoes
# this; best-effort 640x480 frames get lost.) The suite runs on what users are told to run:
# shared memory and UDP with 8 MB buffers (99 of 99 640x480 frames at 10 Hz, Jazzy and
# Kilted; docs/deployment.md, "Which Fast DDS transports"). LARGE_DATA's TCP channels are
# where Fast DDS 2.14.5 deadlocks in teardown and where a fresh participant sometimes does not
# discover a node for 20 s and more: test_stop_cycles.py (and benchmarks/stop_cycles.py)
# start, serve and stop on it, the hard case for a bounded stop.
TEST_TRANSPORTS = 'DEFAULT?sockets_size=8MB'  # gem_ros/ros/transports.py's RECOMMENDED
LARGE_DATA_TRANSPORTS = 'LARGE_DATA?sockets_size=8MB'
# A helper process that must speak LARGE_DATA (a stop-cycle client) says so in this one.
os.environ['FASTDDS_BUILTIN_TRANSPORTS'] = os.environ.get(
    'GEM_ROS_TEST_TRANSPORTS', TEST_TRANSPORTS
)
# The node and launch processes must stop on SIGINT as from a terminal; a non-interactive
# shell starts background jobs with SIGINT ignored, which children would inherit.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Every node and launch process started in this session, so that a failed test can show
# their logs (conftest.py).
PROCESSES: list = []


class _Process:
    """A child process with its stdout and stderr in a file."""

    def __init__(self, log_path: Path, args: list, env: dict, cwd: Path = REPO):
        self.log_path = log_path
        self._log_file = open(log_path, 'wb')
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        PROCESSES.append(self)

    def describe(self) -> str:
        return f'{type(self).__name__} (pid {self.proc.pid}, {self.log_path})'

    def log(self) -> str:
        return self.log_path.read_bytes().decode('utf-8', errors='replace')

    def wait_for_log(self, text: str, after: int = 0, timeout: float = 60.0) -> str:
        """The log from offset `after` once it contains `text`; fails on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()[after:]
            if text in log:
                return log
            if self.proc.poll() is not None:
                raise AssertionError(
                    f'process exited ({self.proc.returncode}) before logging '
                    f'{text!r}:\n{self.log()[-3000:]}'
                )
            if time.monotonic() > deadline:
                raise AssertionError(f'no {text!r} in the log within {timeout} s:\n{log[-3000:]}')
            time.sleep(0.05)

    def interrupt(self, *signals: int, timeout: float = 60.0) -> tuple[int, float]:
        """Send the signals (0.1 s apart); (exit code, seconds from the first to the exit)."""
        started = time.monotonic()
        for i, signum in enumerate(signals):
            if i:
                time.sleep(0.1)
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.stop()
        return code, time.monotonic() - started

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log_file.close()
        return self.proc.returncode


def source_env(threads: int = 1, repo: Path = REPO) -> dict:
    """The environment of a node or launch run from this checkout (or another `repo`)."""
    venv_bin = str(Path(sys.executable).parent)
    return dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED='1',
        RCUTILS_LOGGING_BUFFERED_STREAM='0',
        RCUTILS_COLORIZED_OUTPUT='0',
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get('PYTHONPATH')])),
        # Pip-installed ROS: the ament index is the venv's prefix (launch files,
        # `ros2 launch <package>`), and the node's `python3` is the venv's.
        AMENT_PREFIX_PATH=os.pathsep.join(
            filter(None, [sys.prefix, os.environ.get('AMENT_PREFIX_PATH')])
        ),
        PATH=os.pathsep.join([venv_bin, os.environ.get('PATH', '')]),
    )


class NodeProcess(_Process):
    """`python -m gem_ros.node` from the source tree (this checkout, or another `repo`, e.g.
    an older commit's worktree for a before/after benchmark)."""

    def __init__(
        self,
        log_path: Path,
        *parameters: str,
        threads: int = 1,
        repo: Path = REPO,
        env: dict | None = None,
        managed: bool = False,
        remaps: tuple = (),
    ):
        """parameters: 'name:=value' each; remaps: 'from:=to' each (`__node:=gem1` renames
        the node)."""
        # This checkout's node (or its managed variant), or an older tree's (before
        # gem_ros/ros/ existed).
        module = (
            ('gem_ros.ros.managed' if managed else 'gem_ros.ros.node')
            if (repo / 'gem_ros' / 'ros' / 'node.py').is_file()
            else 'gem_ros.node'
        )
        args = [sys.executable, '-m', module, '--ros-args']
        for parameter in parameters:
            args += ['-p', parameter]
        for remap in remaps:
            args += ['-r', remap]
        super().__init__(log_path, args, {**source_env(threads, repo), **(env or {})}, cwd=repo)


class LaunchProcess(_Process):
    """`ros2 launch gem_ros gem.launch.py ARGS` as a user runs it; the node's Python code
    comes from this checkout (PYTHONPATH), the launch file from the installed package."""

    def __init__(self, log_path: Path, *arguments: str, threads: int = 1):
        ros2 = shutil.which('ros2', path=source_env()['PATH'])
        super().__init__(
            log_path, [ros2, 'launch', 'gem_ros', 'gem.launch.py', *arguments], source_env(threads)
        )

    def node_pid(self) -> int:
        """The gem_node's (or gem_lifecycle_node's) pid, from launch's 'process started with
        pid [N]' line."""
        line = self.wait_for_log('_node-1]: process started with pid')
        return int(line.split('_node-1]: process started with pid [')[1].split(']')[0])


class RosClient:
    """The test side: publishers of images and queries, subscribers of the node's outputs,
    clients of its services, spun by an executor thread of its own."""

    def __init__(self, node_name: str = 'gem', context=None):
        """context: the rclpy context (participant) to use; None: the shared one."""
        import rclpy
        from rcl_interfaces.srv import GetParameters, SetParametersAtomically
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from gem_ros.msg import GemResult
        from gem_ros.srv import SetQueries

        self.node_name = node_name
        self.context = context or shared_context()
        self.node = rclpy.create_node('gem_test_client', context=self.context)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._cond = threading.Condition()
        self.results, self.active, self.overlays = [], [], []
        n = self.node
        n.create_subscription(GemResult, f'/{node_name}/results', self._keep(self.results), 200)
        n.create_subscription(
            String,
            f'/{node_name}/active_queries',
            self._keep(self.active, lambda m: m.data),
            latched,
        )
        n.create_subscription(Image, f'/{node_name}/overlay', self._keep(self.overlays), 10)
        self.image_pub = n.create_publisher(Image, 'image', 10)
        self.compressed_pub = n.create_publisher(CompressedImage, 'image/compressed', 10)
        self.latched_queries_pub = n.create_publisher(String, 'queries', latched)
        # Volatile, as `ros2 topic pub` publishes.
        self.queries_pub = n.create_publisher(String, 'queries', 10)
        # Keep all: with the default (keep last 10) a burst of calls from this one client
        # loses its own requests or responses (seen on Jazzy: 196 of 200 answered), before
        # the node, which keeps all, ever sees them.
        self.set_queries_client = n.create_client(
            SetQueries,
            f'/{node_name}/set_queries',
            qos_profile=QoSProfile(
                depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE
            ),
        )
        self.set_parameters_client = n.create_client(
            SetParametersAtomically, f'/{node_name}/set_parameters_atomically'
        )
        self.get_parameters_client = n.create_client(GetParameters, f'/{node_name}/get_parameters')
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _keep(self, into: list, convert=lambda m: m):
        def callback(msg):
            with self._cond:
                into.append(convert(msg))
                self._cond.notify_all()

        return callback

    def clear(self):
        """Forget the messages received so far (results hold full-size masks)."""
        with self._cond:
            for received in (self.results, self.active, self.overlays):
                received.clear()

    def wait_for(self, predicate, what: str, timeout: float = 30.0):
        """Wait until predicate() (called under the lock) is truthy; return its value."""
        with self._cond:
            value = self._cond.wait_for(predicate, timeout)
        assert value, f'timed out after {timeout} s waiting for {what}'
        return value

    def wait_matched(self, compressed: bool = False, timeout: float = 30.0):
        """Wait until discovery has connected this side's endpoints with the node's."""
        deadline = time.monotonic() + timeout
        endpoints = [self.image_pub, self.queries_pub] + [self.compressed_pub] * compressed
        while (
            not all(p.get_subscription_count() for p in endpoints)
            or not self.set_queries_client.service_is_ready()
        ):
            assert time.monotonic() < deadline, (
                f'node endpoints not discovered in {timeout:g} s: {self.graph(endpoints)}'
            )
            time.sleep(0.05)

    def graph(self, publishers=()) -> str:
        """What discovery has found: the nodes this participant knows (none of the node's
        means its participant was never discovered; the node but not its endpoints, that
        endpoint discovery stalled), and the subscribers each publisher has."""
        names = sorted(
            f'{ns.rstrip("/")}/{n}' for n, ns in self.node.get_node_names_and_namespaces()
        )
        counts = {p.topic_name: p.get_subscription_count() for p in publishers}
        return (
            f'nodes known {names}; subscribers {counts}; set_queries service ready '
            f'{self.set_queries_client.service_is_ready()}; '
            f'FASTDDS_BUILTIN_TRANSPORTS={os.environ.get("FASTDDS_BUILTIN_TRANSPORTS")!r}, '
            f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID")}'
        )

    def add_depth(self, node_name: str = 'gem'):
        """Publishers of depth and camera_info and a subscription of the node's markers."""
        from sensor_msgs.msg import CameraInfo, Image
        from visualization_msgs.msg import MarkerArray

        self.depth_pub = self.node.create_publisher(Image, 'depth', 5)
        self.info_pub = self.node.create_publisher(CameraInfo, 'camera_info', 5)
        self.markers = []
        self.node.create_subscription(
            MarkerArray, f'/{node_name}/markers', self._keep(self.markers), 50
        )

    def wait_depth_matched(self, node_name: str = 'gem', timeout: float = 30.0):
        """Wait until the node hears depth and camera_info and publishes markers."""
        deadline = time.monotonic() + timeout
        while not (
            self.depth_pub.get_subscription_count()
            and self.info_pub.get_subscription_count()
            and self.node.count_publishers(f'/{node_name}/markers')
        ):
            assert time.monotonic() < deadline, 'depth and markers endpoints not discovered'
            time.sleep(0.05)

    def result_for(self, header, timeout: float = 30.0):
        """The first result stamped like `header` (stamp and frame_id)."""

        def find():
            return next((r for r in self.results if r.header == header), None)

        return self.wait_for(find, f'a result for frame {header.frame_id!r}', timeout)

    def publish_and_wait(self, msg, timeout: float = 30.0, resend_s: float = 5.0):
        """Publish a frame and return its result. The image subscription is best effort, so
        a frame lost in transport is sent again after resend_s."""
        publisher = self.compressed_pub if hasattr(msg, 'format') else self.image_pub
        deadline = time.monotonic() + timeout
        while True:
            publisher.publish(msg)
            try:
                return self.result_for(msg.header, min(resend_s, deadline - time.monotonic()))
            except AssertionError:
                if time.monotonic() + 0.1 >= deadline:
                    raise
                # Shown with a failed test's output: why this frame went out again.
                print(
                    f'publish_and_wait: no result for frame {msg.header.stamp.sec} within '
                    f'{resend_s:g} s (best-effort image lost in transport, or the node busy); '
                    'sending it again',
                    flush=True,
                )

    def call(self, client, request, timeout: float = 30.0, resend_s: float = 0.0):
        """The service's answer. With resend_s (idempotent requests only), the request goes
        out again when unanswered that long: a client whose service is 'ready' as soon as
        its request writer is matched can still lose the answer, the server not having
        matched its response reader yet (seen on Jazzy: get_parameters right after
        service_is_ready() unanswered for 30 s, in a full run)."""
        done = threading.Event()
        deadline = time.monotonic() + timeout
        futures = []
        while True:
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            futures.append(future)
            left = deadline - time.monotonic()
            if done.wait(min(resend_s, left) if resend_s else left):
                return next(f for f in futures if f.done()).result()
            assert time.monotonic() < deadline, (
                f'no answer from {client.srv_name} within {timeout} s '
                f'({len(futures)} request(s) sent)'
            )
            print(f'call: no answer from {client.srv_name} within {resend_s:g} s; asking again')

    def set_parameters(self, **values):
        """Set the node's parameters all at once (one change for its callbacks); the
        SetParametersResult."""
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.parameter import Parameter

        request = SetParametersAtomically.Request(
            parameters=[
                Parameter(name, value=value).to_parameter_msg() for name, value in values.items()
            ]
        )
        return self.call(self.set_parameters_client, request).result

    def get_parameters(self, *names, timeout: float = 30.0) -> dict:
        """The node's values of these parameters, by name."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(
            self.get_parameters_client, GetParameters.Request(names=list(names)), timeout, 5.0
        )
        return {
            name: parameter_value_to_python(value) for name, value in zip(names, response.values)
        }

    def lifecycle(self, transition: str = '', timeout: float = 120.0) -> str:
        """The managed node's state label after `transition` ('configure', 'activate',
        'deactivate', 'cleanup', 'shutdown'; '' only reads it), through lifecycle_msgs'
        ~/change_state and ~/get_state. AssertionError if the transition fails."""
        from lifecycle_msgs.srv import GetState

        self._lifecycle_clients()
        if transition:
            response = self.change_state(label=transition, timeout=timeout)
            assert response.success, f'transition {transition} failed'
        return self.call(self._get_state, GetState.Request()).current_state.label

    def _lifecycle_clients(self):
        from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState

        if not hasattr(self, '_change_state'):
            n = self.node
            self._change_state = n.create_client(ChangeState, f'/{self.node_name}/change_state')
            self._get_state = n.create_client(GetState, f'/{self.node_name}/get_state')
            self._get_transitions = n.create_client(
                GetAvailableTransitions, f'/{self.node_name}/get_available_transitions'
            )
        # A request sent before discovery matched the service is lost: wait for it (a node
        # of an earlier test may have gone, this one may be new).
        for service in (self._change_state, self._get_state, self._get_transitions):
            assert service.wait_for_service(30.0), f'no {service.srv_name} service'

    def change_state(self, id: int = 0, label: str = '', timeout: float = 120.0):
        """The raw ~/change_state response to a transition given by id and/or label, as a
        lifecycle manager sends it (nav2's sends ids)."""
        from lifecycle_msgs.srv import ChangeState

        self._lifecycle_clients()
        request = ChangeState.Request()
        request.transition.id = id
        request.transition.label = label
        return self.call(self._change_state, request, timeout)

    def available_transitions(self) -> dict:
        """{id: label} of the transitions the managed node offers from its state."""
        from lifecycle_msgs.srv import GetAvailableTransitions

        self._lifecycle_clients()
        answer = self.call(self._get_transitions, GetAvailableTransitions.Request())
        return {t.transition.id: t.transition.label for t in answer.available_transitions}

    def diagnostics(self):
        """Start keeping /diagnostics statuses (list of DiagnosticStatus, newest last; their
        arrival times, time.monotonic(), in diagnostics_times)."""
        from diagnostic_msgs.msg import DiagnosticArray

        if not hasattr(self, 'statuses'):
            self.statuses, self.diagnostics_times = [], []

            def keep(msg):
                with self._cond:
                    self.statuses.append(msg.status[0])
                    self.diagnostics_times.append(time.monotonic())
                    self._cond.notify_all()

            self.node.create_subscription(DiagnosticArray, '/diagnostics', keep, 50)
        return self.statuses

    def close(self):
        """Stop spinning and destroy the client's node: its endpoints go, the shared
        participant stays (see shared_context)."""
        self.executor.shutdown(timeout_sec=5.0)
        self._spinner.join(timeout=5.0)
        close_ros('RosClient.close', None, self.node)


# --- DDS participants of the test process -------------------------------------------------
# Fast DDS 2.14.5 (Jazzy) can deadlock while it destroys a participant (gem_ros/ros/
# teardown.py), holding the GIL: nothing in the process runs again. A participant is
# destroyed with the last node of its context, so the clients share one context whose
# keeper node lives until the session ends: a client's close destroys endpoints only. Tests
# that need a fresh participant of their own close it with close_ros, under the node's
# bound; at the end of the session the shared one goes the same way (conftest.py).
_shared = []  # [(context, keeper node)] once made


def shared_context():
    """The test process's one rclpy context, with a keeper node that holds its participant."""
    import rclpy

    if not _shared:
        context = rclpy.Context()
        rclpy.init(args=[], context=context)
        _shared.append((context, rclpy.create_node('gem_test_keeper', context=context)))
    return _shared[0][0]


def close_ros(what: str, context, *nodes, status: int = 1, then: str = ''):
    """Destroy `nodes`, then shut `context` down (None: leave it), under the node's bound
    (TEARDOWN_BOUND_S). A hang prints every thread's stack and a line naming `what`, the step
    and the Fast DDS version, and ends the test run with `status`: a hang in C cannot be
    interrupted, and a run that never ends is worse than one that fails saying why."""
    from gem_ros.ros.teardown import finish_middleware

    steps = [(f'{what}: destroy_node({n.get_name()})', n.destroy_node) for n in nodes]
    if context is not None:
        steps.append((f'{what}: context shutdown', context.try_shutdown))
    finish_middleware(
        steps, 'gem_ros tests', status, then=then or f'ending the test run (status {status})'
    )


def close_shared_context(status: int) -> None:
    """At the end of the session, when the results are known: a hang here ends the run with
    the session's own status."""
    while _shared:
        context, keeper = _shared.pop()
        close_ros(
            "the tests' shared participant",
            context,
            keeper,
            status=status,
            then=f'ending pytest with its own status ({status}): every test has reported',
        )


# --- what a stop did, from the node's log and /diagnostics -------------------------------
def in_order(log: str, *lines: str) -> None:
    """Each line is in the log, after the one before it."""
    at = 0
    for line in lines:
        found = log.find(line, at)
        assert found >= 0, f'no {line!r} after offset {at}:\n{log[-3000:]}'
        at = found + len(line)


def a_status_later(client) -> None:
    """Wait for the next /diagnostics status: the frames offered so far are in its count."""
    count = len(client.diagnostics())
    client.wait_for(lambda: len(client.statuses) > count, 'a /diagnostics status')


def wait_until_offered(client, before: float, timeout: float = 60.0) -> None:
    """Until /diagnostics shows a frame offered after `before`: a status after it with a
    non-zero input rate (frames offered before were counted by an earlier status,
    a_status_later). The idle worker takes an offered frame at once."""
    statuses = client.diagnostics()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with client._cond:
            rates = [
                float(dict((v.key, v.value) for v in st.values)['input rate (Hz)'])
                for st, t in zip(statuses, client.diagnostics_times)
                if t > before
            ]
        if any(rate > 0 for rate in rates):
            return
        time.sleep(0.05)
    with client._cond:
        seen = [
            (round(t - before, 2), dict((v.key, v.value) for v in st.values)['input rate (Hz)'])
            for st, t in zip(statuses, client.diagnostics_times)
        ]
    raise AssertionError(f'no frame offered within {timeout} s; (s after, input rate): {seen}')


def send_a_frame_in_flight(client, shape=(480, 640)):
    """Publish a frame and return it once it is running in the node (a slow model: ViT-B-16
    on the CPU). A first frame, served without a resend (a second copy would keep the worker
    busy, and the frame would wait in the slot and be replaced there, not be in flight),
    shows the model is slow enough; the second is seen offered in /diagnostics."""
    client.diagnostics()
    first = client.publish_and_wait(image_msg(random_rgb(*shape), 'rgb8'), timeout=120, resend_s=60)
    assert first.inference_seconds > 0.5, 'the frame is too quick to be caught in flight'
    msg = image_msg(random_rgb(*shape), 'rgb8')
    a_status_later(client)
    sent = time.monotonic()
    client.image_pub.publish(msg)
    wait_until_offered(client, sent)
    return msg


def frame_words(msg) -> str:
    """How the node's log names a frame: stamp and frame_id."""
    stamp = msg.header.stamp
    return f'stamp {stamp.sec}.{stamp.nanosec:09d}, frame_id {msg.header.frame_id!r}'


_frame_counter = itertools.count(1)


def header(frame_id: str = 'camera'):
    """A header with a stamp no other frame of this session has."""
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec = next(_frame_counter)
    h.stamp.nanosec = 500
    return h


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_msg(pixels: np.ndarray, encoding: str, frame_id: str = 'camera'):
    """A sensor_msgs/Image holding the bytes of `pixels` (HxW[xC]) as they are."""
    from sensor_msgs.msg import Image

    height, width = pixels.shape[:2]
    row_bytes = pixels[0].nbytes
    msg = Image(
        header=header(frame_id), height=height, width=width, encoding=encoding, step=row_bytes
    )
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(pixels).tobytes())
    msg.data = data
    return msg
