"""What `admn run` records: the graph's outputs to an MCAP (rosbags) plus the figures for
summary.json. Subscriptions take the serialised bytes (raw=True), so recording costs no
re-serialisation; only the few fields the summary needs are read back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from visualization_msgs.msg import MarkerArray

from admn_ros.msg import ComputeBudget, LayerAllocation
from admn_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, share_dir, stamp_ns
from admn_ros.nodes.summary import RunRecord

RECORDED = {  # topic -> (rclpy type, ROS type name, QoS)
    "/admn/pose": (PoseWithCovarianceStamped, "geometry_msgs/msg/PoseWithCovarianceStamped",
                   RELIABLE_QOS),
    "/admn/allocation": (LayerAllocation, "admn_ros/msg/LayerAllocation", RELIABLE_QOS),
    "/admn/budget": (ComputeBudget, "admn_ros/msg/ComputeBudget", LATCHED_QOS),
    "/admn/markers": (MarkerArray, "visualization_msgs/msg/MarkerArray", RELIABLE_QOS),
    "/mocap/car/pose": (PoseStamped, "geometry_msgs/msg/PoseStamped", SENSOR_QOS),
    "/diagnostics": (DiagnosticArray, "diagnostic_msgs/msg/DiagnosticArray", RELIABLE_QOS),
}


def typestore_with_admn():
    """rosbags typestore (Kilted) plus the project's messages from msg/*.msg."""
    ts = get_typestore(Stores.ROS2_KILTED)
    for name in ("LayerAllocation", "ComputeBudget"):
        for d in (share_dir() / "msg", share_dir() / "share" / "admn_ros" / "msg"):
            if (d / f"{name}.msg").exists():
                ts.register(get_types_from_msg((d / f"{name}.msg").read_text(),
                                               f"admn_ros/msg/{name}"))
                break
    return ts


class Recorder(Node):
    def __init__(self, path: Path, **kwargs) -> None:
        super().__init__("admn_run_recorder", **kwargs)
        path = Path(path)
        if path.exists():
            path.unlink()
        self.tmp = path.with_name(path.stem + "_bag")
        if self.tmp.exists():
            import shutil
            shutil.rmtree(self.tmp)
        self.path = path
        self.writer = Writer(self.tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        ts = typestore_with_admn()
        self.conns = {t: self.writer.add_connection(t, name, typestore=ts)
                      for t, (_, name, _) in RECORDED.items()}
        self.rec = RunRecord()
        self.n = 0
        for topic, (cls, _, qos) in RECORDED.items():
            self.create_subscription(cls, topic, lambda raw, t=topic: self.on_msg(t, raw), qos,
                                     raw=True)

    def on_msg(self, topic: str, raw: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        self.n += 1
        if topic == "/admn/allocation":
            m = deserialize_message(raw, LayerAllocation)
            self.rec.modalities = list(m.modalities)
            self.rec.layers_per_modality = m.layers_per_modality
            self.rec.allocations.append({"stamp_ns": stamp_ns(m.header.stamp),
                                         "budget": m.budget, "active": list(m.active),
                                         "controller_ms": m.controller_ms,
                                         "noise": list(m.predicted_noise)})
        elif topic == "/admn/budget":
            m = deserialize_message(raw, ComputeBudget)
            self.rec.budgets.append((stamp_ns(m.header.stamp), int(m.layers)))
        elif topic == "/mocap/car/pose":
            m = deserialize_message(raw, PoseStamped)
            p = m.pose.position
            self.rec.truth.append((stamp_ns(m.header.stamp), p.x, p.z))
        self.writer.write(self.conns[topic], now, bytes(raw))

    def count(self) -> int:
        return self.n

    def finish(self, nodes: dict, specs) -> RunRecord:
        """Close the bag and collect the nodes' own counters into the record."""
        self.writer.close()
        (inner,) = self.tmp.glob("*.mcap")
        inner.replace(self.path)
        for f in self.tmp.iterdir():
            f.unlink()
        self.tmp.rmdir()
        rec = self.rec
        from admn_ros.nodes.fusion_node import FUSION_REASONS
        player, ctl, fus = nodes.get("bag_player"), nodes["controller"], nodes["fusion"]
        if player is not None:
            rec.frames_in = sum(v for t, v in player.sent.items() if "/mocap" not in t
                                and "/tf" not in t)
        rec.samples_synced = ctl.stats["samples"]
        rec.poses = list(fus.records)
        if fus.waiting:  # allocations still waiting for frames at the end
            fus.drops.counts["no_sample"] += len(fus.waiting)
        rec.dropped = Counter(ctl.drops.counts)
        rec.dropped.update({k: v for k, v in fus.drops.counts.items() if k in FUSION_REASONS})
        rec.extra["sensors"] = list(fus.p["sensor_positions"])
        rec.extra["frames_received"] = {"controller": ctl.inputs.received,
                                        "fusion": fus.received}
        inj = nodes.get("corruption_injector")
        if inj is not None:
            rec.windows = inj.windows()
        self.destroy_node()
        return rec
