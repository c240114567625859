"""Shared pieces of the thin nodes: config paths, parameter declaration, QoS, stamps, drops."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
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
from admn_ros.paths import resolve as resolve  # re-exported: nodes resolve parameter paths
from admn_ros.paths import share_dir

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


@cache
def node_defaults(node_name: str) -> dict[str, Any]:
    """`ros__parameters` of `node_name` in config/nodes.yaml."""
    data = yaml.safe_load((share_dir() / "config" / "nodes.yaml").read_text()) or {}
    if node_name not in data:
        raise ValueError(f"config/nodes.yaml: expected a section {node_name!r}, got {list(data)}")
    return dict(data[node_name].get("ros__parameters", {}))


LIVE = "live"  # last element of a parameter spec: the parameter may change while running


class ParamSpec(NamedTuple):
    """One declared parameter, as `declare` reads a spec tuple."""

    description: str
    lo: float | None = None
    hi: float | None = None
    live: bool = False


def param_spec(spec: tuple) -> ParamSpec:
    """(description[, lo, hi][, LIVE]) -> ParamSpec."""
    live = spec[-1] == LIVE
    body = spec[:-1] if live else spec
    if len(body) not in (1, 3):
        raise ValueError(f"parameter spec: expected (description[, lo, hi][, LIVE]), got {spec!r}")
    return ParamSpec(body[0], *(body[1:] or (None, None)), live=live)


def descriptor(spec: ParamSpec, value: Any) -> ParameterDescriptor:
    """Description, range, and read_only unless the parameter is live."""
    desc = ParameterDescriptor(description=spec.description, read_only=not spec.live)
    if spec.lo is not None:
        if isinstance(value, float):
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(spec.lo), to_value=float(spec.hi), step=0.0)]
        else:
            desc.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi),
                                               step=1)]
    return desc


def declare(node, section: str, specs: dict[str, tuple],
            on_change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Declare parameters with descriptors; defaults from config/nodes.yaml `section`.
    Returns their values: the node's view of its parameters, kept current.

    specs: name -> (description[, lo, hi][, LIVE]). Without LIVE a parameter is read_only
    (`ros2 param set` is refused). A change of live ones is checked by rclpy against the
    range, then passed to `on_change({name: value})`, which applies it or raises ValueError
    saying why it is refused (the setter gets that reason); accepted values land in the dict.
    """
    defaults = node_defaults(section)
    if on_change is None and any(param_spec(s).live for s in specs.values()):
        raise ValueError(f"{section}: live parameters need an on_change to apply them")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in defaults:
            raise ValueError(f"config/nodes.yaml [{section}]: missing default for {name!r}")
        node.declare_parameter(name, defaults[name], descriptor(param_spec(spec), defaults[name]))
        values[name] = node.get_parameter(name).value

    def on_set(changed) -> SetParametersResult:
        # rclpy has refused read-only and out-of-range values before this is called
        changes = {p.name: p.value for p in changed if p.name in specs}
        if changes and on_change is not None:
            try:
                on_change(changes)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            values.update(changes)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values


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
    Values are `key=value` strings, with the process's CPU seconds (`cpu_s`); level and message
    agree (`arrival.status_of`): WARN names the drop reasons that grew since the previous
    report, ERROR says what is wrong; `status()` (level, message, values), if given, may
    raise the level (a stuck worker)."""

    def __init__(self, node, title: str, values: Callable[[], dict[str, Any]],
                 period_s: float,
                 status: Callable[[], tuple[int, str, dict[str, Any]]] | None = None) -> None:
        self.node, self.title, self.values, self.status = node, title, values, status
        self.previous: dict[str, Any] | None = None
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self.timer = steady_timer(node, period_s, self.publish)

    def set_period(self, period_s: float) -> None:
        """A new publishing period (the live `diagnostics_period_s`)."""
        self.timer.cancel()
        self.node.destroy_timer(self.timer)
        self.timer = steady_timer(self.node, period_s, self.publish)

    def publish(self) -> None:
        values = {**self.values(), "cpu_s": round(time.process_time(), 3)}
        level, message = status_of(values, self.previous)
        self.previous = values
        if self.status is not None:
            worse, text, extra = self.status()
            values.update(extra)
            if worse > level:
                level, message = worse, text
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

    from admn_ros.engine.base import EngineStartupError
    from admn_ros.nodes.models import WeightsError

    # Our own handlers: rclpy's would shut the context down before the final diagnostics.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = SingleThreadedExecutor()
    try:
        built = node_cls.__new__(node_cls)
        try:
            built.__init__()
        except (WeightsError, EngineStartupError, *STARTUP_ERRORS) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            Node.destroy_node(built)  # its rclpy part only: the rest was never built
            return 2
        except BaseException:
            Node.destroy_node(built)  # so that the shutdown does not hide the cause
            raise
        node = built
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok() and not getattr(node, "finished", False):
            executor.spin_once(timeout_sec=SPIN_POLL_S)
        if rclpy.ok() and hasattr(node, "diagnostics"):
            node.diagnostics.final()
    except ExternalShutdownException:
        pass
    finally:
        # the executor goes first, explicitly: left to the garbage collector after
        # rclpy.shutdown its __del__ fails on the destroyed context (InvalidHandle)
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
