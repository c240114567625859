"""One place that turns raw sensor arrays into normalised model tensors.

Used by the Dataset and by the ROS nodes, so training and deployment normalise identically:
rgb / 255; depth mm / depth_max_mm clipped to [0, 1], after holes (0) within
`depth_hole_fill_px` of a return take the farthest return around them (librealsense's hole
filling, "farthest from around"; 0 = off; holes left stay 0); radar magnitude in dB
mapped linearly from [radar_db_min, radar_db_max] to [0, 1]. Everything is resized to a
square `img_size` (area interpolation when shrinking, bilinear when enlarging).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch

from admn_ros.data.config import PreprocessConfig, load_data_config

RADAR_EPS = 1e-6  # floor before log10 so that zero magnitude maps to radar_db_min or below
# The preprocess settings that shape what a model sees (recorded with trained weights);
# `radar_input` names the topic's encoding, not the model's input, so it may differ.
MODEL_INPUT_SETTINGS = ("depth_max_mm", "depth_hole_fill_px", "radar_db_min", "radar_db_max")


def input_settings(cfg: PreprocessConfig | None = None) -> dict[str, float]:
    """The MODEL_INPUT_SETTINGS of `cfg` (default config/data.yaml's `preprocess`)."""
    cfg = cfg or load_data_config().preprocess
    return {k: getattr(cfg, k) for k in MODEL_INPUT_SETTINGS}


def check_input_settings(trained: Mapping[str, Any] | None, source: str,
                         cfg: PreprocessConfig | None = None) -> None:
    """ValueError naming each setting where weights trained under `trained` (their meta's
    `preprocess`) would now see other input; weights recorded before it was kept (None) pass."""
    if not trained:
        return
    now = input_settings(cfg)
    diff = [f"{k}: trained with {trained[k]!r}, config/data.yaml has {now[k]!r}"
            for k in MODEL_INPUT_SETTINGS if k in trained and trained[k] != now[k]]
    if diff:
        raise ValueError(f"{source}: the weights expect other input preprocessing ("
                         + "; ".join(diff) + "): set config/data.yaml's `preprocess` to what "
                         "they were trained with, or retrain")


class Preprocess:
    """Decode-free normalisation of rgb, depth and radar arrays to [C, s, s] float32."""

    def __init__(self, img_size: int, depth_max_mm: float = 6000.0, radar_db_min: float = 0.0,
                 radar_db_max: float = 60.0, radar_input: str = "magnitude",
                 depth_hole_fill_px: int = 0) -> None:
        if int(img_size) < 1:
            raise ValueError(f"img_size must be a positive integer, got {img_size!r}")
        if depth_max_mm <= 0:
            raise ValueError(f"depth_max_mm must be > 0, got {depth_max_mm}")
        if radar_db_max <= radar_db_min:
            raise ValueError(f"radar_db_max ({radar_db_max}) must exceed radar_db_min "
                             f"({radar_db_min})")
        if int(depth_hole_fill_px) < 0:
            raise ValueError(f"depth_hole_fill_px must be >= 0, got {depth_hole_fill_px!r}")
        if radar_input not in ("magnitude", "db"):
            raise ValueError(f"radar_input must be 'magnitude' or 'db', got {radar_input!r}")
        self.img_size = int(img_size)
        self.depth_max_mm = float(depth_max_mm)
        self.radar_db_min = float(radar_db_min)
        self.radar_db_max = float(radar_db_max)
        self.radar_input = radar_input
        self.depth_hole_fill_px = int(depth_hole_fill_px)

    @classmethod
    def from_config(cls, img_size: int, cfg: PreprocessConfig | None = None) -> Preprocess:
        """Build from config/data.yaml (`preprocess`) or a given PreprocessConfig."""
        cfg = cfg or load_data_config().preprocess
        return cls(img_size, cfg.depth_max_mm, cfg.radar_db_min, cfg.radar_db_max,
                   cfg.radar_input, cfg.depth_hole_fill_px)

    def __repr__(self) -> str:
        return (f"Preprocess(img_size={self.img_size}, depth_max_mm={self.depth_max_mm}, "
                f"radar_db_min={self.radar_db_min}, radar_db_max={self.radar_db_max}, "
                f"radar_input={self.radar_input!r}"
                + (f", depth_hole_fill_px={self.depth_hole_fill_px}" if self.depth_hole_fill_px
                   else "") + ")")

    # ---- numpy versions ([C, s, s] float32)
    def _resize(self, img: np.ndarray) -> np.ndarray:
        s = self.img_size
        h, w = img.shape[:2]
        if (h, w) == (s, s):
            return img
        interp = cv2.INTER_AREA if (h >= s and w >= s) else cv2.INTER_LINEAR
        return cv2.resize(img, (s, s), interpolation=interp)

    @staticmethod
    def _check(name: str, arr: np.ndarray, dtype: type, ndim: int, channels: int | None = None
               ) -> None:
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{name}: expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != dtype:
            raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
        if arr.ndim != ndim or (channels is not None and arr.shape[-1] != channels) \
                or min(arr.shape) == 0:
            want = "[H, W, 3]" if channels else "[H, W]"
            raise ValueError(f"{name}: expected shape {want}, got {list(arr.shape)}")

    def rgb_np(self, img: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] RGB -> float32 [3, s, s] in [0, 1]."""
        self._check("rgb", img, np.uint8, 3, 3)
        out = self._resize(img.astype(np.float32) * (1.0 / 255.0))
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def depth_np(self, mm: np.ndarray) -> np.ndarray:
        """uint16 [H, W] millimetres -> float32 [1, s, s] in [0, 1]; unfilled holes stay 0."""
        self._check("depth", mm, np.uint16, 2)
        if self.depth_hole_fill_px:
            k = 2 * self.depth_hole_fill_px + 1
            mm = np.where(mm == 0, cv2.dilate(mm, np.ones((k, k), np.uint8)), mm)
        out = np.clip(mm.astype(np.float32) / self.depth_max_mm, 0.0, 1.0)
        return self._resize(out)[None]

    def radar_np(self, rd: np.ndarray) -> np.ndarray:
        """float32 [R, D] range-doppler -> float32 [1, s, s] in [0, 1]."""
        self._check("radar", rd, np.float32, 2)
        if not np.isfinite(rd).all():
            raise ValueError("radar: range-doppler map contains NaN or inf")
        if self.radar_input == "magnitude":
            db = 20.0 * np.log10(np.maximum(np.abs(rd), RADAR_EPS))
        else:
            db = rd
        span = self.radar_db_max - self.radar_db_min
        out = np.clip((db - self.radar_db_min) / span, 0.0, 1.0).astype(np.float32)
        return self._resize(out)[None]

    def numpy(self, modality: str, arr: np.ndarray) -> np.ndarray:
        """Dispatch by modality name ('rgb', 'depth', 'radar')."""
        fn = {"rgb": self.rgb_np, "depth": self.depth_np, "radar": self.radar_np}.get(modality)
        if fn is None:
            raise ValueError(f"unknown modality {modality!r}; expected rgb, depth or radar")
        return fn(arr)

    # ---- torch versions
    def rgb(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.rgb_np(img))

    def depth(self, mm: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.depth_np(mm))

    def radar(self, rd: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.radar_np(rd))

    def __call__(self, modality: str, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.numpy(modality, arr))
