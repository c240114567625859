"""Where and how a job ran: recorded in every stage output's meta and in the model card."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def provenance(wall_s: float | None = None) -> dict[str, Any]:
    """Machine, thread count, torch / Python versions and (optionally) the wall time."""
    out: dict[str, Any] = {"machine": cpu_name(), "platform": platform.platform(),
                           "threads": torch.get_num_threads(), "torch": str(torch.__version__),
                           "python": platform.python_version()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    if wall_s is not None:
        out["wall_s"] = round(wall_s, 1)
    return out
