"""Power monitor: the budget in force (ComputeBudget on /admn/budget, transient local).

Power headroom (or a manual number) gives the power budget (/admn/power_budget); the fusion
node's deadline loop gives the latency budget (/admn/latency_budget). The budget in force is
the smaller of the two, rounded down to a budget the loaded controllers cover
(`deadline.budget_in_force`); its reason names the limit that binds (`power:`, `manual:` or
`deadline:`).
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from admn_ros.msg import ComputeBudget
from admn_ros.nodes.common import (
    LATCHED_QOS,
    LIVE,
    Diagnostics,
    declare,
    resolve,
    spin_main,
)
from admn_ros.nodes.deadline import budget_in_force
from admn_ros.nodes.models import controller_budgets
from admn_ros.nodes.power import NAN, BudgetMapper, PowerReading, detect_source

PARAMS = {
    "source": ("auto (first measured source: ina3221 | jtop | nvml | rapl; none found is an "
               "error) | ina3221 | jtop | nvml | rapl | simulated | manual",),
    "profile": ("config/power/*.yaml played by the simulated source",),
    "manual_budget": ("layers; > 0 overrides every source", 0, 1000, LIVE),
    "power_limit_w": ("power limit for measured sources, W", 0.0, 1000.0),
    "sysfs_root": ("sysfs mount (hwmon, powercap)",),
    "levels_w": ("ascending headroom thresholds, W",),
    "levels_layers": ("layer budget allowed at each threshold (ascending)",),
    "hysteresis_w": ("headroom margin before a level changes, W", 0.0, 100.0),
    "min_dwell_s": ("minimum time between two budget changes, s", 0.0, 600.0),
    "period_s": ("sampling period, s", 0.01, 60.0),
    "republish_s": ("re-publish an unchanged budget this often, s", 0.1, 600.0),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
    "controller_weights": ("the controller node's checkpoints: the budget in force is rounded "
                           "down to one they cover; empty = any budget",),
}


def budget_msg(layers: int, reading: PowerReading, reason: str) -> ComputeBudget:
    return ComputeBudget(layers=int(layers), power_w=float(reading.power_w),
                         power_limit_w=float(reading.power_limit_w),
                         temperature_c=float(reading.temperature_c), source=reading.source,
                         reason=reason)


class PowerMonitorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_power_monitor", **kwargs)
        self.p = declare(self, "admn_power_monitor", PARAMS, self.on_params)
        manual = self.p["manual_budget"] > 0 or self.p["source"] == "manual"
        self.source = None if manual else detect_source(
            self.p["source"], self.p["sysfs_root"], self.p["power_limit_w"],
            str(resolve(self.p["profile"])))
        self.mapper = BudgetMapper(list(self.p["levels_w"]), list(self.p["levels_layers"]),
                                   self.p["hysteresis_w"], self.p["min_dwell_s"])
        self.covered, self.possible = controller_budgets(
            [s for s in self.p["controller_weights"] if s])
        self.latency: ComputeBudget | None = None
        self.power: ComputeBudget | None = None
        self.last: ComputeBudget | None = None
        self.last_pub_s = -1e18
        self.changes = 0
        self.pub = self.create_publisher(ComputeBudget, "admn/budget", LATCHED_QOS)
        self.power_pub = self.create_publisher(ComputeBudget, "admn/power_budget", LATCHED_QOS)
        self.create_subscription(ComputeBudget, "admn/latency_budget", self.on_latency,
                                 LATCHED_QOS)
        self.create_timer(self.p["period_s"], self.tick)
        self.diagnostics = Diagnostics(self, "budget", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])
        self.get_logger().info(f"budget source: {self.source.name if self.source else 'manual'}")

    def on_params(self, changes: dict) -> None:
        """Live parameters: a manual budget overrides the source from the next tick (0 hands
        back to the source, when the node has one)."""
        if changes.get("manual_budget") == 0 and self.source is None:
            raise ValueError("manual_budget 0 would leave no budget: this node started with "
                             "source manual (restart it with a measured source)")
        if "diagnostics_period_s" in changes:
            self.diagnostics.set_period(changes["diagnostics_period_s"])

    def on_latency(self, msg: ComputeBudget) -> None:
        self.latency = msg
        self.publish(self.get_clock().now().nanoseconds * 1e-9)

    def tick(self) -> None:
        t = self.get_clock().now().nanoseconds * 1e-9
        msg = self.next_budget(t)
        if msg is None:
            return
        if self.power is None or msg.layers != self.power.layers:
            msg.header.stamp = self.get_clock().now().to_msg()
            self.power_pub.publish(msg)
        self.power = msg
        self.publish(t)

    def publish(self, t: float) -> None:
        """The budget in force from the last power and latency budgets: on a change, and
        every `republish_s` unchanged."""
        if self.power is None:
            return
        power = self.power
        latency = self.latency.layers if self.latency is not None else None
        layers, why = budget_in_force(power.layers, latency, self.covered, self.possible)
        label = "manual" if self.source is None else "power"
        reason = f"deadline: {self.latency.reason}" if why == "deadline" else \
            f"{label}: {power.reason}"
        changed = self.last is None or layers != self.last.layers
        if changed or t - self.last_pub_s >= self.p["republish_s"]:
            msg = ComputeBudget(layers=int(layers), power_w=power.power_w,
                                power_limit_w=power.power_limit_w,
                                temperature_c=power.temperature_c, source=power.source,
                                reason=reason)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.pub.publish(msg)
            self.last_pub_s = t
            if changed:
                self.changes += self.last is not None
                self.get_logger().info(f"budget {msg.layers} layers ({msg.reason})")
            self.last = msg
            if changed:
                self.diagnostics.publish()

    def next_budget(self, t: float) -> ComputeBudget | None:
        if self.source is None or self.p["manual_budget"] > 0:
            return budget_msg(self.p["manual_budget"], PowerReading(NAN, NAN, NAN, "manual"),
                              "manual override")
        reading = self.source.read(t)
        if reading is None:
            return None
        layers = self.mapper.update(reading.headroom_w, t)
        reason = f"headroom {reading.headroom_w:.1f} W" + (f", {reading.reason}"
                                                            if reading.reason else "")
        return budget_msg(layers, reading, reason)

    def diagnostic_values(self) -> dict:
        if self.last is None:
            return {"layers": "", "changes": self.changes}
        m = self.last
        return {"layers": m.layers, "source": m.source, "power_w": m.power_w,
                "power_layers": self.power.layers if self.power else "",
                "latency_layers": self.latency.layers if self.latency else "",
                "power_limit_w": m.power_limit_w, "changes": self.changes, "reason": m.reason}


def main(args=None) -> int:
    return spin_main(PowerMonitorNode, args)


if __name__ == "__main__":
    sys.exit(main())
