"""`gem-ros queries`, `where`, `recall` and `ask-map`: talk to a running gem_node from a
shell, for the venv route that has no `ros2` CLI (and for scripts that prefer one line).

    gem-ros queries "red mug; person"        # ~/set_queries (an empty string clears them)
    gem-ros queries "mug handle" --camera wrist   # one camera's own queries
    gem-ros where "red mug" --timeout 2      # ~/locate, prints the answer as JSON
    gem-ros where "red mug" --frame base_link     # its point in base_link (through TF)
    gem-ros recall "red mug"                 # ~/recall: where it was seen (memory_frame)
    gem-ros ask-map "fire extinguisher"      # ~/ask_map: where the map has one (map_frame)

The same in rclpy, for your own code: see `call`.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(sub) -> None:
    q = sub.add_parser(
        "queries", help="set the active queries of a running gem_node (~/set_queries)"
    )
    q.add_argument("text", help="queries separated by ',' or ';' ('' clears them)")
    q.add_argument(
        "--shared",
        action="store_true",
        help="with --camera and '' for text: the camera drops its own queries and runs the "
        "shared ones",
    )
    w = sub.add_parser(
        "where", help="ask a running gem_node whether one thing is in view, and where (~/locate)"
    )
    w.add_argument("query", help="what to look for, e.g. 'red mug'")
    w.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds the node waits for a frame (default: %(default)s)",
    )
    w.add_argument(
        "--frame",
        default="",
        help="the TF frame of the 3D point, e.g. base_link (default: the camera's)",
    )
    r = sub.add_parser(
        "recall", help="ask a running gem_node where a thing was seen (~/recall, memory_frame)"
    )
    r.add_argument("query", help="what was seen, e.g. 'red mug'")
    m = sub.add_parser(
        "ask-map",
        help="ask a running gem_node's map of dense features where something is, any words "
        "(~/ask_map, map_frame)",
    )
    m.add_argument("query", help="anything, asked or not while the robot drove by")
    m.add_argument("--places", type=int, default=5, help="most places (default: %(default)s)")
    m.add_argument("--json", action="store_true", help="one JSON object, for programs")
    m.set_defaults(func=run_ask_map)
    for p in (q, w, r, m):
        p.add_argument("--node", default="/gem", help="the node's name (default: %(default)s)")
    for p in (q, w):
        p.add_argument(
            "--camera",
            default="",
            help="one of the node's cameras: its own queries, or the view asked for "
            "(default: the shared queries; the best view of every camera)",
        )
        p.add_argument(
            "--wait",
            type=float,
            default=10.0,
            help="seconds to wait for the node's service (default: %(default)s)",
        )
    for p in (r, m):
        p.add_argument(
            "--wait",
            type=float,
            default=10.0,
            help="seconds to wait for the node's service (default: %(default)s)",
        )
    q.set_defaults(func=run_queries)
    w.set_defaults(func=run_where)
    r.set_defaults(func=run_recall)


def call(service_type, name: str, request, wait: float, answer_within: float, report, tool: str):
    """One service call from a throw-away rclpy node: `report(response)` prints the answer
    and gives the exit status; a RuntimeError (no service, no answer) is printed and is
    status 1. The answer is printed before the middleware's teardown, which is bounded
    (gem_ros/ros/teardown.py): a hang there cannot keep a script waiting. The status."""
    import rclpy

    from gem_ros.ros.teardown import finish_middleware

    rclpy.init(args=[])
    node = None
    status = 1
    try:
        node = rclpy.create_node("gem_ros_cli")
        client = node.create_client(service_type, name)
        if not client.wait_for_service(timeout_sec=wait):
            raise RuntimeError(f"no service {name} within {wait:g} s: is gem_node running?")
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=answer_within)
        if not future.done():
            raise RuntimeError(f"{name} did not answer within {answer_within:g} s")
        status = report(future.result())
    except RuntimeError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
    finally:
        steps = [("destroy_node", node.destroy_node)] if node is not None else []
        finish_middleware([*steps, ("rclpy.try_shutdown", rclpy.try_shutdown)], tool, status)
    return status


def run_queries(args: argparse.Namespace) -> int:
    from gem_ros.queries import parse_queries
    from gem_ros.srv import SetQueries

    def report(response) -> int:
        print(response.message)
        return 0 if response.success else 1

    request = SetQueries.Request(
        queries=parse_queries(args.text), camera=args.camera, use_shared=args.shared
    )
    return call(
        SetQueries, f"{args.node}/set_queries", request, args.wait, 10.0, report, "gem-ros queries"
    )


def run_where(args: argparse.Namespace) -> int:
    from gem_ros.srv import Locate

    def report(r) -> int:
        answer = {
            "query": args.query,
            "found": r.found,
            "confidence": round(r.confidence, 4),
            "score": round(r.score, 4),
            "peak": [r.peak_x, r.peak_y],
            "frame_id": r.header.frame_id,
            "stamp": r.header.stamp.sec + r.header.stamp.nanosec * 1e-9,
            "point": [r.point.point.x, r.point.point.y, r.point.point.z] if r.has_point else None,
            "point_frame_id": r.point.header.frame_id if r.has_point else None,
            "message": r.message,
            "camera": r.camera,
        }
        print(json.dumps(answer))
        return 0

    request = Locate.Request(
        query=args.query, timeout=args.timeout, camera=args.camera, frame=args.frame
    )
    return call(
        Locate,
        f"{args.node}/locate",
        request,
        args.wait,
        args.timeout + 10.0,
        report,
        "gem-ros where",
    )


def run_recall(args: argparse.Namespace) -> int:
    from gem_ros.srv import Recall

    def report(r) -> int:
        places = [
            {
                "point": [pose.position.x, pose.position.y, pose.position.z],
                "age": round(age, 3),
                "confidence": round(confidence, 4),
                "sightings": sightings,
                "camera": camera,
            }
            for pose, age, confidence, sightings, camera in zip(
                r.places.poses,
                r.place_ages,
                r.place_confidences,
                r.place_sightings,
                r.place_cameras,
            )
        ]
        answer = {
            "query": args.query,
            "seen": r.seen,
            "frame_id": r.point.header.frame_id if r.seen else r.places.header.frame_id,
            "point": [r.point.point.x, r.point.point.y, r.point.point.z] if r.seen else None,
            "age": round(r.age, 3) if r.seen else None,
            "confidence": round(r.confidence, 4) if r.seen else None,
            "sightings": r.sightings,
            "places": places,
            "message": r.message,
        }
        print(json.dumps(answer))
        return 0

    request = Recall.Request(query=args.query)
    return call(Recall, f"{args.node}/recall", request, args.wait, 10.0, report, "gem-ros recall")


def run_ask_map(args: argparse.Namespace) -> int:
    from gem_ros.srv import AskMap

    def report(r) -> int:
        places = [
            {
                "point": [round(pose.position.x, 3), round(pose.position.y, 3),
                          round(pose.position.z, 3)],
                "score": round(score, 4),
                "voxels": size,
                "age": round(age, 1),
                "camera": camera,
            }
            for pose, score, size, age, camera in zip(
                r.places.poses, r.scores, r.sizes, r.ages, r.cameras
            )
        ]  # fmt: skip
        if args.json:
            print(json.dumps({"query": args.query, "found": r.found,
                              "frame_id": r.places.header.frame_id, "places": places,
                              "message": r.message}))  # fmt: skip
            return 0
        print(r.message)
        for i, p in enumerate(places, 1):
            x, y, z = p["point"]
            print(f"{i}. ({x:.2f}, {y:.2f}, {z:.2f}) in {r.places.header.frame_id}: score "
                  f"{p['score']:.2f}, {p['voxels']} voxels, seen {p['age']:.0f} s ago by "
                  f"{p['camera']!r}")  # fmt: skip
        return 0

    request = AskMap.Request(query=args.query, max_places=max(0, args.places))
    return call(AskMap, f"{args.node}/ask_map", request, args.wait, 30.0, report, "gem-ros ask-map")
