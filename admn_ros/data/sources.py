"""Per-source conversion of stored sensor arrays to the project's topic units.

Topic units (what the bag carries and `Preprocess` normalises; see docs/DATA.md):
depth uint16 millimetres [H, W]; radar float32 [range, doppler] linear magnitude whose
20 log10 spans ``preprocess.radar_db_min .. radar_db_max`` dB over the model's [0, 1]
(or dB directly when ``preprocess.radar_input`` is ``db``).

A source (``sources.<name>`` in config/data.yaml) says how its datasets map to those units:

- depth ``mm``: metric uint16 millimetres as stored (a colour-mapped depth JPEG is mapped back
  to approximate millimetres through ``layout.depth_jpeg``); ``gray_minmax``: an encoded depth
  image decoded as grey levels and scaled to [0, 1] per frame (what ADMN feeds its model from
  GDTM's colourised RealSense depth), carried as that fraction of ``preprocess.depth_max_mm``.
- radar ``magnitude``: linear magnitude as stored; ``frame_minmax``: ``(x - min) / max`` per
  frame, clipped to [0, 1] (ADMN); ``standardize``: ``0.5 + (x - mean) / (2 span std)``,
  clipped to [0, 1] (GDTM's dataset normalisation, ``span`` standard deviations each side).
  The last two are carried as the magnitude that `Preprocess` maps back to that fraction.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from admn_ros.data.config import DataConfig, SourceConfig

DEPTH_MODES = ("mm", "gray_minmax")
RADAR_MODES = ("magnitude", "frame_minmax", "standardize")


def is_encoded_image(arr: np.ndarray) -> bool:
    """True for an encoded image buffer: uint8 [N] or [N, 1] (depends on the writing OpenCV)."""
    return arr.dtype == np.uint8 and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1))


def decode_image(arr: np.ndarray, flags: int) -> np.ndarray | None:
    """cv2.imdecode of a [N] or [N, 1] buffer; None when it cannot be decoded."""
    return cv2.imdecode(np.ascontiguousarray(arr.reshape(-1)), flags) if arr.size else None


@cache
def _colormap_inverse(name: str) -> np.ndarray:
    """[32, 32, 32] table: quantised BGR colour -> 0..255 index of the colour map."""
    cmap = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO}[name]
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cmap)[:, 0].astype(float)
    q = (np.arange(32) * 8 + 4).astype(float)
    grid = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    idx = np.empty(len(grid), np.uint8)
    for s in range(0, len(grid), 4096):
        d = ((grid[s:s + 4096, None, :] - lut[None]) ** 2).sum(-1)
        idx[s:s + 4096] = d.argmin(1)
    return idx.reshape(32, 32, 32)


class SourceConversion:
    """Stored depth / radar arrays of one source -> topic units. Raises ValueError on bad input."""

    def __init__(self, name: str, cfg: DataConfig) -> None:
        if name not in cfg.sources:
            raise ValueError(f"unknown data source {name!r}; config/data.yaml defines "
                             f"{sorted(cfg.sources)}")
        src: SourceConfig = cfg.sources[name]
        if src.depth.mode not in DEPTH_MODES:
            raise ValueError(f"sources.{name}.depth.mode must be one of {DEPTH_MODES}, got "
                             f"{src.depth.mode!r}")
        if src.radar.mode not in RADAR_MODES:
            raise ValueError(f"sources.{name}.radar.mode must be one of {RADAR_MODES}, got "
                             f"{src.radar.mode!r}")
        if src.radar.std <= 0 or src.radar.span_std <= 0:
            raise ValueError(f"sources.{name}.radar: std and span_std must be > 0")
        self.name, self.src = name, src
        self.depth_jpeg = cfg.layout.depth_jpeg
        self.pre = cfg.preprocess

    # ---- depth
    def depth(self, arr: np.ndarray) -> np.ndarray:
        """Stored depth -> uint16 [H, W] millimetres (topic units)."""
        if self.src.depth.mode == "gray_minmax":
            if not is_encoded_image(arr):
                raise ValueError(f"depth mode gray_minmax needs an encoded image buffer, got "
                                 f"{arr.dtype} {list(arr.shape)} (use mode mm for metric depth)")
            grey = self._decode(arr, cv2.IMREAD_GRAYSCALE)
            frac = cv2.normalize(grey, None, 0.0, 1.0, cv2.NORM_MINMAX, dtype=cv2.CV_32F)
            return np.round(frac.astype(np.float64) * self.pre.depth_max_mm).astype(np.uint16)
        if is_encoded_image(arr):
            return self._depth_from_colormap(arr)
        if arr.ndim == 2 and arr.dtype == np.uint16:
            return arr
        raise ValueError(f"depth must be uint16 [H, W] mm or an encoded image, got {arr.dtype} "
                         f"{list(arr.shape)}")

    def _depth_from_colormap(self, arr: np.ndarray) -> np.ndarray:
        """Colour-mapped depth image back to approximate millimetres."""
        img = self._decode(arr, cv2.IMREAD_COLOR)
        if self.depth_jpeg.colormap == "gray":
            idx = img.mean(-1)
        else:
            q = (img // 8).astype(np.intp)
            idx = _colormap_inverse(self.depth_jpeg.colormap)[q[..., 0], q[..., 1], q[..., 2]]
        return np.round(idx.astype(np.float64) / 255.0 * self.depth_jpeg.max_mm).astype(np.uint16)

    @staticmethod
    def _decode(arr: np.ndarray, flags: int) -> np.ndarray:
        img = decode_image(arr, flags)
        if img is None:
            raise ValueError("corrupt encoded image (cannot decode)")
        return img

    # ---- radar
    def radar(self, arr: np.ndarray) -> np.ndarray:
        """Stored range-doppler map -> float32 [R, D] topic units."""
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"radar must be a float 2-D map, got {arr.dtype} {list(arr.shape)}")
        rd = arr.astype(np.float32, copy=False)
        mode, r = self.src.radar.mode, self.src.radar
        if mode == "magnitude":
            return rd
        if not np.isfinite(rd).all():
            raise ValueError("radar: range-doppler map contains NaN or inf")
        x = rd.astype(np.float64)
        if mode == "frame_minmax":
            top = x.max()
            frac = (x - x.min()) / top if top > 0 else np.zeros_like(x)
        else:
            frac = 0.5 + (x - r.mean) / (2.0 * r.span_std * r.std)
        return self.fraction_to_radar(np.clip(frac, 0.0, 1.0))

    def fraction_to_radar(self, frac: np.ndarray) -> np.ndarray:
        """Model-range fraction [0, 1] -> the topic value `Preprocess` maps back to it."""
        db = self.pre.radar_db_min + frac * (self.pre.radar_db_max - self.pre.radar_db_min)
        out = db if self.pre.radar_input == "db" else 10.0 ** (db / 20.0)
        return out.astype(np.float32)
