"""admn_ros.core stays pure: importing every module pulls in no ROS package."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import admn_ros.core

ROS_PREFIXES = ("rclpy", "rosidl", "rclpy_", "rosbag2", "sensor_msgs", "std_msgs",
                "geometry_msgs", "builtin_interfaces", "launch", "ament_")


def test_core_imports_no_ros() -> None:
    names = [f"admn_ros.core.{m.name}" for m in pkgutil.iter_modules(admn_ros.core.__path__)]
    assert len(names) >= 10
    code = (
        "import importlib, json, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    ros = [m for m in loaded if m.split(".")[0].startswith(ROS_PREFIXES)]
    assert ros == []
