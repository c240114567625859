"""Training-state checkpoints for `--resume`, written atomically (tmp + os.replace).

A training checkpoint holds everything needed to continue after a kill: the trainable module and
optimizer/scheduler state, the next epoch, the global step, the recipe, the metrics so far and
the RNG state. Stage *outputs* (what the next stage, the exporter and eval read) are core
checkpoints (`admn_ros.core.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace (no torn files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # an unreadable file is a user-facing error here
        raise ValueError(f"checkpoint {path}: could not be read ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != "admn_ros/train-state/1":
        raise ValueError(f"checkpoint {path}: expected a training-state checkpoint")
    return obj


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
