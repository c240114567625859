"""The 9 sensor subscriptions and their synchronisation, shared by controller and fusion.

Design: the controller node synchronises the 9 topics (`SampleSync`) and stamps each sample
with its newest camera stamp; its LayerAllocation carries that stamp. The fusion node
subscribes to the same 9 topics, keeps the recent messages in a bounded stamp-keyed buffer
(`samples.StampedBuffer`) and, when an allocation arrives, rebuilds exactly that sample from
the stamp (never a stale or a guessed one); allocations wait (bounded) for late frames.

Where ROS 2 `message_filters` is installed, its ApproximateTimeSynchronizer pairs the camera
topics; here `sync.ApproximateSync` (same semantics) does. Radar (4 Hz) is attached as the
latest frame within `radar_max_age_s`, once no radar frame can still arrive for the sample
(`sync.LatestWithin.settled`; both nodes apply the same rule).
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.duration import Duration
from sensor_msgs.msg import CompressedImage, Image

from admn_ros.nodes.common import LIVE, sensor_qos, stamp_ns
from admn_ros.nodes.sync import SampleSync, SyncedSample

try:  # real ROS install
    import message_filters
except ImportError:  # here: the module with the same semantics
    message_filters = None

SENSOR_PARAMS = {
    "sensor_nodes": ("sensor node names, in the model's order",),
    "rgb_topic": ("RGB topic template ({node} is replaced); '/compressed' suffix = "
                  "sensor_msgs/CompressedImage",),
    "depth_topic": ("depth topic template (16UC1 mm or 32FC1 m)",),
    "radar_topic": ("radar range-doppler topic template (32FC1)",),
    "sync_slop_s": ("approximate-time slop between the camera frames of one sample, s",
                    0.0, 1.0, LIVE),
    "sync_queue_size": ("per-topic queue of the approximate-time synchroniser", 1, 100, LIVE),
    "radar_max_age_s": ("oldest radar frame still attached to a camera set, s", 0.0, 5.0),
    "radar_min_period_s": ("shortest interval between two radar frames of one node (more "
                           "than 2 x sync_slop_s), s", 0.0, 5.0),
    "sensor_reliability": ("QoS of the sensor topics: best_effort (live sensors) or reliable "
                           "(bag replay: every recorded frame counts)",),
}
SLOW_MODALITIES = ("radar",)


def topic_of(template: str, node: str) -> str:
    return template.replace("{node}", node)


def sensor_keys(node, modalities: list[str]) -> list[tuple[str, str]]:
    return [(n, m) for n in node.get_parameter("sensor_nodes").value for m in modalities]


def subscribe_sensors(node, keys: list[tuple[str, str]], on_msg: Callable) -> list:
    """One subscription per (node, modality), `sensor_reliability` QoS; `on_msg(key, msg)`."""
    qos = sensor_qos(node.get_parameter("sensor_reliability").value)
    subs = []
    for key in keys:
        topic = topic_of(node.get_parameter(f"{key[1]}_topic").value, key[0])
        msg_type = CompressedImage if topic.endswith("/compressed") else Image
        subs.append(node.create_subscription(msg_type, topic, lambda m, k=key: on_msg(k, m),
                                             qos))
    return subs


class SensorInputs:
    """Creates the subscriptions on `node`; calls `on_sample(SyncedSample)` / `on_drop(reason)`.
    A frame for which `accept()` is false (a managed node not active) is let go on arrival."""

    def __init__(self, node, modalities: list[str], on_sample: Callable[[SyncedSample], None],
                 on_drop: Callable[[str], None],
                 accept: Callable[[], bool] = lambda: True) -> None:
        p = {n: node.get_parameter(n).value for n in SENSOR_PARAMS}
        self.nodes = list(p["sensor_nodes"])
        keys = sensor_keys(node, modalities)

        def make_sync(queue_size: int, slop_s: float) -> SampleSync:
            return SampleSync(keys, SLOW_MODALITIES, queue_size, slop_s, p["radar_max_age_s"],
                              p["radar_min_period_s"], on_sample, on_drop)

        self.make_sync, self.accept = make_sync, accept
        self.tuning = (p["sync_slop_s"], p["sync_queue_size"])
        self.sync = make_sync(p["sync_queue_size"], p["sync_slop_s"])
        self.mf = None
        self.subs, self.fast = [], []
        self.received = 0
        fast = []
        for key in keys:
            topic = topic_of(p[f"{key[1]}_topic"], key[0])
            msg_type = CompressedImage if topic.endswith("/compressed") else Image
            if message_filters is not None and key[1] not in SLOW_MODALITIES:
                fast.append(message_filters.Subscriber(node, msg_type, topic,
                                                       qos_profile=sensor_qos(
                                                           p["sensor_reliability"])))
                continue
            self.subs += subscribe_sensors(node, [key], self.add)
        if fast:  # real ROS: message_filters pairs the cameras, SampleSync attaches radar
            self.mf = message_filters.ApproximateTimeSynchronizer(
                fast, p["sync_queue_size"], p["sync_slop_s"])
            self.mf.registerCallback(lambda *msgs: self.accept() and self.sync.add_set(
                *[(stamp_ns(m.header.stamp), m) for m in msgs]))
            self.fast = fast

    def retune(self, slop_s: float, queue_size: int) -> None:
        """New slop and queue size (live parameters): the synchroniser starts over with them
        (the sets it held are given up). ValueError, and nothing changed, when the slop does
        not fit the radar period."""
        sync = self.make_sync(queue_size, slop_s)
        if self.mf is not None:
            self.mf.queue_size, self.mf.slop = queue_size, Duration(seconds=slop_s)
            for q in self.mf.queues:
                q.clear()
        self.sync, self.tuning = sync, (slop_s, queue_size)

    def reset(self) -> None:
        """Forget every frame and set held (a managed node stopping or starting)."""
        self.retune(*self.tuning)

    def destroy(self, node) -> None:
        """Destroy the subscriptions (a managed node's cleanup)."""
        for sub in [*self.subs, *(f.sub for f in self.fast)]:
            node.destroy_subscription(sub)
        self.subs, self.fast = [], []

    def add(self, key: tuple[str, str], msg) -> None:
        if not self.accept():
            return
        self.received += 1
        self.sync.add(key, stamp_ns(msg.header.stamp), msg)
