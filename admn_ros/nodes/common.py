"""Shared pieces of the thin nodes: config paths, parameter declaration, QoS, stamps, drops."""

from __future__ import annotations

import os
import time
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

NS = 1_000_000_000

# --- QoS, decided once for the whole graph -------------------------------------------------
SENSOR_QOS = qos_profile_sensor_data  # best effort, keep last 5: a late frame is a lost frame
# Replaying a bag, every recorded frame should reach the graph (the summary compares against
# all of them): reliable, with a queue deep enough for a busy executor. Bounded all the same.
REPLAY_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=30,
                               reliability=ReliabilityPolicy.RELIABLE)
SENSOR_RELIABILITY = {"best_effort": SENSOR_QOS, "reliable": REPLAY_SENSOR_QOS}


def sensor_qos(reliability: str) -> QoSProfile:
    """QoS of the sensor topics: `best_effort` live (a late frame is worthless), `reliable`
    when replaying a bag."""
    if reliability not in SENSOR_RELIABILITY:
        raise ValueError(f"sensor_reliability: expected one of {sorted(SENSOR_RELIABILITY)}, "
                         f"got {reliability!r}")
    return SENSOR_RELIABILITY[reliability]
# allocations and poses: every one matters to the pairing and the record -> reliable, bounded
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20,
                          reliability=ReliabilityPolicy.RELIABLE)
# the budget: a late joiner must get the one in force -> transient local, last one only
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def share_dir() -> Path:
    """The package's share directory: the source tree here, ament's share dir when installed."""
    env = os.environ.get("ADMN_SHARE_DIR")
    if env:
        return Path(env)
    src = Path(__file__).resolve().parents[2]
    if (src / "config" / "nodes.yaml").exists():
        return src
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory("admn_ros"))
    except Exception:
        return src


def resolve(path: str) -> Path:
    """A relative path in a parameter is relative to the package share directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else share_dir() / p


@cache
def node_defaults(node_name: str) -> dict[str, Any]:
    """`ros__parameters` of `node_name` in config/nodes.yaml."""
    data = yaml.safe_load((share_dir() / "config" / "nodes.yaml").read_text()) or {}
    if node_name not in data:
        raise ValueError(f"config/nodes.yaml: expected a section {node_name!r}, got {list(data)}")
    return dict(data[node_name].get("ros__parameters", {}))


def declare(node, section: str, specs: dict[str, tuple]) -> None:
    """Declare parameters with descriptors; defaults from config/nodes.yaml `section`.

    specs: name -> (description,) or (description, lo, hi) for a numeric range.
    """
    defaults = node_defaults(section)
    for name, spec in specs.items():
        if name not in defaults:
            raise ValueError(f"config/nodes.yaml [{section}]: missing default for {name!r}")
        value = defaults[name]
        desc = ParameterDescriptor(description=spec[0])
        if len(spec) == 3:
            if isinstance(value, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(spec[1]), to_value=float(spec[2]), step=0.0)]
            else:
                desc.integer_range = [IntegerRange(from_value=int(spec[1]), to_value=int(spec[2]),
                                                   step=1)]
        node.declare_parameter(name, value, desc)


def params(node, names) -> dict[str, Any]:
    return {n: node.get_parameter(n).value for n in names}


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def to_stamp(ns: int, msg_type):
    t = msg_type()
    t.sec, t.nanosec = divmod(int(ns), NS)
    return t


class Drops:
    """Counts dropped samples by reason; one warning per reason every `throttle_s` seconds."""

    def __init__(self, logger, throttle_s: float = 5.0) -> None:
        self.counts: Counter[str] = Counter()
        self.logger, self.throttle_s = logger, throttle_s
        self._last: dict[str, float] = {}

    def __call__(self, reason: str, text: str = "") -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.throttle_s:
            self._last[reason] = now
            self.logger.warning(f"dropped a sample ({reason}, {self.counts[reason]} so far)"
                                + (f": {text}" if text else ""))


def diagnostic(name: str, hardware_id: str, values: dict[str, Any], level: int = 0,
               message: str = "ok"):
    """One diagnostic_msgs/DiagnosticStatus."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    st = DiagnosticStatus(level=bytes([level]), name=name, message=message,
                          hardware_id=hardware_id)
    st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    return st


def spin_main(node_cls, args=None, spin=None) -> int:
    """main() of every node: init, spin (`spin(node)`, default rclpy.spin), clean shutdown on
    Ctrl-C or external shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        (spin or rclpy.spin)(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
