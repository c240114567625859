"""LayerDrop mask statistics (Monte-Carlo), ramp, block 0 always kept."""

from __future__ import annotations

import pytest
import torch

from admn_ros.core.layerdrop import LayerDrop


def test_statistics_match_rate_and_full_drop() -> None:
    ld = LayerDrop(3, 8, rate=0.2, full_drop_prob=0.1)
    masks = ld.sample(batch_size=20000, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (20000, 3, 8) and masks.dtype == torch.bool
    assert bool(masks[..., 0].all())
    only_block0 = (masks[..., 1:].sum(-1) == 0).float().mean().item()
    # only block 0: full drop (0.1) or all 7 dropped by the rate (0.9 * 0.2^7)
    assert abs(only_block0 - (0.1 + 0.9 * 0.2**7)) < 0.01
    keep = masks[..., 1:].float().mean().item()
    assert abs(keep - 0.9 * 0.8) < 0.01


def test_batch_mask_shared_and_seeded() -> None:
    ld = LayerDrop(3, 4)
    a = ld.sample(epoch=5, generator=torch.Generator().manual_seed(1))
    b = ld.sample(epoch=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 4) and torch.equal(a, b)


def test_linear_ramp() -> None:
    ld = LayerDrop(3, 4, rate=0.2, ramp_epochs=10)
    assert ld.rate_at(0) == 0.0 and ld.rate_at(5) == pytest.approx(0.1) and ld.rate_at(20) == 0.2
    ld0 = LayerDrop(3, 4, rate=0.2, ramp_epochs=10, full_drop_prob=0.0)
    assert bool(ld0.sample(epoch=0, batch_size=100).all())


def test_full_drop_per_modality() -> None:
    from admn_ros.core.config import load_model_config

    ld = LayerDrop(3, 8, rate=0.0, full_drop_prob=[0.0, 0.5, 1.0])
    masks = ld.sample(batch_size=4000, generator=torch.Generator().manual_seed(0))
    only_block0 = (masks[..., 1:].sum(-1) == 0).float().mean(0)  # [M]
    assert only_block0[0] == 0.0 and abs(only_block0[1] - 0.5) < 0.03 and only_block0[2] == 1.0
    # in a model config: one value for all, or one per modality, every modality named
    cfg = load_model_config({"layerdrop": {"full_drop_prob": {"rgb": 0.2, "depth": 0.2,
                                                              "radar": 0.6}}})
    assert LayerDrop.from_config(cfg).full_drop_prob.flatten().tolist() == \
        pytest.approx([0.2, 0.2, 0.6])
    with pytest.raises(ValueError, match=r"one per modality \['rgb', 'depth', 'radar'\], "
                                         r"got \['radar'\]"):
        load_model_config({"layerdrop": {"full_drop_prob": {"radar": 0.6}}})
    with pytest.raises(ValueError, match="full_drop_prob <= 1"):
        load_model_config({"layerdrop": {"full_drop_prob": {"rgb": 0.2, "depth": 0.2,
                                                            "radar": 1.5}}})


def test_budget_masks_cover_every_budget_and_split() -> None:
    """budget_prob 1: every mask keeps the forced blocks, budgets are uniform over the range,
    and the free blocks' split over modalities is uniform (so "all on one" is as common as
    an even split), unlike per-block dropout."""
    ld = LayerDrop(3, 4, rate=0.2, full_drop_prob=0.1, min_blocks=[1, 0, 1], budget_prob=1.0)
    masks = ld.sample(batch_size=12000, generator=torch.Generator().manual_seed(0))
    assert bool(masks[:, 0, 0].all()) and bool(masks[:, 2, 0].all())
    free = masks.sum((1, 2)) - 2  # [N] blocks beyond the forced ones, 0..10
    share = torch.bincount(free, minlength=11).float() / len(free)
    assert share.shape == (11,) and float((share - 1 / 11).abs().max()) < 0.02
    counts = masks.sum(-1) - torch.tensor([1, 0, 1])  # [N, M] free blocks per modality
    two = counts[free == 2]  # 6 splits of 2 free blocks over 3 modalities, all reachable
    splits = {tuple(c) for c in two.tolist()}
    assert splits == {(2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)}
    all_on_depth = (two == torch.tensor([0, 2, 0])).all(-1).float().mean()
    assert abs(float(all_on_depth) - 1 / 6) < 0.04
    ld.budget_prob = 0.5  # half per-block dropout (deep masks), half budget masks
    mixed = ld.sample(batch_size=4000, generator=torch.Generator().manual_seed(1))
    low = (mixed.sum((1, 2)) <= 4).float().mean()  # <= 2 free blocks
    assert 0.5 * 3 / 11 - 0.03 < float(low) < 0.5 * 3 / 11 + 0.05
    with pytest.raises(ValueError, match="budget_prob"):
        LayerDrop(3, 4, budget_prob=1.5)


@pytest.mark.parametrize("kwargs", [{"rate": 1.0}, {"full_drop_prob": -0.1},
                                    {"full_drop_prob": [0.1, 0.1]}, {"ramp_epochs": -1}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="expected"):
        LayerDrop(3, 4, **kwargs)


def test_masks_drive_the_model_in_both_modes() -> None:
    from test_core_helpers import rand_inputs, tiny_cfg

    from admn_ros.core.model import ADMN

    cfg = tiny_cfg()
    model, ld = ADMN(cfg), LayerDrop.from_config(cfg)
    x = rand_inputs(cfg)
    g = torch.Generator().manual_seed(0)
    skip = model(x, ld.sample(epoch=1, generator=g))  # [M, D] bool: real skipping
    blend = model(x, ld.sample(epoch=1, batch_size=2, generator=g).float())  # [B, M, D]
    assert skip.mean.shape == blend.mean.shape == (2, 2)
