"""Multimodal LayerDrop mask sampler (paper 3.3).

Each block of each modality beyond its first `min_blocks` (default 1: block 0 always runs) is
dropped with rate p (linearly ramped from 0 over `ramp_epochs`); independently, with probability
`full_drop_prob` (one for all modalities or one each) a modality keeps only those first
`min_blocks` blocks: with min_blocks 0, none, the paper's full-backbone drop. A mask is shared
by all nodes.
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
        full_drop_prob: float | list[float] = 0.1,
        min_blocks: list[int] | None = None,
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"LayerDrop rate: expected 0 <= rate < 1, got {rate}")
        probs = full_drop_prob if isinstance(full_drop_prob, list) \
            else [full_drop_prob] * num_modalities
        if len(probs) != num_modalities or not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"full_drop_prob: expected one value or {num_modalities}, each in "
                             f"[0, 1], got {full_drop_prob}")
        if ramp_epochs < 0:
            raise ValueError(f"ramp_epochs: expected >= 0, got {ramp_epochs}")
        self.min_blocks = list(min_blocks) if min_blocks is not None else [1] * num_modalities
        if len(self.min_blocks) != num_modalities or not all(0 <= k <= depth
                                                               for k in self.min_blocks):
            raise ValueError(f"min_blocks: expected {num_modalities} values in 0..{depth}, "
                             f"got {min_blocks}")
        self.num_modalities, self.depth = num_modalities, depth
        self.rate, self.ramp_epochs = rate, ramp_epochs
        self.full_drop_prob = torch.tensor(probs)[:, None]  # [M, 1]

    @classmethod
    def from_config(cls, cfg: ModelConfig, ld: LayerDropConfig | None = None) -> LayerDrop:
        ld = ld or cfg.layerdrop
        return cls(cfg.num_modalities, cfg.depth, ld.rate, ld.ramp_epochs,
                   ld.full_drop_probs(cfg.modalities), cfg.min_blocks_list)

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
        for i, k in enumerate(self.min_blocks):  # the first min_blocks always run
            keep[..., i, :k] = True
        return keep
