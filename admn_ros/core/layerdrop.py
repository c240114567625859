"""Multimodal LayerDrop mask sampler (paper 3.3).

Each block j >= 1 of each modality is dropped with rate p (linearly ramped from 0 over
`ramp_epochs`); independently, with probability `full_drop_prob` a modality keeps only block 0
(the paper's full-backbone drop; block 0 always runs here). A mask is shared by all nodes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from admn_ros.core.config import LayerDropConfig, ModelConfig


class LayerDrop:
    """`sample(epoch)` -> bool [M, D] (skip mode, one mask per batch);
    `sample(epoch, batch_size=B)` -> bool [B, M, D] (blend mode, one mask per sample)."""

    def __init__(
        self,
        num_modalities: int,
        depth: int,
        rate: float = 0.2,
        ramp_epochs: int = 0,
        full_drop_prob: float = 0.1,
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"LayerDrop rate: expected 0 <= rate < 1, got {rate}")
        if not 0.0 <= full_drop_prob <= 1.0:
            raise ValueError(f"full_drop_prob: expected in [0, 1], got {full_drop_prob}")
        if ramp_epochs < 0:
            raise ValueError(f"ramp_epochs: expected >= 0, got {ramp_epochs}")
        self.num_modalities, self.depth = num_modalities, depth
        self.rate, self.ramp_epochs, self.full_drop_prob = rate, ramp_epochs, full_drop_prob

    @classmethod
    def from_config(cls, cfg: ModelConfig, ld: LayerDropConfig | None = None) -> LayerDrop:
        ld = ld or cfg.layerdrop
        return cls(cfg.num_modalities, cfg.depth, ld.rate, ld.ramp_epochs, ld.full_drop_prob)

    def rate_at(self, epoch: float) -> float:
        """Drop rate after `epoch` (fractional epochs allowed) of the linear ramp."""
        if self.ramp_epochs == 0:
            return self.rate
        return self.rate * min(1.0, max(0.0, epoch) / self.ramp_epochs)

    def sample(
        self,
        epoch: float = 0.0,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        lead = () if batch_size is None else (batch_size,)
        shape = (*lead, self.num_modalities, self.depth)
        keep = torch.rand(shape, generator=generator) >= self.rate_at(epoch)
        full = torch.rand((*lead, self.num_modalities, 1), generator=generator)
        full = full < self.full_drop_prob
        keep = keep & ~full
        keep[..., 0] = True  # block 0 always runs
        return keep
