"""Test-wide set-up: ROS traffic stays on loopback and in a domain of this run's own."""

from __future__ import annotations

import os

# Before anything imports rclpy: discovery on loopback only, and a domain id that other
# test runs on this machine are unlikely to share (each run picks its own).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["ROS_DOMAIN_ID"] = os.environ.get("ADMN_TEST_DOMAIN_ID", str(20 + os.getpid() % 200))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MPLBACKEND", "Agg")
