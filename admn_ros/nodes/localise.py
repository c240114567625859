"""The fusion step without ROS: backbones for exactly one allocation, fusion, Gaussian head,
and the pose / marker geometry the fusion node publishes.
The model works on the ground plane (x, z) of the y-up OptiTrack world; poses and markers are
turned into the z-up map frame here (`frames`, docs/FRAMES.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from admn_ros.core.model import ADMN, check_forced
from admn_ros.engine import make_backend
from admn_ros.engine.timing import now_ms
from admn_ros.nodes.frames import GROUND_TO_MAP, ground_to_map

CM = 0.01  # model outputs centimetres; ROS wants metres


@dataclass
class Estimate:
    mean_cm: np.ndarray  # [2] (x, z) on the world ground plane
    cov_cm2: np.ndarray  # [2, 2]
    backbone_ms: float  # the engine's run(): the allocated backbone blocks + fusion head


def active_from_msg(flat: list[bool], modalities: list[str], layers: int, model: ADMN) -> Tensor:
    """LayerAllocation fields -> bool [M, D]; ValueError when they do not fit the model."""
    cfg = model.cfg
    if list(modalities) != list(cfg.modalities) or layers != cfg.depth \
            or len(flat) != cfg.total_blocks:
        raise ValueError(f"allocation for {list(modalities)} x {layers} ({len(flat)} flags) does "
                         f"not fit the model's {cfg.modalities} x {cfg.depth}")
    active = torch.tensor(list(flat), dtype=torch.bool).view(cfg.num_modalities, cfg.depth)
    check_forced(active, cfg, "allocation")  # the model's `min_blocks` (default: block 0)
    return active


class Localiser:
    """Backbones (exactly the allocated blocks) + fusion for one sample, through the inference
    engine's backend (`admn_ros.engine.make_backend`: eager | compile | tensorrt | auto)."""

    def __init__(self, model: ADMN, backend: str = "auto") -> None:
        self.model = model.eval()
        self.engine = make_backend(backend, self.model, None)
        self.backend = self.engine.name
        self.engine.warmup()

    def __call__(self, inputs: dict[str, Tensor], active: Tensor) -> Estimate:
        t0 = now_ms(self.engine.device)
        pred = self.engine.run(self.engine.to_device(inputs), active)
        ms = now_ms(self.engine.device) - t0  # synchronised: queued GPU work counts
        tril = pred.scale_tril[0].float().cpu()
        return Estimate(pred.mean[0].float().cpu().numpy().astype(float),
                        (tril @ tril.T).numpy().astype(float), ms)


def pose_covariance(cov_cm2: np.ndarray, unknown: float = 1e3) -> list[float]:
    """6x6 row-major map-frame covariance (x, y, z, rot) in m^2 of a world ground-plane
    (x, z) estimate: its 2x2 turned into the map's (x, y) block."""
    cov = np.zeros((6, 6))
    cov[:2, :2] = GROUND_TO_MAP @ cov_cm2 @ GROUND_TO_MAP.T * CM * CM
    cov[2, 2] = 1e-4  # on the floor
    cov[3, 3] = cov[4, 4] = cov[5, 5] = unknown  # orientation is not estimated
    return cov.flatten().tolist()


def ellipse_points(mean_cm: np.ndarray, cov_cm2: np.ndarray, sigmas: float = 2.0,
                   n: int = 36) -> np.ndarray:
    """[n + 1, 2] map points (x, y) in metres on the `sigmas` covariance ellipse (closed) of a
    world ground-plane estimate."""
    vals, vecs = np.linalg.eigh(cov_cm2)
    radii = sigmas * np.sqrt(np.maximum(vals, 0.0))
    t = np.linspace(0.0, 2.0 * math.pi, n + 1)
    circle = np.stack([np.cos(t) * radii[0], np.sin(t) * radii[1]], -1)
    return ground_to_map((mean_cm + circle @ vecs.T) * CM)
