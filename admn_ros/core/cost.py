"""Analytic compute cost (per sample) of the backbones, controller and fusion.

Counted like `torch.utils.flop_counter`: matmuls, convolutions and attention; FLOPs = 2 * MACs.
Norms, activations, softmax and additions are left out (a few percent at most).
"""

from __future__ import annotations

import torch
from torch import Tensor

from admn_ros.core.config import ModelConfig

FLOPS_PER_MAC = 2


def block_macs(tokens: int, dim: int, mlp_ratio: float) -> int:
    """Pre-norm transformer block: qkv, q k^T, attn v, proj, fc1, fc2."""
    hidden = int(dim * mlp_ratio)
    return tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim \
        + 2 * tokens * dim * hidden


def conv_out(size: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class CostModel:
    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        b = cfg.backbone
        self.tokens = (b.img_size // b.patch_size) ** 2 + 1

    # ---------------------------------------------------------------- parts (FLOPs)
    def backbone_stem_flops(self, modality: str) -> float:
        """Patch embedding of one view (runs whatever the mask)."""
        b = self.cfg.backbone
        patches = self.tokens - 1
        return float(FLOPS_PER_MAC * patches * b.embed_dim * self.cfg.in_chans[modality]
                     * b.patch_size**2)

    def backbone_block_flops(self, modality: str) -> float:
        """One transformer block of `modality`'s backbone on one view."""
        if modality not in self.cfg.modalities:
            raise ValueError(f"modality: expected one of {self.cfg.modalities}, got {modality!r}")
        b = self.cfg.backbone
        return float(FLOPS_PER_MAC * block_macs(self.tokens, b.embed_dim, b.mlp_ratio))

    def controller_flops(self, include_decoder: bool = False) -> float:
        """Controller on one sample (all S x M low-res views); the AE decoder only on request."""
        cfg, c = self.cfg, self.cfg.controller
        s, m, d = cfg.num_nodes, cfg.num_modalities, c.dim
        macs = 0
        for mod in cfg.modalities:
            size, c_in = c.img_size, cfg.in_chans[mod]
            for c_out in c.stem_channels:
                size = conv_out(size)
                macs += s * size * size * c_out * c_in * 9
                c_in = c_out
            macs += s * c_in * d  # stem projection
        tokens = 1 + int(c.budget_token) + s * m
        macs += c.depth * block_macs(tokens, d, c.mlp_ratio)
        macs += d * d + d * cfg.total_blocks  # logit MLP
        if c.noise_head:
            macs += s * m * (d * d + d)
        if include_decoder and c.ae_head:
            grid = max(1, c.img_size // 4)
            hidden = 32
            for mod in cfg.modalities:
                macs += s * (d * hidden * grid**2  # fc
                             + (2 * grid) ** 2 * hidden * hidden  # up-conv 1 (k2 s2)
                             + (4 * grid) ** 2 * cfg.in_chans[mod] * hidden)  # up-conv 2
        return float(FLOPS_PER_MAC * macs)

    def fusion_flops(self) -> float:
        """Adapters, fusion transformer and Gaussian head on one sample."""
        cfg, f = self.cfg, self.cfg.fusion
        tokens = cfg.num_nodes * cfg.num_modalities
        macs = tokens * cfg.backbone.embed_dim * f.dim
        macs += f.depth * block_macs(tokens, f.dim, f.mlp_ratio)
        if f.readout == "flatten":
            macs += tokens * f.dim * f.dim  # readout projection
        macs += f.dim * (2 + 3)  # mean and scale_tril heads
        return float(FLOPS_PER_MAC * macs)

    # ---------------------------------------------------------------- totals
    def costs(self, mask: Tensor, include_controller: bool = False) -> Tensor:
        """FLOPs per sample [B] for a mask [M, D] or [B, M, D] (bool or 0/1 float)."""
        m, d = self.cfg.num_modalities, self.cfg.depth
        if not isinstance(mask, Tensor) or mask.dim() not in (2, 3) \
                or tuple(mask.shape[-2:]) != (m, d):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected [{m}, {d}] or [B, {m}, {d}], got {got}")
        mask = mask.reshape(-1, m, d).detach().to("cpu", torch.float64)
        s = self.cfg.num_nodes
        block = torch.tensor([self.backbone_block_flops(x) for x in self.cfg.modalities],
                             dtype=torch.float64)
        stem = sum(self.backbone_stem_flops(x) for x in self.cfg.modalities)
        fixed = s * stem + self.fusion_flops()
        if include_controller:
            fixed += self.controller_flops()
        return fixed + s * (mask.sum(-1) * block).sum(-1)

    def cost(self, mask: Tensor, include_controller: bool = False) -> float:
        """Mean FLOPs per sample."""
        return float(self.costs(mask, include_controller).mean())

    def full_cost(self, include_controller: bool = False) -> float:
        """FLOPs per sample with every block active."""
        full = torch.ones(self.cfg.num_modalities, self.cfg.depth, dtype=torch.bool)
        return self.cost(full, include_controller)
