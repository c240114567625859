"""How much allocation can gain at a budget: candidate masks scored on the same inputs.

Two candidate families at budget L:

- `splits`: every per-modality block count `(k_1, ..., k_M)` (min_blocks_m <= k_m <= D, sum
  L), blocks in `split_mask` order; the paper's naive allocation is one of them;
- `exhaustive`: every mask with each modality's `min_blocks` on and L blocks in all (only
  where there are few enough: C(M D - sum(min_blocks), L - sum(min_blocks)) masks).

`low` below is the model's `min_blocks` per modality (default 1 each: block 0 forced).

Per family two reference points follow:

- `best_static`: the one mask with the lowest mean error on the evaluated samples, i.e. the
  best input-agnostic allocation, tuned on the test data itself (so optimistic for it);
- `oracle`: per sample, the mask with the lowest error against the ground truth (no controller
  sees labels): what choosing among the candidates per input could reach at best. Over the
  exhaustive family no controller can beat it; over splits, one may, with masks that are not
  splits.

So `oracle <= best_static <= naive`, and the exhaustive figures are <= the splits' ones.

Between the two lies what a controller could reach that judged each input's noise exactly and
knew, for every noise pattern, the best candidate (`noise_pattern`: per modality, how many
nodes are noisy): `best_for_pattern`, chosen on one split and scored on another.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from admn_ros.core.controller import forced_slots
from admn_ros.core.policies import count_splits, split_mask
from admn_ros.train.runner import Runner


def split_candidates(num_modalities: int, depth: int, budget: int,
                     low: list[int] | None = None) -> list[Tensor]:
    """bool [M, D] masks, one per block-count split of `budget`."""
    return [split_mask(s, depth, low) for s in count_splits(num_modalities, depth, budget, low)]


def num_masks(num_modalities: int, depth: int, budget: int, low: list[int] | None = None) -> int:
    """How many masks have every modality's `low` blocks on and `budget` blocks in all."""
    forced = sum(low) if low is not None else num_modalities
    return math.comb(num_modalities * depth - forced, budget - forced) if budget >= forced else 0


def exhaustive_candidates(num_modalities: int, depth: int, budget: int,
                          low: list[int] | None = None) -> list[Tensor]:
    """Every bool [M, D] mask with every modality's `low` blocks on and `budget` in all."""
    forced = forced_slots(num_modalities, depth, min_blocks=low)  # [M*D]
    free = (~forced).nonzero().flatten().tolist()
    out = []
    for chosen in itertools.combinations(free, budget - int(forced.sum())):
        mask = forced.clone()
        mask[list(chosen)] = True
        out.append(mask.view(num_modalities, depth))
    return out


def noise_pattern(sigma: Tensor, noisy_at: float = 0.5) -> Tensor:
    """Pattern id [B] of normalised sigmas [B, S, M]: per modality, the number of nodes whose
    sigma is >= `noisy_at` of the modality's largest, as the digits of a base S + 1 number."""
    counts = (sigma >= noisy_at).long().sum(1)  # [B, M]
    base = sigma.shape[1] + 1
    digits = base ** torch.arange(counts.shape[1] - 1, -1, -1)  # [M]
    return (counts * digits).sum(-1)


class AllocationScores:
    """Per budget: the error sum of every candidate mask (overall and per noise pattern) and
    the per-sample best error."""

    def __init__(self, candidates: dict[int, list[Tensor]]) -> None:
        self.candidates = {b: c for b, c in candidates.items() if c}
        self.sums = {b: torch.zeros(len(c), dtype=torch.float64)
                     for b, c in self.candidates.items()}
        self.oracle_sum = dict.fromkeys(self.candidates, 0.0)
        # budget -> noise pattern -> (error sum per candidate [C], samples)
        self.pattern_sums: dict[int, dict[int, tuple[Tensor, int]]] = {
            b: {} for b in self.candidates}
        self.count = 0

    @torch.no_grad()
    def add(self, runner: Runner, inputs: dict[str, Tensor], target: Tensor,
            pattern: Tensor | None = None) -> None:
        """Score every candidate on one batch: inputs `{m: [B, S, C, H, W]}`, target [B, 2],
        optional `noise_pattern` ids [B]."""
        b = len(target)
        for budget, masks in self.candidates.items():
            errors = torch.stack([(runner(inputs, mask.expand(b, -1, -1)).mean - target)
                                  .norm(dim=-1) for mask in masks])  # [num_masks, B]
            self.sums[budget] += errors.sum(1).double()
            self.oracle_sum[budget] += float(errors.min(0).values.sum())
            if pattern is not None:
                per = self.pattern_sums[budget]
                for p in pattern.unique().tolist():
                    sel = pattern == p
                    total, n = per.get(p, (torch.zeros(len(masks), dtype=torch.float64), 0))
                    per[p] = (total + errors[:, sel].sum(1).double(), n + int(sel.sum()))
        self.count += b

    def best_for_pattern(self, budget: int, min_samples: int) -> dict[int, int]:
        """Noise pattern -> index of its candidate with the lowest mean error, for the
        patterns seen at least `min_samples` times."""
        return {p: int(total.argmin()) for p, (total, n) in
                self.pattern_sums.get(budget, {}).items() if n >= min_samples}

    def choice_error(self, budget: int, choice: dict[int, int], fallback: int) -> float:
        """Mean error when each noise pattern runs its candidate in `choice` (any other
        pattern the candidate `fallback`)."""
        per = self.pattern_sums[budget]
        if not per:
            raise ValueError("choice_error: no noise patterns were added")
        total = sum(float(t[choice.get(p, fallback)]) for p, (t, _) in per.items())
        return round(total / sum(n for _, n in per.values()), 2)

    def index(self, budget: int, mask: Tensor) -> int:
        """Position of a candidate mask (bool [M, D]) among `budget`'s candidates."""
        key = mask.numpy().tobytes()
        for i, cand in enumerate(self.candidates.get(budget, [])):
            if cand.numpy().tobytes() == key:
                return i
        raise ValueError(f"mask: expected one of the {len(self.candidates.get(budget, []))} "
                         f"candidates at L={budget}, got {mask.int().tolist()}")

    def mean_error(self, budget: int, mask: Tensor) -> float:
        """Mean error of one candidate mask (bool [M, D]) at `budget` over the samples added."""
        i = self.index(budget, mask)
        return round(float(self.sums[budget][i]) / max(1, self.count), 2)

    def result(self) -> dict[str, dict]:
        """`{"<budget>": {"masks", "oracle_cm", "best_static": {"blocks", "error_cm"}}}`;
        `blocks`: the active block indices of each modality."""
        if not self.count:
            return {}
        out = {}
        for budget, masks in self.candidates.items():
            best = int(self.sums[budget].argmin())
            blocks = [row.nonzero().flatten().tolist() for row in masks[best]]
            out[str(budget)] = {
                "masks": len(masks),
                "oracle_cm": round(self.oracle_sum[budget] / self.count, 2),
                "best_static": {"blocks": blocks,
                                "error_cm": round(float(self.sums[budget][best]) / self.count,
                                                  2)}}
        return out
