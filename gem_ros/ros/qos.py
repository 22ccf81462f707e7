"""The node's QoS profiles: camera images, the latched and volatile queries topics, services."""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

IMAGE_QOS = {
    'sensor_data': QoSProfile(
        depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
    ),
    'reliable': QoSProfile(
        depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    ),
}
LATCHED_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# A transient-local subscription does not match volatile publishers (the default of most
# tools), so `queries` is also heard through two volatile ones. The reliable one gets a
# reliable publisher's sample even when it went out before this side had matched that
# publisher: over Fast DDS's LARGE_DATA a one-shot publisher that publishes as soon as it
# sees the node lost 36 of 40 samples to a best-effort subscription, none to a reliable one.
# The best-effort one hears best-effort publishers, which match nothing else.
RELIABLE_QOS = QoSProfile(
    depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
)
ANY_PUBLISHER_QOS = QoSProfile(
    depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
)
# Requests kept until answered: the default depth of 10 loses calls from a burst of clients.
SERVICE_QOS = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE
)
