"""Multimodal LayerDrop mask sampler (paper 3.3).

Each block of each modality beyond its first `min_blocks` (default 1: block 0 always runs) is
dropped with rate p (linearly ramped from 0 over `ramp_epochs`); independently, with probability
`full_drop_prob` (one for all modalities or one each) a modality keeps only those first
`min_blocks` blocks: with min_blocks 0, none, the paper's full-backbone drop. With probability
`budget_prob` a mask is instead one a controller could pick: a budget drawn uniformly from the
network's range, its free blocks split over the modalities uniformly among the possible splits,
and each modality's blocks a uniform subset, so that small budgets and concentrated
allocations (e.g. every free block on one modality) are trained as often as the deep masks
that per-block dropout gives. A mask is shared by all nodes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from admn_ros.core.config import LayerDropConfig, ModelConfig
from admn_ros.core.policies import count_splits


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
        budget_prob: float = 0.0,
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"LayerDrop rate: expected 0 <= rate < 1, got {rate}")
        probs = full_drop_prob if isinstance(full_drop_prob, list) \
            else [full_drop_prob] * num_modalities
        if len(probs) != num_modalities or not all(0.0 <= p <= 1.0 for p in probs):
            raise ValueError(f"full_drop_prob: expected one value or {num_modalities}, each in "
                             f"[0, 1], got {full_drop_prob}")
        if not 0.0 <= budget_prob <= 1.0:
            raise ValueError(f"budget_prob: expected 0 <= budget_prob <= 1, got {budget_prob}")
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
        self.budget_prob = budget_prob

    @classmethod
    def from_config(cls, cfg: ModelConfig, ld: LayerDropConfig | None = None) -> LayerDrop:
        ld = ld or cfg.layerdrop
        return cls(cfg.num_modalities, cfg.depth, ld.rate, ld.ramp_epochs,
                   ld.full_drop_probs(cfg.modalities), cfg.min_blocks_list, ld.budget_prob)

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
        if self.budget_prob:
            flat = keep.view(-1, self.num_modalities, self.depth)  # [N, M, D]
            use = torch.rand(flat.shape[0], generator=generator) < self.budget_prob
            for n in use.nonzero().flatten().tolist():
                flat[n] = self.budget_mask(generator)
        return keep

    def budget_mask(self, generator: torch.Generator | None = None) -> Tensor:
        """bool [M, D]: a random budget, a uniform split of its free blocks, uniform blocks."""
        low = self.min_blocks
        budget = sum(low) + int(torch.randint(0, self.num_modalities * self.depth - sum(low) + 1,
                                              (1,), generator=generator))
        splits = count_splits(self.num_modalities, self.depth, budget, low)  # uniform over these
        counts = splits[int(torch.randint(len(splits), (1,), generator=generator))]
        keep = torch.zeros(self.num_modalities, self.depth, dtype=torch.bool)
        for i, (k, c) in enumerate(zip(low, counts, strict=True)):
            keep[i, :k] = True
            keep[i, k + torch.randperm(self.depth - k, generator=generator)[:c - k]] = True
        return keep
