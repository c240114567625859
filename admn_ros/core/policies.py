"""Allocation policies behind one interface: `policy(lowres, budget) -> mask [B, M, D] bool`.

Names: `learned` (a Controller, deterministic top-L), `upper_bound` (all blocks), `naive`
(each modality's `min_blocks`, the rest of L split evenly, every other block first, remainder to
the first modalities), `random` (uniform over masks with exactly L and the `min_blocks` on;
seeded), `single:<modality>` (the others' `min_blocks`, the rest of L to one modality, every
other block first). `min_blocks` defaults to 1 (block 0) per modality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from admn_ros.core.config import ModelConfig
from admn_ros.core.controller import Controller, check_budget, forced_slots, top_l_mask


class Policy(ABC):
    """Base: validates inputs and budget, then `allocate(budget [B]) -> bool [B, M, D]`."""

    name = "policy"

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.budget_range = cfg.network_budget_range

    def batch_size(self, lowres: dict[str, Tensor]) -> int:
        if not isinstance(lowres, dict) or set(lowres) != set(self.cfg.modalities):
            got = sorted(lowres) if isinstance(lowres, dict) else type(lowres).__name__
            raise ValueError(f"lowres: expected keys {self.cfg.modalities}, got {got}")
        return lowres[self.cfg.modalities[0]].shape[0]

    def __call__(self, lowres: dict[str, Tensor], budget: int | Tensor) -> Tensor:
        batch = self.batch_size(lowres)
        return self.allocate(lowres, check_budget(budget, batch, *self.budget_range))

    @abstractmethod
    def allocate(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        """bool [B, M, D] for a validated budget [B]."""

    def _empty(self, batch: int) -> Tensor:
        return torch.zeros(batch, self.cfg.num_modalities, self.cfg.depth, dtype=torch.bool)


class LearnedPolicy(Policy):
    name = "learned"

    def __init__(self, cfg: ModelConfig, controller: Controller) -> None:
        super().__init__(cfg)
        self.controller = controller
        self.budget_range = cfg.budget_range

    def allocate(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.controller(lowres, budget, sample=False)
        return out.mask.bool()


class UpperBoundPolicy(Policy):
    name = "upper_bound"

    def allocate(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        return ~self._empty(len(budget))


def every_other(depth: int) -> list[int]:
    """Static block order 0, 2, 4, ..., then 1, 3, ...: how LayerDrop-trained networks are
    best pruned (the paper's naive allocation; docs/ARCHITECTURE.md has the measurement)."""
    return [*range(0, depth, 2), *range(1, depth, 2)]


def split_mask(counts: Sequence[int], depth: int, low: Sequence[int] | None = None,
               order: Sequence[int] | None = None) -> Tensor:
    """bool [M, D]: `counts[m]` blocks of modality m: its first `low[m]` blocks (the ones
    `min_blocks` forces; default none), then the others in `order` (default `every_other`)."""
    low = low or [0] * len(counts)
    order = list(order) if order is not None else every_other(depth)
    mask = torch.zeros(len(counts), depth, dtype=torch.bool)
    for j, (k, lo) in enumerate(zip(counts, low, strict=True)):
        blocks = [*range(lo), *(b for b in order if b >= lo)]
        mask[j, blocks[:k]] = True
    return mask


def count_splits(num_modalities: int, depth: int, budget: int,
                 low: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Every split of `budget` blocks into per-modality counts, count m in low[m]..depth
    (default 1..depth)."""
    low = list(low) if low is not None else [1] * num_modalities
    if num_modalities == 1:
        return [(budget,)] if low[0] <= budget <= depth else []
    return [(k, *rest) for k in range(low[0], min(depth, budget) + 1)
            for rest in count_splits(num_modalities - 1, depth, budget - k, low[1:])]


class NaivePolicy(Policy):
    """The paper's naive allocation (5.1.2): L/M blocks per backbone, every other block."""

    name = "naive"

    def allocate(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        d, low = self.cfg.depth, self.cfg.min_blocks_list
        mask = self._empty(len(budget))
        for i, total in enumerate(budget.tolist()):
            mask[i] = split_mask(even_split(total, low, d), d, low)
        return mask


def even_split(total: int, low: list[int], depth: int) -> list[int]:
    """Per-modality block counts summing to `total`: as even as the minimums `low` and the
    depth allow, remainders to the first modalities (L // M each when the minimums are equal)."""
    counts = list(low)
    while sum(counts) < total:
        j = min((c, j) for j, c in enumerate(counts) if c < depth)[1]
        counts[j] += 1
    return counts


class RandomPolicy(Policy):
    name = "random"

    def __init__(self, cfg: ModelConfig, seed: int = 0) -> None:
        super().__init__(cfg)
        self.generator = torch.Generator().manual_seed(seed)
        self.forced = forced_slots(cfg.num_modalities, cfg.depth, min_blocks=cfg.min_blocks_list)

    def allocate(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        scores = torch.rand(len(budget), self.cfg.total_blocks, generator=self.generator)
        mask = top_l_mask(scores, budget, self.forced)  # uniform random subset of the free slots
        return mask.bool().view(len(budget), self.cfg.num_modalities, self.cfg.depth)


class SinglePolicy(Policy):
    def __init__(self, cfg: ModelConfig, modality: str) -> None:
        super().__init__(cfg)
        if modality not in cfg.modalities:
            raise ValueError(f"single:<modality>: expected one of {cfg.modalities}, "
                             f"got {modality!r}")
        self.index = cfg.modalities.index(modality)
        self.name = f"single:{modality}"
        low = cfg.min_blocks_list
        others = sum(low) - low[self.index]  # the others' min_blocks + all blocks of this one
        self.budget_range = (cfg.network_budget_range[0], others + cfg.depth)

    def allocate(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        low, d = self.cfg.min_blocks_list, self.cfg.depth
        others = sum(low) - low[self.index]
        mask = self._empty(len(budget))
        for i, total in enumerate(budget.tolist()):
            counts = [total - others if j == self.index else k for j, k in enumerate(low)]
            mask[i] = split_mask(counts, d, low)
        return mask


POLICY_NAMES = ("learned", "upper_bound", "naive", "random", "single:<modality>")


def make_policy(name: str, model_cfg: ModelConfig, controller: Controller | None = None,
                seed: int = 0) -> Policy:
    if name == "learned":
        if controller is None:
            raise ValueError("policy 'learned': expected a Controller, got None")
        return LearnedPolicy(model_cfg, controller)
    if name == "upper_bound":
        return UpperBoundPolicy(model_cfg)
    if name == "naive":
        return NaivePolicy(model_cfg)
    if name == "random":
        return RandomPolicy(model_cfg, seed)
    if name.startswith("single:"):
        return SinglePolicy(model_cfg, name.split(":", 1)[1])
    raise ValueError(f"policy: expected one of {list(POLICY_NAMES)}, got {name!r}")
