"""Power monitor: power headroom -> layer budget (ComputeBudget, transient local)."""

from __future__ import annotations

import sys

from rclpy.node import Node

from admn_ros.msg import ComputeBudget
from admn_ros.nodes.common import (
    LATCHED_QOS,
    Diagnostics,
    declare,
    params,
    resolve,
    spin_main,
)
from admn_ros.nodes.power import NAN, BudgetMapper, PowerReading, detect_source

PARAMS = {
    "source": ("auto (first measured source: ina3221 | jtop | nvml | rapl; none found is an "
               "error) | ina3221 | jtop | nvml | rapl | simulated | manual",),
    "profile": ("config/power/*.yaml played by the simulated source",),
    "manual_budget": ("layers; > 0 overrides every source", 0, 1000),
    "power_limit_w": ("power limit for measured sources, W", 0.0, 1000.0),
    "sysfs_root": ("sysfs mount (hwmon, powercap)",),
    "levels_w": ("ascending headroom thresholds, W",),
    "levels_layers": ("layer budget allowed at each threshold (ascending)",),
    "hysteresis_w": ("headroom margin before a level changes, W", 0.0, 100.0),
    "min_dwell_s": ("minimum time between two budget changes, s", 0.0, 600.0),
    "period_s": ("sampling period, s", 0.01, 60.0),
    "republish_s": ("re-publish an unchanged budget this often, s", 0.1, 600.0),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0),
}


def budget_msg(layers: int, reading: PowerReading, reason: str) -> ComputeBudget:
    return ComputeBudget(layers=int(layers), power_w=float(reading.power_w),
                         power_limit_w=float(reading.power_limit_w),
                         temperature_c=float(reading.temperature_c), source=reading.source,
                         reason=reason)


class PowerMonitorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_power_monitor", **kwargs)
        declare(self, "admn_power_monitor", PARAMS)
        self.p = params(self, PARAMS)
        manual = self.p["manual_budget"] > 0 or self.p["source"] == "manual"
        self.source = None if manual else detect_source(
            self.p["source"], self.p["sysfs_root"], self.p["power_limit_w"],
            str(resolve(self.p["profile"])))
        self.mapper = BudgetMapper(list(self.p["levels_w"]), list(self.p["levels_layers"]),
                                   self.p["hysteresis_w"], self.p["min_dwell_s"])
        self.last: ComputeBudget | None = None
        self.last_pub_s = -1e18
        self.changes = 0
        self.pub = self.create_publisher(ComputeBudget, "/admn/budget", LATCHED_QOS)
        self.create_timer(self.p["period_s"], self.tick)
        self.diagnostics = Diagnostics(self, "budget", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])
        self.get_logger().info(f"budget source: {self.source.name if self.source else 'manual'}")

    def tick(self) -> None:
        t = self.get_clock().now().nanoseconds * 1e-9
        msg = self.next_budget(t)
        if msg is None:
            return
        changed = self.last is None or msg.layers != self.last.layers
        if changed or t - self.last_pub_s >= self.p["republish_s"]:
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
        if self.source is None:
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
                "power_limit_w": m.power_limit_w, "changes": self.changes, "reason": m.reason}


def main(args=None) -> int:
    return spin_main(PowerMonitorNode, args)


if __name__ == "__main__":
    sys.exit(main())
