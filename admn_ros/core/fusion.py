"""Fusion of per-node, per-modality embeddings and the Gaussian (x, z) head."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.config import FusionConfig
from admn_ros.core.vit import TOKEN_INIT_STD, Block, init_weights


class GaussianPrediction(NamedTuple):
    """mean [B, 2] (x, z) in cm; scale_tril [B, 2, 2] with L L^T = covariance (eps I included)."""

    mean: Tensor
    scale_tril: Tensor

    @property
    def covariance(self) -> Tensor:
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)


def cholesky_2x2(cov: Tensor) -> Tensor:
    """Closed-form Cholesky factor of SPD [..., 2, 2] matrices (cheaper than linalg here)."""
    a, b, c = cov[..., 0, 0], cov[..., 1, 0], cov[..., 1, 1]
    l11 = a.sqrt()
    l21 = b / l11
    l22 = (c - l21**2).sqrt()
    zero = torch.zeros_like(l11)
    return torch.stack([torch.stack([l11, zero], -1), torch.stack([l21, l22], -1)], -2)


class GaussianHead(nn.Module):
    """[B, d] -> GaussianPrediction. Mean squashed by tanh into the arena box;
    covariance = L L^T + eps I with L lower-triangular, softplus diagonal."""

    def __init__(self, dim: int, cfg: FusionConfig) -> None:
        super().__init__()
        a = cfg.arena
        lo, hi = torch.tensor([a.x_min, a.z_min]), torch.tensor([a.x_max, a.z_max])
        self.register_buffer("center", (hi + lo) / 2)
        self.register_buffer("half_extent", (hi - lo) / 2)
        self.init_std, self.eps = cfg.init_std_cm, cfg.eps_cm2
        self.mean = nn.Linear(dim, 2)
        self.tril = nn.Linear(dim, 3)  # raw (diag x, off-diagonal, diag z), scaled by init_std

    def forward(self, x: Tensor) -> GaussianPrediction:
        mean = self.center + self.half_extent * torch.tanh(self.mean(x))  # [B, 2] cm
        raw = self.tril(x)
        # softplus(raw + softplus^-1(1)) == 1 at raw == 0: the untrained std is init_std
        diag = F.softplus(raw[:, [0, 2]] + math.log(math.e - 1)) * self.init_std
        low = raw[:, 1] * self.init_std
        zero = torch.zeros_like(low)
        tril = torch.stack(
            [torch.stack([diag[:, 0], zero], -1), torch.stack([low, diag[:, 1]], -1)], -2
        )
        cov = tril @ tril.transpose(-1, -2) + self.eps * torch.eye(2, device=x.device)
        return GaussianPrediction(mean, cholesky_2x2(cov))


class Fusion(nn.Module):
    """dict modality -> [B, S, E] => tokens [B, S*M, d] (+ node, modality embeddings)
    -> transformer -> readout [B, d] (flatten + projection, or mean pool)."""

    def __init__(self, modalities: list[str], in_dims: dict[str, int], num_nodes: int,
                 cfg: FusionConfig) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.readout = cfg.readout
        self.adapters = nn.ModuleDict({m: nn.Linear(in_dims[m], cfg.dim) for m in modalities})
        self.node_embed = nn.Parameter(torch.zeros(1, num_nodes, 1, cfg.dim))
        self.modality_embed = nn.Parameter(torch.zeros(1, 1, len(modalities), cfg.dim))
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        if cfg.readout == "flatten":
            tokens = num_nodes * len(modalities)
            self.flat_proj = nn.Sequential(nn.Linear(tokens * cfg.dim, cfg.dim), nn.GELU(),
                                           nn.LayerNorm(cfg.dim, eps=1e-6))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        nn.init.trunc_normal_(self.node_embed, std=TOKEN_INIT_STD)
        nn.init.trunc_normal_(self.modality_embed, std=TOKEN_INIT_STD)
        self.apply(init_weights)

    def tokens(self, features: dict[str, Tensor]) -> Tensor:
        """Per-modality [B, S, E] -> embedded tokens [B, S*M, d] (node-major)."""
        x = torch.stack([self.adapters[m](features[m]) for m in self.modalities], 2)  # [B,S,M,d]
        return (x + self.node_embed + self.modality_embed).flatten(1, 2)

    def pool(self, x: Tensor) -> Tensor:
        """Transformer output [B, S*M, d] -> [B, d]."""
        x = self.norm(x)
        return self.flat_proj(x.flatten(1)) if self.readout == "flatten" else x.mean(1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = self.tokens(features)
        for blk in self.blocks:
            x = blk(x)
        return self.pool(x)


def gaussian_loss(pred: GaussianPrediction, target: Tensor, nll_weight: float = 1.0,
                  dist_weight: float = 0.05) -> Tensor:
    """nll_weight * NLL(target | N(mean, L L^T)) + dist_weight * ||mean - target||, batch mean."""
    if target.shape != pred.mean.shape:
        raise ValueError(
            f"target: expected {tuple(pred.mean.shape)} (x, z in cm), got {tuple(target.shape)}"
        )
    dist = torch.distributions.MultivariateNormal(pred.mean, scale_tril=pred.scale_tril)
    nll = -dist.log_prob(target)
    euclid = (pred.mean - target).norm(dim=-1)
    return (nll_weight * nll + dist_weight * euclid).mean()
