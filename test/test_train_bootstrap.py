"""Paired block bootstrap: known answers on tiny synthetic cases."""

from __future__ import annotations

import math

import pytest
import torch

from admn_ros.train.bootstrap import paired_block_bootstrap, verdict


def test_constant_difference_gives_a_point_interval() -> None:
    a = torch.linspace(10, 50, 101)
    ci = paired_block_bootstrap(a + 2.5, a, block=7, samples=500)
    assert ci == {"diff_cm": 2.5, "lo": 2.5, "hi": 2.5}
    assert verdict(ci) == "worse"


def test_iid_interval_matches_the_normal_one() -> None:
    """Block 1 on i.i.d. differences: mean +- 1.96 sd / sqrt(n)."""
    gen = torch.Generator().manual_seed(0)
    n = 4000
    d = torch.randn(n, generator=gen, dtype=torch.float64) + 0.3
    ci = paired_block_bootstrap(d, torch.zeros(n, dtype=torch.float64), block=1, samples=4000)
    half = 1.96 * float(d.std()) / math.sqrt(n)
    assert ci["diff_cm"] == pytest.approx(float(d.mean()), abs=1e-3)
    assert (ci["hi"] - ci["lo"]) / 2 == pytest.approx(half, rel=0.1)
    assert verdict(ci) == "worse"  # 0.3 +- 0.03


def test_blocks_widen_the_interval_of_correlated_frames() -> None:
    """Each value repeated k times: only n / k independent draws, so the true half-width is
    sqrt(k) x the i.i.d. one; blocks of k find it, single frames do not."""
    gen = torch.Generator().manual_seed(1)
    k, m = 25, 200
    d = torch.randn(m, generator=gen, dtype=torch.float64).repeat_interleave(k)
    zero = torch.zeros_like(d)
    true_half = 1.96 * float(d[::k].std()) / math.sqrt(m)
    blocked = paired_block_bootstrap(d, zero, block=k, samples=3000)
    single = paired_block_bootstrap(d, zero, block=1, samples=3000)
    assert (blocked["hi"] - blocked["lo"]) / 2 == pytest.approx(true_half, rel=0.2)
    assert (single["hi"] - single["lo"]) / 2 < 0.4 * true_half


def test_noise_seeds_are_averaged_per_frame_and_bad_input_is_an_error() -> None:
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    ci = paired_block_bootstrap(a, torch.full_like(a, 2.0), block=1, samples=200)
    assert ci["diff_cm"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        paired_block_bootstrap(torch.zeros(3), torch.zeros(4), block=1)
    with pytest.raises(ValueError, match="block >= 1"):
        paired_block_bootstrap(torch.zeros(3), torch.zeros(3), block=0)
    assert verdict({"diff_cm": -0.1, "lo": -0.5, "hi": 0.2}) == "no clear difference"
