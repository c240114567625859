"""Publishes one LayerAllocation and one ComputeBudget repeatedly (helper process for tests)."""

from __future__ import annotations

import sys
import time

import rclpy
from admn_ros.msg import ComputeBudget, LayerAllocation
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy


def sample_messages() -> tuple[LayerAllocation, ComputeBudget]:
    """The exact field values the receiving test compares against."""
    alloc = LayerAllocation()
    alloc.header.stamp.sec, alloc.header.stamp.nanosec = 1700000000, 123456789
    alloc.header.frame_id = "world"
    alloc.budget = 6
    alloc.modalities = ["rgb", "depth", "radar"]
    alloc.layers_per_modality = 4
    alloc.active = [True, True, False, False, True, True, True, False, True, False, False, False]
    alloc.predicted_noise = [0.5, 0.0, 0.25]
    alloc.controller = "learned"
    alloc.controller_ms = 1.5
    budget = ComputeBudget()
    budget.header.stamp.sec = 1700000001
    budget.layers = 12
    budget.power_w, budget.power_limit_w, budget.temperature_c = 7.5, 10.0, 55.25
    budget.source, budget.reason = "simulated", "test"
    return alloc, budget


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("admn_test_publisher")
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    pub_alloc = node.create_publisher(LayerAllocation, "/admn/allocation", reliable)
    pub_budget = node.create_publisher(ComputeBudget, "/admn/budget", latched)
    alloc, budget = sample_messages()
    deadline = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 30)
    while time.monotonic() < deadline:
        pub_alloc.publish(alloc)
        pub_budget.publish(budget)
        time.sleep(0.1)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
