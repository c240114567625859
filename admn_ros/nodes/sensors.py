"""The 9 sensor subscriptions and their synchronisation, shared by controller and fusion.

Design: the controller node synchronises the 9 topics (`SampleSync`) and stamps each sample
with its newest camera stamp; its LayerAllocation carries that stamp. The fusion node
subscribes to the same 9 topics, keeps the recent frames in a bounded stamp-keyed buffer
(`samples.StampedBuffer`) and, when an allocation arrives, rebuilds exactly that sample from
the stamp (never a stale or a guessed one); allocations wait (bounded) for late frames.

Every frame is checked on arrival (`arrival.Arrivals`) before it enters any queue, in both
nodes; only good frames, decoded, reach the synchroniser. `sync.ApproximateSync` (the
semantics of message_filters' ApproximateTimeSynchronizer) pairs the camera topics; radar
(4 Hz) is attached as the latest frame within `radar_max_age_s`, once no radar frame can
still arrive for the sample (`sync.LatestWithin.settled`; both nodes apply the same rule).
When the sensors stop (end of a bag, a driver gone) the sets still waiting are released as
`unfinished` drops after `idle_release_s` of silence, so none stays held.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sensor_msgs.msg import CompressedImage, Image

from admn_ros.nodes.arrival import Arrivals
from admn_ros.nodes.common import LIVE, sensor_qos, stamp_ns, steady_timer
from admn_ros.nodes.sync import SampleSync, SyncedSample

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
    "stamp_tolerance_s": ("a frame stamped more than this ahead of the node's clock or of "
                          "every other sensor topic is rejected as bad_stamp, s", 0.0, 3600.0),
    "stamp_max_behind_s": ("a frame stamped more than this behind the node's clock is "
                           "rejected as bad_stamp (unset or wrong driver clock), s",
                           0.0, 1.0e6),
    "stamp_jump_topics": ("topics that must step back together before the synchroniser "
                          "starts over (a looping bag); fewer = a lone outlier, rejected",
                          1, 100),
    "depth_max_invalid_share": ("a depth frame with at least this share of pixels without "
                                "a reading (REP 118 NaN/inf, 16UC1 0) is rejected", 0.0, 1.0),
    "idle_release_s": ("wall seconds without sensor frames after which the sets still "
                       "waiting are released as `unfinished` drops", 0.1, 60.0),
}
SLOW_MODALITIES = ("radar",)


def topic_of(template: str, node: str) -> str:
    return template.replace("{node}", node)


def sensor_keys(node, modalities: list[str]) -> list[tuple[str, str]]:
    return [(n, m) for n in node.get_parameter("sensor_nodes").value for m in modalities]


def sensor_topics(node, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(node, modality) -> the topic name the node subscribes to (before remapping)."""
    return {k: topic_of(node.get_parameter(f"{k[1]}_topic").value, k[0]) for k in keys}


def make_arrivals(node, keys: list[tuple[str, str]], drop: Callable[[str, str], None],
                  on_reject: Callable[[tuple[str, str], int], None] | None = None) -> Arrivals:
    """The arrival checks of `node`'s sensor topics, from its parameters and clock."""
    p = {n: node.get_parameter(n).value for n in SENSOR_PARAMS}
    return Arrivals(sensor_topics(node, keys), lambda: node.get_clock().now().nanoseconds,
                    drop, p["stamp_tolerance_s"], p["stamp_max_behind_s"],
                    p["depth_max_invalid_share"], on_reject)


