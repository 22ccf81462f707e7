"""The queries' ROS side: the shared `queries` topic and each camera's `<name>/queries`,
~/set_queries, the latched ~/active_queries (and each camera's ~/<name>/active_queries), and
the `queries` parameter kept showing the shared ones. The engine holds the queries; this
checks what people and scripts send, says why a list is refused, and shows what runs.
"""

from __future__ import annotations

from rclpy.parameter import Parameter
from std_msgs.msg import String

import gem_ros.gem as gem
from gem_ros.ros.camera import publish
from gem_ros.ros.compat import SampleFilter, SubscriptionEventCallbacks, subscribe_with_stamp
from gem_ros.ros.guards import answered
from gem_ros.ros.qos import ANY_PUBLISHER_QOS, LATCHED_QOS, RELIABLE_QOS, SERVICE_QOS
from gem_ros.srv import SetQueries
from gem_ros.threads import cut, error_kind

QUERY_LOG_PERIOD_S = 1.0  # rejected queries: people and scripts, not sensors, send them


class QueriesInterface:
    def __init__(self, node, engine, cameras: list[str], log):
        """cameras: the node's camera names ('' alone: one camera, no topics of its own)."""
        self._node, self._engine, self._log = node, engine, log
        self.syncing = False  # setting the queries parameter ourselves: not a new list
        self._shared_pub = node.create_publisher(String, '~/active_queries', LATCHED_QOS)
        # A camera may have queries of its own (~/set_queries with `camera`, or its
        # `<name>/queries` topic); each camera's latched ~/<name>/active_queries shows what it
        # runs, its own or the shared ones.
        self._camera_actives: dict = {}  # camera -> what its active_queries said last
        self._camera_active_pubs = {
            name: node.create_publisher(String, f'~/{name}/active_queries', LATCHED_QOS)
            for name in cameras
            if name
        }
        node.create_service(
            SetQueries,
            '~/set_queries',
            answered(self._on_set_queries, log, '~/set_queries'),
            qos_profile=SERVICE_QOS,
        )
        node.get_logger().info(f'active queries: {self.describe()}')
        self._publish_active()
        self._subscribe('queries', None)
        for name in self._camera_active_pubs:
            self._subscribe(f'{name}/queries', name)

    def _send(self, publisher, msg) -> None:
        publish(self._node, publisher, msg)

    def _subscribe(self, topic: str, camera) -> None:
        """The shared (camera None) or one camera's queries topic. Every publisher reaches
        the best-effort subscription, whichever of the others it does not match: no warning
        about those. A sample heard twice or thrice is applied once."""
        samples = SampleFilter()

        def heard(msg: String, source_stamp) -> None:
            if not samples.repeat(msg.data, source_stamp):
                self._on_message(msg, topic, camera)

        for qos in (LATCHED_QOS, RELIABLE_QOS):
            quiet = SubscriptionEventCallbacks(incompatible_qos=lambda _: None)
            subscribe_with_stamp(self._node, String, topic, heard, qos, event_callbacks=quiet)
        subscribe_with_stamp(self._node, String, topic, heard, ANY_PUBLISHER_QOS)

    def _on_message(self, msg: String, topic: str, camera) -> None:
        queries = gem.parse_queries(msg.data)
        if not queries:
            self._log(
                'error',
                f'no queries in {msg.data[:40]!r}',
                f'no queries in {cut(msg.data, 60)!r} on {self._node.resolve_topic_name(topic)};'
                f' keeping the active queries {self.describe(camera)} (to clear them, '
                'call ~/set_queries with an empty list)',
                QUERY_LOG_PERIOD_S,
            )
            return
        self.set(queries, f'the {topic} topic', camera=camera)

    def _on_set_queries(self, request, response):
        camera = request.camera.strip() or None
        refused = None
        if camera is not None and camera not in self._camera_active_pubs:
            refused = f'no camera {cut(camera, 40)!r}: ' + (
                'this node has ' + ', '.join(repr(c) for c in self._camera_active_pubs)
                if self._camera_active_pubs
                else "this node has one camera (its `cameras` is empty): use ''"
            )
        elif request.use_shared and (camera is None or request.queries):
            refused = 'use_shared needs a camera and no queries'
        queries = [q for q in request.queries if q.strip()]
        if refused is None and request.queries and not queries:
            refused = (
                f'all {len(request.queries)} queries are blank (send an empty '
                'list to clear them); keeping the active queries '
                f'{self.describe(camera)}'
            )
        if refused is not None:
            response.success, response.message = False, cut(refused)
            self._log('error', f'set_queries: {refused[:30]}', f'~/set_queries: {refused}',
                      QUERY_LOG_PERIOD_S)  # fmt: skip
            return response
        response.success, response.message = self.set(
            None if request.use_shared else queries, '~/set_queries', camera=camera
        )
        return response

    def set(
        self, queries, source: str, sync_parameter: bool = True, camera=None
    ) -> tuple[bool, str]:
        """Activate `queries`, the shared ones or a camera's own (None with a camera: it runs
        the shared ones again), on the executor thread with no model call; on error log it
        and keep the active ones. The queries parameter shows the shared ones."""
        try:
            changed = self._engine.set_queries(queries, camera)
        except gem.QueryError as exc:
            message = (
                f'rejected queries from {source}: {exc}; keeping the active queries '
                f'{self.describe(camera)}'
            )
            self._log(
                'error', f'queries from {source}: {error_kind(exc)}', message, QUERY_LOG_PERIOD_S
            )
            return False, cut(message)
        message = f'active queries: {self.describe(camera)}'
        if changed:
            self._log.now('info', cut(f'{message} (from {source})'))
            self._publish_active()
            if sync_parameter and camera is None:
                self._sync_parameter()
        return True, cut(message)

    def _sync_parameter(self) -> None:
        """Make the queries parameter show the active queries (executor thread only)."""
        self.syncing = True
        try:
            self._node.set_parameters(
                [Parameter('queries', Parameter.Type.STRING_ARRAY, list(self._engine.queries))]
            )
        finally:
            self.syncing = False

    def describe(self, camera=None) -> str:
        if camera is None:
            return f"[{'; '.join(self._engine.queries)}]"
        whose = 'its own' if self._engine.has_own_queries(camera) else 'the shared ones'
        return f"[{'; '.join(self._engine.queries_of(camera))}] on camera {camera} ({whose})"

    def _publish_active(self) -> None:
        """The shared queries, and what each camera runs (latched: only when it changed)."""
        self._send(self._shared_pub, String(data='; '.join(self._engine.queries)))
        for name, publisher in self._camera_active_pubs.items():
            data = '; '.join(self._engine.queries_of(name))
            if self._camera_actives.get(name) != data:
                self._camera_actives[name] = data
                self._send(publisher, String(data=data))
