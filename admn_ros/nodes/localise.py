"""The fusion step without ROS: backbones for exactly one allocation, fusion, Gaussian head,
and the pose / marker geometry the fusion node publishes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from admn_ros.core.model import ADMN

CM = 0.01  # model outputs centimetres; ROS wants metres


@dataclass
class Estimate:
    mean_cm: np.ndarray  # [2] (x, z)
    cov_cm2: np.ndarray  # [2, 2]
    backbone_ms: float
    fusion_ms: float


def active_from_msg(flat: list[bool], modalities: list[str], layers: int, model: ADMN) -> Tensor:
    """LayerAllocation fields -> bool [M, D]; ValueError when they do not fit the model."""
    cfg = model.cfg
    if list(modalities) != list(cfg.modalities) or layers != cfg.depth \
            or len(flat) != cfg.total_blocks:
        raise ValueError(f"allocation for {list(modalities)} x {layers} ({len(flat)} flags) does "
                         f"not fit the model's {cfg.modalities} x {cfg.depth}")
    active = torch.tensor(list(flat), dtype=torch.bool).view(cfg.num_modalities, cfg.depth)
    if not bool(active[:, 0].all()):
        raise ValueError("allocation has block 0 of a modality inactive")
    return active


class Localiser:
    """Runs `ADMN` for one sample and one mask ([M, D] bool, real block skipping).

    `backend`: eager | compile (torch.compile of each backbone) | auto. TensorRT lives in the
    inference engine (`admn_ros.engine`); see docs/LIVE.md.
    """

    def __init__(self, model: ADMN, backend: str = "eager") -> None:
        if backend not in ("eager", "compile", "auto", "tensorrt"):
            raise ValueError(f"backend: expected eager | compile | tensorrt | auto, "
                             f"got {backend!r}")
        self.model = model.eval()
        self.backend = "eager" if backend in ("auto", "tensorrt") else backend

    @torch.no_grad()
    def __call__(self, inputs: dict[str, Tensor], active: Tensor) -> Estimate:
        t0 = time.perf_counter()
        feats = self.model.encode_all(inputs, active)
        t1 = time.perf_counter()
        pred = self.model.fuse(feats)
        t2 = time.perf_counter()
        tril = pred.scale_tril[0]
        return Estimate(pred.mean[0].numpy().astype(float), (tril @ tril.T).numpy().astype(float),
                        (t1 - t0) * 1e3, (t2 - t1) * 1e3)


def pose_covariance(cov_cm2: np.ndarray, unknown: float = 1e3) -> list[float]:
    """6x6 row-major covariance (x, y, z, rot) in m^2 for a ground-plane (x, z) estimate."""
    cov = np.zeros((6, 6))
    cov[np.ix_([0, 2], [0, 2])] = cov_cm2 * CM * CM
    cov[1, 1] = 1e-4  # on the floor
    cov[3, 3] = cov[4, 4] = cov[5, 5] = unknown  # orientation is not estimated
    return cov.flatten().tolist()


def ellipse_points(mean_cm: np.ndarray, cov_cm2: np.ndarray, sigmas: float = 2.0,
                   n: int = 36) -> np.ndarray:
    """[n + 1, 2] points (x, z) in metres on the `sigmas` covariance ellipse (closed)."""
    vals, vecs = np.linalg.eigh(cov_cm2)
    radii = sigmas * np.sqrt(np.maximum(vals, 0.0))
    t = np.linspace(0.0, 2.0 * math.pi, n + 1)
    circle = np.stack([np.cos(t) * radii[0], np.sin(t) * radii[1]], -1)
    return (mean_cm + circle @ vecs.T) * CM
