"""Bag player: publishes a rosbag2 (MCAP or sqlite3, read with rosbags) at real time x `rate`
with the recorded header stamps (the recorded CDR bytes are published as they are), and
/clock so that the graph runs on the recording's time."""

from __future__ import annotations

import importlib
import re
import sys
import time
from collections import Counter
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader, AnyReaderError
from rosgraph_msgs.msg import Clock

from admn_ros.nodes.common import (
    LIVE,
    REPLAY_DEPTH,
    Diagnostics,
    declare,
    spin_main,
    to_stamp,
)

PARAMS = {
    "bag": ("rosbag2 to play: an .mcap / .db3 file or a rosbag2 directory",),
    "rate": ("replay speed factor (1.0 = real time)", 0.01, 100.0),
    "publish_clock": ("publish /clock with the recording's time",),
    "clock_hz": ("rate of /clock and of the publishing loop, Hz", 1.0, 1000.0),
    "start_delay_s": ("longest wait for subscribers before the first message, s", 0.0, 60.0),
    "min_subscribers": ("start once every image topic has this many subscribers", 1, 100),
    "loop": ("start again at the end (the clock then jumps backwards)",),
    "image_topic_prefix": ("prefix for image topics (e.g. raw/ when the injector sits between "
                           "the bag and the graph); empty = recorded names",),
    "exclude_topics": ("regular expression of topics not to play; empty = play all",),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
}
PLAY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=REPLAY_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.BEST_EFFORT)
FLUSH_S = 10.0  # longest wait at the end for a slow reader to acknowledge the last frames
MIN_DELAY_S = 1.0  # after matching, let the subscribers' side of discovery settle
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
NOT_FRAMES = ("/mocap", "/tf")  # played, but not sensor frames of the graph


def ros_type(name: str):
    """'pkg/msg/Type' -> the rclpy message class, or None when it is not installed here."""
    pkg, _, typ = name.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), typ)
    except (ImportError, AttributeError):
        return None


class ReplayClock:
    """Maps wall time to recording time: t_rec = start_rec + (wall - start_wall) * rate."""

    def __init__(self, start_rec_ns: int, rate: float) -> None:
        self.start_rec_ns, self.rate = start_rec_ns, rate
        self.start_wall = time.monotonic()

    def now_ns(self) -> int:
        return self.start_rec_ns + int((time.monotonic() - self.start_wall) * self.rate * 1e9)


class BagPlayerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_bag_player", **kwargs)
        self.p = declare(self, "admn_bag_player", PARAMS,
                         lambda c: self.diagnostics.set_period(c["diagnostics_period_s"]))
        path = Path(self.p["bag"]).expanduser()
        if not self.p["bag"] or not path.exists():
            raise FileNotFoundError(f"bag not found: {path} (make one with `admn generate` and "
                                    f"`admn bag from-gdtm`)")
        self.reader = AnyReader([path])
        try:
            self.reader.open()
        except AnyReaderError as exc:  # corrupt or truncated: one clear line, no traceback
            raise ValueError(f"{path}: not a readable rosbag2 ({exc})") from None
        self.pubs, self.skipped = self.make_publishers()
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        self.sent: Counter[str] = Counter()
        self.done = False
        self.clock: ReplayClock | None = None
        self.messages = self.reader.messages(connections=self.connections())
        self.pending = next(self.messages, None)
        self.t0_wall = time.monotonic()
        self.create_timer(1.0 / self.p["clock_hz"], self.tick)
        self.diagnostics = Diagnostics(self, "replay", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])

    def make_publishers(self) -> tuple[dict, list[str]]:
        pubs, skipped = {}, []
        exclude = re.compile(self.p["exclude_topics"]) if self.p["exclude_topics"] else None
        for conn in self.reader.connections:
            cls = ros_type(conn.msgtype)
            if cls is None or (exclude and exclude.search(conn.topic)):
                skipped.append(f"{conn.topic} ({conn.msgtype})")
                continue
            topic = conn.topic.lstrip("/")  # relative: the graph's namespace applies
            if conn.msgtype in IMAGE_TYPES:
                topic = self.p["image_topic_prefix"] + topic
            qos = LATCHED if "static" in conn.topic else PLAY_QOS
            pubs[conn.id] = (conn, self.create_publisher(cls, topic, qos), conn.topic)
        if skipped:
            self.get_logger().info(f"not played (type not installed or excluded): {skipped}")
        return pubs, skipped

    def connections(self) -> list:
        return [conn for conn, _, _ in self.pubs.values()]

    def tick(self) -> None:
        """Publish /clock and every message whose recording time has come."""
        if self.done:
            return
        if self.clock is None:
            if not self.ready() or self.pending is None:
                self.publish_clock(self.reader.start_time)
                self.done = self.pending is None
                return
            self.clock = ReplayClock(self.pending[1], self.p["rate"])
        now = self.clock.now_ns()
        self.publish_clock(now)
        while self.pending is not None and self.pending[1] <= now:
            conn, _, raw = self.pending
            _, pub, topic = self.pubs[conn.id]
            pub.publish(bytes(raw))
            self.sent[topic] += 1
            self.pending = next(self.messages, None)
        if self.pending is None:
            if self.p["loop"]:
                self.messages = self.reader.messages(connections=self.connections())
                self.pending = next(self.messages, None)
                self.clock = ReplayClock(self.pending[1], self.p["rate"])
            else:
                self.done = True
                self.get_logger().info(f"bag finished: {sum(self.sent.values())} messages")
                self.diagnostics.publish()

    def ready(self) -> bool:
        """Start once every image topic has `min_subscribers` subscribers (or after
        start_delay_s anyway): a reader matched late misses the first frames."""
        waited = time.monotonic() - self.t0_wall
        images = [pub for conn, pub, _ in self.pubs.values() if conn.msgtype in IMAGE_TYPES]
        matched = all(pub.get_subscription_count() >= self.p["min_subscribers"]
                      for pub in images)
        return waited >= self.p["start_delay_s"] or (matched and waited >= MIN_DELAY_S)

    def publish_clock(self, ns: int) -> None:
        if self.p["publish_clock"]:
            self.clock_pub.publish(Clock(clock=to_stamp(ns, type(Clock().clock))))

    @property
    def finished(self) -> bool:
        """Played to the end (never with loop:=true): `spin_main` then stops the node."""
        return self.done

    def diagnostic_values(self) -> dict:
        frames = sum(v for t, v in self.sent.items() if not t.startswith(NOT_FRAMES))
        return {"frames": frames, "messages": sum(self.sent.values()), "done": int(self.done)}

    def destroy_node(self) -> None:
        """Let every reader take the last frames (bounded) before the publishers go."""
        for _, pub, _ in self.pubs.values():
            pub.wait_for_all_acked(Duration(seconds=FLUSH_S))
        self.reader.close()
        super().destroy_node()


def main(args=None) -> int:
    """Plays the bag once (or forever with loop:=true) and exits."""
    return spin_main(BagPlayerNode, args)


if __name__ == "__main__":
    sys.exit(main())
