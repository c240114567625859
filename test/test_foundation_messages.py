"""The package's messages cross a process boundary over the real RMW, field for field."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy missing: run `make setup`")
from admn_ros.msg import ComputeBudget, LayerAllocation  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from ros_msg_publisher import sample_messages  # noqa: E402


def _fields(msg) -> dict:
    out = {}
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        out[name] = _fields(value) if hasattr(value, "get_fields_and_field_types") else value
    # arrays come back as array.array / lists: compare as lists
    return {k: (list(v) if not isinstance(v, (dict, str, int, float, bool)) else v)
            for k, v in out.items()}


def test_messages_cross_processes():
    publisher = subprocess.Popen([sys.executable, str(HERE / "ros_msg_publisher.py"), "30"],
                                 env=os.environ.copy())
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("admn_test_listener", context=context)
    got: dict[str, object] = {}
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    node.create_subscription(LayerAllocation, "/admn/allocation",
                             lambda m: got.setdefault("alloc", m), reliable)
    node.create_subscription(ComputeBudget, "/admn/budget",
                             lambda m: got.setdefault("budget", m), latched)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert set(got) == {"alloc", "budget"}, f"received only {sorted(got)}"
    alloc, budget = sample_messages()
    assert _fields(got["alloc"]) == _fields(alloc)
    assert _fields(got["budget"]) == _fields(budget)
