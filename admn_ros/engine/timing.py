"""Wall-clock timing with device synchronisation, and percentiles."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` (no-op on CPU, where ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now_ms(device: torch.device | None = None) -> float:
    """Milliseconds on a monotonic clock after the device has finished its queued work."""
    if device is not None:
        synchronize(device)
    return time.perf_counter() * 1e3


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated q-th percentile (q in [0, 100]) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile: expected at least one value, got none")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: expected 0 <= q <= 100, got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
