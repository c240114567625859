"""The main network as evaluation calls it: `runner(inputs, mask [B, M, D] bool) ->
GaussianPrediction`. The default `CachingRunner` shares backbone work within a batch: a sample's
tokens after each prefix of its active blocks are kept, so masks that agree on their first
blocks (every-other orders at growing budgets, the allocation bounds' candidates, per-sample
controller masks) run those blocks once."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from admn_ros.core.model import ADMN, GaussianPrediction, check_forced_row

Runner = Callable[[dict[str, Tensor], Tensor], GaussianPrediction]
Key = tuple[str, tuple[int, ...]]  # (modality, active block indices in execution order)


class CachingRunner:
    """`runner(inputs, mask [B, M, D] bool)`: real skipping; per modality and sample, the tokens
    after every prefix of the active blocks and the pooled features of every full row are
    reused across calls until `new_batch()` (inputs must stay the same batch until then)."""

    def __init__(self, model: ADMN) -> None:
        self.model = model
        self.tokens: dict[Key, tuple[Tensor, Tensor]] = {}    # filled [B], tokens [B, S, T, E]
        self.features: dict[Key, tuple[Tensor, Tensor]] = {}  # filled [B], features [B, S, E]

    def new_batch(self) -> None:
        self.tokens.clear()
        self.features.clear()

    @torch.no_grad()
    def __call__(self, inputs: dict[str, Tensor], mask: Tensor) -> GaussianPrediction:
        cfg = self.model.cfg
        feats = {}
        for i, m in enumerate(cfg.modalities):
            x = inputs[m]  # [B, S, C, H, W]
            self.model.backbones[m].check_input(x.flatten(0, 1))
            check_forced_row(mask[:, i], m, cfg.min_blocks_list[i], "mask")
            rows, inverse = torch.unique(mask[:, i], dim=0, return_inverse=True)
            out = None
            for g, row in enumerate(rows):
                idx = (inverse == g).nonzero().flatten()
                f = self._features(m, x, tuple(row.nonzero().flatten().tolist()), idx)
                if out is None:
                    out = f.new_empty(x.shape[0], *f.shape[1:])  # [B, S, E]
                out[idx] = f
            feats[m] = out
        return self.model.fuse(feats)

    def _features(self, m: str, x: Tensor, blocks: tuple[int, ...], idx: Tensor) -> Tensor:
        """Features [n, S, E] of samples `idx` with `blocks` active, running only what no
        earlier call of this batch ran for them."""
        vit = self.model.backbones[m]
        b, s = x.shape[:2]
        need = missing(self.features, (m, blocks), idx)
        if len(need):
            todo = missing(self.tokens, (m, ()), need)
            if len(todo):
                store(self.tokens, (m, ()), todo, vit.embed(x[todo].flatten(0, 1)), b, s)
            for j, block in enumerate(blocks):
                todo = missing(self.tokens, (m, blocks[:j + 1]), need)
                if len(todo):
                    prev = self.tokens[(m, blocks[:j])][1][todo].flatten(0, 1)  # [n*S, T, E]
                    store(self.tokens, (m, blocks[:j + 1]), todo, vit.blocks[block](prev), b, s)
            last = self.tokens[(m, blocks)][1][need].flatten(0, 1)
            store(self.features, (m, blocks), need, vit.pool(last), b, s)
        return self.features[(m, blocks)][1][idx]


def missing(cache: dict[Key, tuple[Tensor, Tensor]], key: Key, idx: Tensor) -> Tensor:
    """The samples of `idx` that `cache[key]` does not hold yet."""
    entry = cache.get(key)
    return idx if entry is None else idx[~entry[0][idx]]


def store(cache: dict[Key, tuple[Tensor, Tensor]], key: Key, idx: Tensor, value: Tensor,
          b: int, s: int) -> None:
    """Put `value` [n*S, ...] (samples `idx`, S nodes each) into `cache[key]` ([B, S, ...])."""
    value = value.unflatten(0, (len(idx), s))
    if key not in cache:
        cache[key] = (torch.zeros(b, dtype=torch.bool), value.new_zeros(b, *value.shape[1:]))
    filled, values = cache[key]
    values[idx] = value
    filled[idx] = True

def noise_generator(seed: int, kind_index: int, repeat: int) -> torch.Generator:
    """The corruption draws of one noise setting and repeat: every policy row (and the
    competing methods, on repeat 0) sees the same corrupted inputs."""
    return torch.Generator().manual_seed(seed + 1009 * kind_index + 7919 * repeat)


def eval_order(n: int, limit: int | None) -> Tensor:
    """Indices of `limit` frames evenly spaced over a split of n (all: None or >= n)."""
    m = n if limit is None else min(n, limit)
    return torch.linspace(0, n - 1, m).round().long().unique()
