"""Scheduled corruptions of raw sensor frames (config/inject/*.yaml), without ROS.

The corruption itself is the core's (`admn_ros.core.noise`): frames are scaled to [0, 1]
(rgb / 255, depth / depth_max_mm, radar / the frame's peak), corrupted as one view
`[1, 1, C, H, W]`, and scaled back to the message's own encoding.

Schedule file:
    corruptions:
      - {node: node1, modality: rgb, kind: gaussian, strength: 3.0, start_s: 6, end_s: 20}
kind: gaussian (strength = sigma on the [0, 1] scale) | occlusion (fraction of the image) |
low_light (strength = 1 - gain) | dropout (blank frame). Times are seconds from the first
frame's stamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from admn_ros.core.noise import add_gaussian_noise, frame_dropout, low_light, occlude

KINDS = ("gaussian", "occlusion", "low_light", "dropout")
MODALITIES = ("rgb", "depth", "radar")


@dataclass
class Corruption:
    node: str
    modality: str
    kind: str
    strength: float
    start_s: float
    end_s: float

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    @property
    def label(self) -> str:
        return f"{self.node}/{self.modality} {self.kind} {self.strength:g}"


def load_schedule(path: str | Path) -> list[Corruption]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    out = []
    for i, c in enumerate(data.get("corruptions") or []):
        try:
            item = Corruption(str(c["node"]), str(c["modality"]), str(c["kind"]),
                              float(c.get("strength", 1.0)), float(c["start_s"]),
                              float(c["end_s"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: corruptions[{i}]: expected node, modality, kind, "
                             f"strength, start_s, end_s; got {c!r} ({exc})") from None
        if item.kind not in KINDS or item.modality not in MODALITIES \
                or item.end_s <= item.start_s:
            raise ValueError(f"{path}: corruptions[{i}]: expected kind in {KINDS}, modality in "
                             f"{MODALITIES}, end_s > start_s; got {c!r}")
        out.append(item)
    return out


def scale_of(modality: str, arr: np.ndarray, depth_max_mm: float) -> float:
    if modality == "rgb":
        return 255.0
    if modality == "depth":
        return depth_max_mm
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    return peak if peak > 0 else 1.0


def corrupt_frame(arr: np.ndarray, modality: str, c: Corruption, depth_max_mm: float,
                  generator: torch.Generator, noise_grid: int = 0) -> np.ndarray:
    """One raw frame ([H, W] or [H, W, C], the encoding's dtype) -> the corrupted frame.
    `noise_grid`: Gaussian noise drawn on that grid (the model's input size; see
    `core.noise.add_gaussian_noise`), 0 = per raw pixel."""
    scale = scale_of(modality, arr, depth_max_mm)
    x = torch.from_numpy(np.atleast_3d(arr).astype(np.float32) / scale)
    x = x.permute(2, 0, 1)[None, None].clamp(0, 1)  # [1, 1, C, H, W]
    if c.kind == "gaussian":
        y = add_gaussian_noise(x, c.strength, generator, noise_grid)
    elif c.kind == "occlusion":
        y = occlude(x, min(c.strength, 1.0), generator=generator)
    elif c.kind == "low_light":
        y = low_light(x, max(0.0, 1.0 - c.strength))
    else:
        y = frame_dropout(x, torch.ones(1, 1, dtype=torch.bool))
    out = (y[0, 0].permute(1, 2, 0).numpy() * scale).reshape(arr.shape)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(arr.dtype)
