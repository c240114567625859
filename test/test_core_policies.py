"""Allocation policies: one interface, exact budgets, documented allocations."""

from __future__ import annotations

import pytest
import torch
from test_core_helpers import rand_inputs, tiny_cfg

from admn_ros.core.controller import Controller
from admn_ros.core.policies import count_splits, make_policy, split_mask

CFG = tiny_cfg()
LOW = rand_inputs(CFG, batch=2, size=8)


@pytest.mark.parametrize("name", ["learned", "naive", "random", "single:rgb", "single:radar"])
def test_policies_exact_budget(name: str) -> None:
    pol = make_policy(name, CFG, controller=Controller(CFG), seed=1)
    hi = CFG.total_blocks if not name.startswith("single") else CFG.num_modalities + 3
    for budget in range(3, hi + 1):
        mask = pol(LOW, budget)
        assert mask.dtype == torch.bool and mask.shape == (2, 3, 4)
        assert mask.sum((1, 2)).tolist() == [budget, budget]
        assert bool(mask[:, :, 0].all())


def test_upper_bound_all_blocks() -> None:
    assert bool(make_policy("upper_bound", CFG)(LOW, 5).all())


def test_naive_split() -> None:
    mask = make_policy("naive", CFG)(LOW, 8)[0]
    assert mask.sum(1).tolist() == [3, 3, 2]
    # the paper's every-other allocation: even blocks first, then the odd ones
    assert mask[2].tolist() == [True, False, True, False]
    assert mask[0].tolist() == [True, True, True, False]


def test_count_splits_cover_every_split_once() -> None:
    # 3 modalities x depth 4, budget 8: counts in 1..4 summing to 8
    splits = count_splits(3, 4, 8)
    assert len(splits) == len(set(splits)) == 12
    assert all(sum(s) == 8 and min(s) >= 1 and max(s) <= 4 for s in splits)
    assert (3, 3, 2) in splits and (4, 3, 1) in splits and (4, 4, 0) not in splits
    assert count_splits(3, 4, 3) == [(1, 1, 1)] and count_splits(3, 4, 12) == [(4, 4, 4)]
    assert count_splits(3, 4, 13) == [] and count_splits(3, 4, 2) == []


def test_split_mask_every_other_order() -> None:
    mask = split_mask((1, 2, 3), 4)
    assert mask.tolist() == [[True, False, False, False], [True, False, True, False],
                             [True, True, True, False]]
    naive = make_policy("naive", CFG)(LOW, 8)[0]
    assert torch.equal(naive, split_mask((3, 3, 2), 4))


def test_splits_follow_min_blocks() -> None:
    """min_blocks 0 allows a zero count; min_blocks 2 takes blocks 0..1 first (the forced
    ones), then every other block, so the mask always passes the model's forced-block check."""
    assert (0, 4, 4) in count_splits(3, 4, 8, low=[0, 0, 0])
    assert all(s[2] >= 2 for s in count_splits(3, 4, 8, low=[0, 1, 2]))
    mask = split_mask((0, 1, 3), 4, low=[0, 1, 2])
    assert mask.tolist() == [[False] * 4, [True, False, False, False],
                             [True, True, True, False]]
    import dataclasses

    from admn_ros.core.model import check_forced

    cfg = dataclasses.replace(CFG, min_blocks={"rgb": 0, "depth": 1, "radar": 2})
    for name in ("naive", "single:rgb"):
        check_forced(make_policy(name, cfg)(LOW, 5), cfg)  # no ValueError


def test_single_allocation_and_limit() -> None:
    pol = make_policy("single:depth", CFG)
    mask = pol(LOW, 5)[0]
    assert mask.sum(1).tolist() == [1, 3, 1]
    assert mask[1].tolist() == [True, True, True, False]  # 0, 2, then 1
    with pytest.raises(ValueError, match="L <= 6"):
        pol(LOW, 7)


def test_random_seeded_and_uniform() -> None:
    a = make_policy("random", CFG, seed=4)(rand_inputs(CFG, batch=200, size=8), 6)
    b = make_policy("random", CFG, seed=4)(rand_inputs(CFG, batch=200, size=8), 6)
    assert torch.equal(a, b)
    # each of the 9 free slots is on with probability 3/9
    rates = a[:, :, 1:].float().mean(0)
    assert bool(((rates - 3 / 9).abs() < 0.12).all())


def test_per_sample_budget() -> None:
    mask = make_policy("naive", CFG)(LOW, torch.tensor([3, 12]))
    assert mask.sum((1, 2)).tolist() == [3, 12]


@pytest.mark.parametrize("name", ["bogus", "single:audio", "learned"])
def test_bad_policy_names(name: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        make_policy(name, CFG)


@pytest.mark.parametrize("budget", [2, 13])
def test_bad_budget(budget: int) -> None:
    with pytest.raises(ValueError, match="3 <= L <= 12"):
        make_policy("naive", CFG)(LOW, budget)
