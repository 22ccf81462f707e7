"""Which FASTDDS_BUILTIN_TRANSPORTS to tell users: discovery and camera frames, measured.

    sudo .venv/bin/python benchmarks/transports.py              # all of it (about 15 min)
    .venv/bin/python benchmarks/transports.py --layouts host --participants 50

For each transport setting (LARGE_DATA, DEFAULT and SHM, each with 8 MB sockets) and each
layout, a server process stands in for gem_node:
- discovery: it offers a latched topic; --participants fresh participants (a new rclpy context
  each, one after the other, in a probe process) each time how long until they receive it
  (discovery, matching and one message), or give up after --discovery-timeout s;
- frames: it publishes rgb8 images (640x480, 921 KB; 1920x1080, 6.2 MB) best effort at 10 and
  30 Hz for --seconds once a subscriber matched (a camera driver's QoS against the node's
  `image_qos: best_effort`, depth 1); the subscriber counts what arrives and the latency.

Layouts: `host` (both processes on one computer: a robot's driver and gem_node) and `netns`
(two network namespaces joined by a veth pair, made here and removed after: a second host's
stand-in, needing root; the shared /dev/shm is what a real second host lacks). A probe process
that stops answering (Fast DDS 2.14.5's TCP teardown deadlock, docs/deployment.md) is killed
and counted, and a new one goes on. One JSON line per measurement on stdout (--json FILE keeps
them), a table at the end. Runs with this venv's ROS (Jazzy or Kilted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time

TRANSPORTS = ("LARGE_DATA", "DEFAULT", "SHM")
SOCKETS = "?sockets_size=8MB"
SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
RATES = (10, 30)
DOMAIN = 87  # apart from the tests' domains (test/ros_helpers.py)
NAMESPACES = ("gem_bench_a", "gem_bench_b")
ADDRESSES = ("10.213.0.1/24", "10.213.0.2/24")


# --- the roles, each run in a process of its own -----------------------------------------------
def serve(kind: str, size: str, rate: float, seconds: float) -> None:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    rclpy.init(domain_id=DOMAIN)
    node = rclpy.create_node("bench_server")
    if kind == "discovery":
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = node.create_publisher(String, "bench_hello", latched)
        pub.publish(String(data="hello"))
        print("READY", flush=True)
        while True:  # until killed: each probe participant discovers this one
            time.sleep(1.0)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, "bench_image", qos)
    height, width = SIZES[size]
    msg = Image(height=height, width=width, encoding="rgb8", step=3 * width)
    msg.data = bytes(height * width * 3)
    print("READY", flush=True)
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # both sides' endpoints matched, not only ours
    sent, period = 0, 1.0 / rate
    next_at = time.monotonic()
    while sent < rate * seconds:
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = str(sent)
        pub.publish(msg)
        sent += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    print(json.dumps({"sent": sent}), flush=True)
    time.sleep(2.0)
    os._exit(0)  # a bounded exit: the teardown deadlock is not what this measures


def probe(count: int, timeout: float) -> None:
    """`count` fresh participants, one after the other: the time each took to get the
    server's latched message (None: not within `timeout`)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String

    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for _ in range(count):
        started = time.monotonic()
        context = Context()
        rclpy.init(context=context, domain_id=DOMAIN)
        node = rclpy.create_node("bench_probe", context=context)
        got = []
        node.create_subscription(String, "bench_hello", got.append, latched)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        while not got and time.monotonic() - started < timeout:
            executor.spin_once(timeout_sec=0.05)
        took = time.monotonic() - started if got else None
        executor.shutdown()
        node.destroy_node()
        context.shutdown()
        print(json.dumps({"took": took}), flush=True)


def receive(seconds: float) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init(domain_id=DOMAIN)
    node = rclpy.create_node("bench_receiver")
    latencies = []

    def on_image(msg):
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append(node.get_clock().now().nanoseconds * 1e-9 - sent)

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(Image, "bench_image", on_image, qos)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"received": len(latencies), "latencies": latencies}), flush=True)
    os._exit(0)


# --- the driver --------------------------------------------------------------------------------
def _command(layout: str, side: int, transport: str, *role: str) -> list[str]:
    env = [f"FASTDDS_BUILTIN_TRANSPORTS={transport}{SOCKETS}"]
    run = ["env", *env, sys.executable, __file__, *role]
    return ["ip", "netns", "exec", NAMESPACES[side], *run] if layout == "netns" else run


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
        text=True,
    )


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


