"""The main network as evaluation calls it: `runner(inputs, mask [B, M, D] bool) ->
GaussianPrediction`. The default `CachingRunner` memoises each modality's backbone features per
distinct block row within a batch (policies and allocation bounds share rows)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from admn_ros.core.model import ADMN, GaussianPrediction

Runner = Callable[[dict[str, Tensor], Tensor], GaussianPrediction]


class CachingRunner:
    """`runner(inputs, mask [B, M, D] bool)`: real skipping, one backbone call per distinct
    (modality, row) per batch; features reused across policies until `new_batch()`."""

    def __init__(self, model: ADMN) -> None:
        self.model = model
        self.cache: dict[tuple[str, bytes], tuple[Tensor, Tensor]] = {}

    def new_batch(self) -> None:
        self.cache.clear()

    @torch.no_grad()
    def __call__(self, inputs: dict[str, Tensor], mask: Tensor) -> GaussianPrediction:
        feats = {}
        for i, m in enumerate(self.model.cfg.modalities):
            x = inputs[m]
            b, s = x.shape[:2]
            out = None
            rows, inverse = torch.unique(mask[:, i], dim=0, return_inverse=True)
            for g, row in enumerate(rows):
                key = (m, row.numpy().tobytes())
                idx = (inverse == g).nonzero().flatten()
                have, store = self.cache.get(key, (torch.zeros(b, dtype=torch.bool), None))
                need = idx[~have[idx]]
                if len(need):
                    f = self.model.encode(m, x[need].flatten(0, 1), row).unflatten(0, (-1, s))
                    if store is None:
                        store = f.new_zeros(b, s, f.shape[-1])
                    store[need] = f
                    have = have.clone()
                    have[need] = True
                    self.cache[key] = (have, store)
                if out is None:
                    out = store.new_empty(b, s, store.shape[-1])
                out[idx] = store[idx]
            feats[m] = out
        return self.model.fuse(feats)


def noise_generator(seed: int, kind_index: int, repeat: int) -> torch.Generator:
    """The corruption draws of one noise setting and repeat: every policy row (and the
    competing methods, on repeat 0) sees the same corrupted inputs."""
    return torch.Generator().manual_seed(seed + 1009 * kind_index + 7919 * repeat)


def eval_order(n: int, limit: int | None) -> Tensor:
    """Indices of `limit` frames evenly spaced over a split of n (all: None or >= n)."""
    m = n if limit is None else min(n, limit)
    return torch.linspace(0, n - 1, m).round().long().unique()
