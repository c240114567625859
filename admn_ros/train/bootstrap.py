"""Paired block-bootstrap confidence intervals for the difference of two policies' errors.

Both policies run on the same test frames (and the same corruption draws), so the comparison is
paired: per frame d_i = error_a - error_b (averaged over the noise seeds first). Neighbouring
frames of a recording are correlated, so frames are resampled in contiguous blocks (circular
block bootstrap: block starts drawn uniformly, blocks wrap around the end) and the interval is
the percentile interval of the resampled mean difference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def paired_block_bootstrap(a: Tensor, b: Tensor, block: int, samples: int = 2000,
                           level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of `a - b` and its `level` percentile interval. a, b: [N] per-frame errors, or
    [R, N] (R noise seeds, averaged per frame first). ValueError on mismatched or empty input."""
    if a.shape != b.shape or a.dim() not in (1, 2) or a.shape[-1] == 0:
        raise ValueError(f"paired errors: expected two equal shapes [N] or [R, N] with N > 0, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if block < 1 or samples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap: expected block >= 1, samples >= 1, 0 < level < 1, got "
                         f"{block}, {samples}, {level}")
    d = (a.double() - b.double())
    if d.dim() == 2:
        d = d.mean(0)
    n = len(d)
    block = min(block, n)
    per = math.ceil(n / block)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(n, (samples, per), generator=gen)
    idx = (starts[:, :, None] + torch.arange(block)).flatten(1)[:, :n] % n  # [samples, n]
    means = d[idx].mean(1)
    alpha = (1.0 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([alpha, 1.0 - alpha], dtype=means.dtype))
    return {"diff_cm": round(float(d.mean()), 3), "lo": round(float(lo), 3),
            "hi": round(float(hi), 3)}


def verdict(ci: dict[str, float]) -> str:
    """`a better` / `a worse` / `no clear difference` (errors: lower is better)."""
    if ci["hi"] < 0:
        return "better"
    if ci["lo"] > 0:
        return "worse"
    return "no clear difference"
