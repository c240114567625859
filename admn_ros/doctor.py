"""`admn doctor`: what this machine can run. Exit 1 when something essential is missing."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    essential: bool = True


def _version_of(module: str) -> Callable[[], str]:
    def probe() -> str:
        mod = importlib.import_module(module)
        return str(getattr(mod, "__version__", "installed"))

    return probe


def _rclpy() -> str:
    from importlib.metadata import version

    import rclpy  # noqa: F401  (import proves the C extension loads)

    return version("ros-rclpy")


def _rmw() -> str:
    from rclpy.utilities import get_rmw_implementation_identifier

    wanted = os.environ.get("RMW_IMPLEMENTATION", "")
    got = get_rmw_implementation_identifier()
    if wanted and wanted != got:
        raise RuntimeError(f"RMW_IMPLEMENTATION={wanted} but rclpy loads {got}")
    return got


def _messages() -> str:
    # Importing the types is not enough: the C typesupport loads on first use.
    from admn_ros.msg import ComputeBudget, LayerAllocation

    for msg_type in (LayerAllocation, ComputeBudget):
        msg_type.__class__.__import_type_support__()
    return "admn_ros/LayerAllocation, admn_ros/ComputeBudget"


def _cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        return "not available (CPU only)"
    return f"{torch.version.cuda}, {torch.cuda.get_device_name(0)}"


def _discovery() -> str:
    value = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "<unset: SUBNET>")
    domain = os.environ.get("ROS_DOMAIN_ID", "0")
    return f"ROS_AUTOMATIC_DISCOVERY_RANGE={value}, ROS_DOMAIN_ID={domain}"


PROBES: list[tuple[str, Callable[[], str], bool]] = [
    ("torch", _version_of("torch"), True),
    ("numpy", _version_of("numpy"), True),
    ("h5py", _version_of("h5py"), True),
    ("opencv", _version_of("cv2"), True),
    ("rosbags", lambda: importlib.metadata.version("rosbags"), True),
    ("rclpy", _rclpy, True),
    ("rmw", _rmw, True),
    ("messages", _messages, True),
    ("discovery", _discovery, False),
    ("cuda", _cuda, False),
    ("tensorrt", _version_of("torch_tensorrt"), False),
]


def run_checks() -> list[Check]:
    """Run every probe; a probe that raises is reported with its error, never re-raised."""
    checks = [Check("python", True, platform.python_version())]
    for name, probe, essential in PROBES:
        try:
            checks.append(Check(name, True, probe(), essential))
        except Exception as exc:  # report, don't crash: that is the doctor's job
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}", essential))
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Versions and capabilities; exit 1 if something essential is missing."


def run(args: argparse.Namespace) -> int:
    checks = run_checks()
    for c in checks:
        mark = "ok " if c.ok else ("MISSING" if c.essential else "-- ")
        print(f"{mark:8s}{c.name:10s} {c.detail}")
    missing = [c.name for c in checks if c.essential and not c.ok]
    if missing:
        print(f"\nmissing: {', '.join(missing)}. Run `make setup`, then `. scripts/env.sh`.")
        return 1
    return 0