def _lost_events(arrivals: Arrivals, key: tuple[str, str]):
    """Subscription event callbacks reporting the middleware's message-lost count, where this
    rclpy has them (the rmw may still not report any: the stamp gaps count then)."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:
        return None
    return SubscriptionEventCallbacks(
        message_lost=lambda info: arrivals.message_lost(key, info.total_count))


def subscribe_sensors(node, keys: list[tuple[str, str]], on_frame: Callable,
                      arrivals: Arrivals) -> list:
    """One subscription per (node, modality), `sensor_reliability` QoS; each message is
    checked by `arrivals` and only good frames reach `on_frame(key, stamp_ns, array)`."""
    qos = sensor_qos(node.get_parameter("sensor_reliability").value)
    subs = []
    for key, topic in sensor_topics(node, keys).items():
        msg_type = CompressedImage if topic.endswith("/compressed") else Image

        def take(msg, key=key) -> None:
            stamp = stamp_ns(msg.header.stamp)
            frame = arrivals(key, stamp, msg)
            if frame is not None:
                on_frame(key, stamp, frame)

        subs.append(node.create_subscription(msg_type, topic, take, qos,
                                             event_callbacks=_lost_events(arrivals, key)))
    return subs


class SensorInputs:
    """Creates the subscriptions on `node`; calls `on_sample(SyncedSample)` / `on_drop(reason)`.
    A frame for which `accept()` is false (a managed node not active) is let go on arrival."""

    def __init__(self, node, modalities: list[str], on_sample: Callable[[SyncedSample], None],
                 on_drop: Callable[..., None],
                 accept: Callable[[], bool] = lambda: True) -> None:
        p = {n: node.get_parameter(n).value for n in SENSOR_PARAMS}
        self.nodes = list(p["sensor_nodes"])
        keys = sensor_keys(node, modalities)

        def make_sync(queue_size: int, slop_s: float) -> SampleSync:
            return SampleSync(keys, SLOW_MODALITIES, queue_size, slop_s, p["radar_max_age_s"],
                              p["radar_min_period_s"], on_sample, on_drop,
                              p["stamp_tolerance_s"], p["stamp_jump_topics"])

        self.make_sync, self.accept = make_sync, accept
        self.tuning = (p["sync_slop_s"], p["sync_queue_size"])
        self.sync = make_sync(p["sync_queue_size"], p["sync_slop_s"])
        self.arrivals = make_arrivals(node, keys, on_drop,
                                      lambda key, stamp: self.sync.note_rejected(key, stamp))
        self.subs = subscribe_sensors(node, keys, self.add, self.arrivals)
        self.last_frame = time.monotonic()
        self.idle_s = p["idle_release_s"]
        self.idle_ticks = 0
        # two ticks per idle_release_s: a release needs two idle ticks in a row, so a node
        # that was starved of CPU takes its queued frames in before it gives up on them
        self.timer = steady_timer(node, self.idle_s / 2, self.tick)

    def retune(self, slop_s: float, queue_size: int) -> None:
        """New slop and queue size (live parameters): the synchroniser starts over with them
        (the sets it held are given up). ValueError, and nothing changed, when the slop does
        not fit the radar period."""
        self.sync = self.make_sync(queue_size, slop_s)
        self.tuning = (slop_s, queue_size)

    def reset(self) -> None:
        """Forget every frame and set held (a managed node stopping or starting)."""
        self.retune(*self.tuning)

    def destroy(self, node) -> None:
        """Destroy the subscriptions and the idle timer (a managed node's cleanup)."""
        for sub in self.subs:
            node.destroy_subscription(sub)
        self.subs = []
        node.destroy_timer(self.timer)

    def add(self, key: tuple[str, str], stamp: int, frame) -> None:
        if not self.accept():
            return
        self.last_frame = time.monotonic()
        self.sync.add(key, stamp, frame)

    def tick(self) -> None:
        """Release the sets still waiting once the sensors have been silent long enough."""
        idle = time.monotonic() - self.last_frame > self.idle_s
        self.idle_ticks = self.idle_ticks + 1 if idle else 0
        if self.idle_ticks == 2:
            self.sync.flush("unfinished")

    def values(self) -> dict:
        """Diagnostics of the inputs: frames taken, sets held, clock jumps, per topic."""
        return {"held": self.sync.waiting(), "clock_jumps": self.sync.guard.jumps,
                **self.arrivals.values()}