def _lines(process: subprocess.Popen, timeout: float):
    """The process's stdout lines; stops when none came for `timeout` s or it ended."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    while selector.select(timeout):
        line = process.stdout.readline()
        if not line:
            return
        yield line.strip()


def measure_discovery(layout: str, transport: str, participants: int, timeout: float) -> dict:
    server = _start(_command(layout, 0, transport, "serve", "discovery"))
    try:
        next(_lines(server, 30.0))
        times, hung, left = [], 0, participants
        while left > 0:
            prober = _start(_command(layout, 1, transport, "probe", str(left), str(timeout)))
            for line in _lines(prober, timeout + 20.0):
                times.append(json.loads(line)["took"])
                left -= 1
                print(f"{layout} {transport}: {len(times)} {times[-1]}", file=sys.stderr)
            if left > 0 and prober.poll() is None:  # silent: a teardown that never ended
                hung += 1
                left -= 1  # that participant: counted as hung, not as found
            _kill(prober)  # its own exit is not measured
    finally:
        _kill(server)
    found = [t for t in times if t is not None]
    return {
        "what": "discovery",
        "layout": layout,
        "transport": transport,
        "participants": participants,
        "found": len(found),
        "not_found": len(times) - len(found),
        "hung": hung,
        "median_s": statistics.median(found) if found else None,
        "p95_s": sorted(found)[int(0.95 * (len(found) - 1))] if found else None,
        "max_s": max(found) if found else None,
    }


def measure_frames(layout: str, transport: str, size: str, rate: int, seconds: float) -> dict:
    receiver = _start(_command(layout, 1, transport, "receive", str(seconds + 12.0)))
    server = _start(
        _command(layout, 0, transport, "serve", "frames", size, str(rate), str(seconds))
    )
    try:
        sent = received = 0
        latencies = []
        for line in _lines(server, seconds + 40.0):
            if line.startswith("{"):
                sent = json.loads(line)["sent"]
        for line in _lines(receiver, 30.0):
            out = json.loads(line)
            received, latencies = out["received"], out["latencies"]
    finally:
        _kill(server)
        _kill(receiver)
    return {
        "what": "frames",
        "layout": layout,
        "transport": transport,
        "size": size,
        "rate_hz": rate,
        "sent": sent,
        "received": received,
        "latency_median_ms": 1e3 * statistics.median(latencies) if latencies else None,
        "latency_p95_ms": 1e3 * sorted(latencies)[int(0.95 * (len(latencies) - 1))]
        if latencies
        else None,
    }


@contextlib.contextmanager
def namespaces(layouts):
    """Two network namespaces joined by a veth pair, multicast routed (Fast DDS discovers by
    multicast), removed afterwards."""
    if "netns" not in layouts:
        yield
        return
    a, b = NAMESPACES
    commands = [
        f"ip netns add {a}",
        f"ip netns add {b}",
        f"ip link add gem_veth_a netns {a} type veth peer name gem_veth_b netns {b}",
    ]
    for ns, dev, address in ((a, "gem_veth_a", ADDRESSES[0]), (b, "gem_veth_b", ADDRESSES[1])):
        commands += [
            f"ip -n {ns} link set lo up",
            f"ip -n {ns} addr add {address} dev {dev}",
            f"ip -n {ns} link set {dev} up multicast on",
            f"ip -n {ns} route add 224.0.0.0/4 dev {dev}",
        ]
    try:
        for command in commands:
            subprocess.run(command.split(), check=True)
        yield
    finally:
        for ns in NAMESPACES:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def _table(rows: list[dict]) -> str:
    lines = [
        "| layout | transport | discovered (of N) | hung | median / p95 / max s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["what"] == "discovery":
            t = "/".join(
                "-" if r[k] is None else f"{r[k]:.2f}" for k in ("median_s", "p95_s", "max_s")
            )
            lines.append(
                f"| {r['layout']} | {r['transport']} | {r['found']} of {r['participants']}"
                f" | {r['hung']} | {t} |"
            )
    lines += ["", "| layout | transport | frame | Hz | received / sent | latency median / p95 ms |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        if r["what"] == "frames":
            lat = (
                "-"
                if r["latency_median_ms"] is None
                else (f"{r['latency_median_ms']:.1f} / {r['latency_p95_ms']:.1f}")
            )
            lines.append(
                f"| {r['layout']} | {r['transport']} | {r['size']} | {r['rate_hz']} |"
                f" {r['received']} / {r['sent']} | {lat} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", default="host,netns")
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--participants", type=int, default=200)
    ap.add_argument("--discovery-timeout", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=8.0, help="frames sent per run, in s")
    ap.add_argument("--json", help="also write the JSON lines here")
    args = ap.parse_args()
    layouts, rows = args.layouts.split(","), []
    out = open(args.json, "w") if args.json else None  # noqa: SIM115 - kept for the run
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the namespaces go, too
    with namespaces(layouts):
        for layout in layouts:
            for transport in args.transports.split(","):
                runs = [("discovery", None, None)]
                runs += [("frames", size, rate) for size in SIZES for rate in RATES]
                for what, size, rate in runs:
                    if what == "discovery":
                        row = measure_discovery(
                            layout, transport, args.participants, args.discovery_timeout
                        )
                    else:
                        row = measure_frames(layout, transport, size, rate, args.seconds)
                    print(json.dumps(row), flush=True)
                    if out:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                    rows.append(row)
    print(_table(rows))


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "serve":
        serve(sys.argv[2], *(sys.argv[3:4] or ["640x480"]), *map(float, sys.argv[4:6] or [0, 0]))
    elif role == "probe":
        probe(int(sys.argv[2]), float(sys.argv[3]))
    elif role == "receive":
        receive(float(sys.argv[2]))
    else:
        main()
