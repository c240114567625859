"""What `admn run` records: the graph's outputs to an MCAP (rosbags) plus the figures for
summary.json. Subscriptions take the serialised bytes (raw=True), so recording costs no
re-serialisation; only the few fields the summary needs are read back.

The nodes' totals (frames played and received, samples, drops, backbone time, injection
windows) are the last /diagnostics each node published (every node publishes its totals
once more when it stops). Per-pose latency is measured here: the recorder's sim-clock time
when the pose arrives minus the pose's stamp (the newest camera stamp of its sample), i.e.
sensor stamp -> pose delivered to a subscriber, on the replay clock. It includes the
transport to this process (sub-millisecond on localhost) and reads the /clock the player
publishes (at `clock_hz`), so it is an upper bound of the publish latency by at most one
clock period.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from visualization_msgs.msg import MarkerArray

from admn_ros.msg import ComputeBudget, LayerAllocation
from admn_ros.nodes.common import (
    DIAGNOSTICS_QOS,
    LATCHED_QOS,
    RELIABLE_QOS,
    SENSOR_QOS,
    share_dir,
    stamp_ns,
)
from admn_ros.nodes.frames import map_to_ground
from admn_ros.nodes.graph import GLOBAL_TOPICS
from admn_ros.nodes.summary import RunRecord, apply_diagnostics

CM_PER_M = 100.0  # poses are published in metres, the summary works in centimetres
RECORDED = {  # topic (relative: the graph's namespace) -> (rclpy type, ROS type name, QoS)
    "admn/pose": (PoseWithCovarianceStamped, "geometry_msgs/msg/PoseWithCovarianceStamped",
                  RELIABLE_QOS),
    "admn/allocation": (LayerAllocation, "admn_ros/msg/LayerAllocation", RELIABLE_QOS),
    "admn/budget": (ComputeBudget, "admn_ros/msg/ComputeBudget", LATCHED_QOS),
    "admn/power_budget": (ComputeBudget, "admn_ros/msg/ComputeBudget", LATCHED_QOS),
    "admn/latency_budget": (ComputeBudget, "admn_ros/msg/ComputeBudget", LATCHED_QOS),
    "admn/markers": (MarkerArray, "visualization_msgs/msg/MarkerArray", RELIABLE_QOS),
    "mocap/car/pose": (PoseStamped, "geometry_msgs/msg/PoseStamped", SENSOR_QOS),
    "/diagnostics": (DiagnosticArray, "diagnostic_msgs/msg/DiagnosticArray", DIAGNOSTICS_QOS),
}

BUDGET_TOPICS = {"admn/budget": "in_force", "admn/power_budget": "power",
                 "admn/latency_budget": "deadline"}


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
    """Records the outputs of the graph in its own namespace (`namespace=` as for any node;
    /clock is followed there too) and keeps the last diagnostics of that graph's nodes."""

    def __init__(self, path: Path, namespace: str = "", **kwargs) -> None:
        moved = [a for t in GLOBAL_TOPICS for a in ("-r", f"{t}:={t.lstrip('/')}")]
        super().__init__("admn_run_recorder", namespace=namespace,
                         cli_args=["--ros-args", *moved] if namespace else None, **kwargs)
        ns = self.get_namespace().rstrip("/")
        self.graph_prefix = ns + "/"  # hardware_id of this graph's nodes: <ns>/<name>
        path = Path(path)
        if path.exists():
            path.unlink()
        self.tmp = path.with_name(path.stem + "_bag")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.path = path
        self.writer = Writer(self.tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        ts = typestore_with_admn()
        self.conns = {t: self.writer.add_connection(f"{ns}/{t}" if t[0] != "/" else t, name,
                                                    typestore=ts)
                      for t, (_, name, _) in RECORDED.items()}
        self.rec = RunRecord()
        self.n = 0  # graph outputs recorded (diagnostics not counted)
        self.last: dict[str, dict[str, str]] = {}  # node name -> its last diagnostics values
        self.lock = threading.Lock()
        for topic, (cls, _, qos) in RECORDED.items():
            self.create_subscription(cls, topic, lambda raw, t=topic: self.on_msg(t, raw), qos,
                                     raw=True)

    def on_msg(self, topic: str, raw: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        if topic == "/diagnostics":
            self.on_diagnostics(deserialize_message(raw, DiagnosticArray))
        else:
            self.n += 1
        if topic == "admn/pose":
            m = deserialize_message(raw, PoseWithCovarianceStamped)
            stamp, p = stamp_ns(m.header.stamp), m.pose.pose.position
            x, z = map_to_ground((p.x, p.y)) * CM_PER_M  # map -> the world ground plane
            self.rec.poses.append({"stamp_ns": stamp, "latency_ms": (now - stamp) / 1e6,
                                   "x_cm": float(x), "z_cm": float(z)})
        elif topic == "admn/allocation":
            m = deserialize_message(raw, LayerAllocation)
            self.rec.modalities = list(m.modalities)
            self.rec.layers_per_modality = m.layers_per_modality
            self.rec.allocations.append({"stamp_ns": stamp_ns(m.header.stamp),
                                         "budget": m.budget, "active": list(m.active),
                                         "controller_ms": m.controller_ms,
                                         "noise": list(m.predicted_noise)})
        elif topic in BUDGET_TOPICS:
            m = deserialize_message(raw, ComputeBudget)
            entry = (stamp_ns(m.header.stamp), int(m.layers), str(m.reason))
            self.rec.budget_log.setdefault(BUDGET_TOPICS[topic], []).append(entry)
            if topic == "admn/budget":
                self.rec.budgets.append(entry[:2])
        elif topic == "mocap/car/pose":
            m = deserialize_message(raw, PoseStamped)
            p = m.pose.position
            self.rec.truth.append((stamp_ns(m.header.stamp), p.x, p.z))
        self.writer.write(self.conns[topic], now, bytes(raw))

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for st in msg.status:
                name = st.hardware_id.removeprefix(self.graph_prefix)
                if name != st.hardware_id and "/" not in name:  # this graph's nodes only
                    self.last[name] = {kv.key: kv.value for kv in st.values}

    def count(self) -> int:
        return self.n

    def diagnostics(self, node_name: str) -> dict[str, str] | None:
        """The last diagnostics values of `node_name`; None before its first."""
        with self.lock:
            return self.last.get(node_name)

    def close(self) -> None:
        """Close the bag and move it to `path` (what was recorded so far, if called early)."""
        if self.tmp.exists():
            self.writer.close()
            (inner,) = self.tmp.glob("*.mcap")
            inner.replace(self.path)
            shutil.rmtree(self.tmp)

    def finish(self, names: dict[str, str]) -> RunRecord:
        """Close the bag; the record's totals from the nodes' last diagnostics
        (`names`: executable -> node name)."""
        self.close()
        with self.lock:
            last = {exe: self.last[name] for exe, name in names.items() if name in self.last}
        apply_diagnostics(self.rec, last)
        return self.rec
