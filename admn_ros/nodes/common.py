"""Shared pieces of the thin nodes: config paths, parameter declaration, QoS, stamps, drops."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from admn_ros.nodes.arrival import status_of

NS = 1_000_000_000
SPIN_POLL_S = 0.1  # longest wait in the spin loop: how soon a node notices SIGINT

# --- QoS, decided once for the whole graph -------------------------------------------------
SENSOR_QOS = qos_profile_sensor_data  # best effort, keep last 5: a late frame is a lost frame
# Replaying a bag, every recorded frame should reach the graph (the summary compares against
# all of them): reliable, with a queue deep enough to ride out a node starved of CPU for
# seconds (measured on 2 shared cores: 30 frames were not enough). Bounded all the same.
REPLAY_DEPTH = 150  # frames per topic: 20 s of a 15 Hz camera replayed at rate 0.5
REPLAY_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=REPLAY_DEPTH,
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
# diagnostics: every node's totals must reach the recorder, the last one above all
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
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
        self._lock = threading.Lock()  # nodes with a worker thread count from two threads

    def __call__(self, reason: str, text: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) >= self.throttle_s:
            self._last[reason] = now
            self.logger.warning(f"dropped a sample ({reason}, {self.counts[reason]} so far)"
                                + (f": {text}" if text else ""))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def diagnostic(name: str, hardware_id: str, values: dict[str, Any], level: int = 0,
               message: str = "ok"):
    """One diagnostic_msgs/DiagnosticStatus."""
    st = DiagnosticStatus(level=bytes([level]), name=name, message=message,
                          hardware_id=hardware_id)
    st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    return st


def steady_timer(node, period_s: float, callback: Callable[[], None]):
    """A timer on the steady clock: it keeps firing when the sim clock stops (bag ended)."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


class Diagnostics:
    """A node's cumulative counters on /diagnostics: every `period_s` (steady clock), on
    demand, and once more at shutdown (`final`), so a listener always ends with the totals.
    Values are `key=value` strings; level and message agree (`arrival.status_of`): WARN
    names the drop reasons that grew since the previous report, ERROR says what is wrong."""

    def __init__(self, node, title: str, values: Callable[[], dict[str, Any]],
                 period_s: float) -> None:
        self.node, self.title, self.values = node, title, values
        self.previous: dict[str, Any] | None = None
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        steady_timer(node, period_s, self.publish)

    def publish(self) -> None:
        values = self.values()
        level, message = status_of(values, self.previous)
        self.previous = values
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = [diagnostic(f"{self.node.get_name()}: {self.title}",
                                 self.node.get_fully_qualified_name(), values,
                                 level=level, message=message)]
        self.pub.publish(arr)

    def final(self, timeout_s: float = 2.0) -> None:
        """Publish the totals and wait (bounded) until every reader has them."""
        self.publish()
        self.pub.wait_for_all_acked(Duration(seconds=timeout_s))


STARTUP_ERRORS = (FileNotFoundError, ValueError)  # + models.WeightsError: a clear message


def spin_main(node_cls, args=None) -> int:
    """main() of every node: init, spin until SIGINT / SIGTERM (or until the node says it is
    `finished`), publish the final diagnostics, shut down cleanly. A node that cannot start
    (missing weights or bag, bad parameter) prints `error: <why>` and exits with 2."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    from admn_ros.nodes.models import WeightsError

    # Our own handlers: rclpy's would shut the context down before the final diagnostics.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        built = node_cls.__new__(node_cls)
        try:
            built.__init__()
        except (WeightsError, *STARTUP_ERRORS) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            Node.destroy_node(built)  # its rclpy part only: the rest was never built
            return 2
        except BaseException:
            Node.destroy_node(built)  # so that the shutdown does not hide the cause
            raise
        node = built
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok() and not getattr(node, "finished", False):
            executor.spin_once(timeout_sec=SPIN_POLL_S)
        if rclpy.ok() and hasattr(node, "diagnostics"):
            node.diagnostics.final()
    except ExternalShutdownException:
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
