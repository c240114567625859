"""Controller: exactly L blocks with block 0 on, straight-through gradients, heads, budgets."""

from __future__ import annotations

import pytest
import torch
from test_core_helpers import rand_inputs, tiny_cfg

from admn_ros.core.controller import (
    EXCLUDED_LOGIT,
    Controller,
    forced_slots,
    gumbel_top_l,
)
from admn_ros.core.model import ADMN


def lowres(cfg, batch=2, seed=0):
    return rand_inputs(cfg, batch, size=cfg.controller.img_size, seed=seed)


@pytest.mark.parametrize("budget_token", [False, True])
def test_exactly_l_active_for_every_budget(budget_token: bool) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(budget_token=budget_token)
    ctrl = Controller(cfg)
    x = lowres(cfg)
    for train in (True, False):
        ctrl.train(train)
        for budget in range(cfg.num_modalities, cfg.total_blocks + 1):
            out = ctrl(x, budget)
            assert out.mask.shape == (2, 3, 4)
            assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
            assert out.mask.sum((1, 2)).tolist() == [budget, budget]
            assert bool((out.mask[:, :, 0] == 1).all())


def test_per_sample_budget_tensor() -> None:
    cfg = tiny_cfg(budget_token=True)
    ctrl = Controller(cfg).eval()
    budget = torch.tensor([3, 7, 12])
    out = ctrl(lowres(cfg, batch=3), budget)
    assert out.mask.sum((1, 2)).tolist() == [3, 7, 12]


def test_eval_is_deterministic_top_l() -> None:
    cfg = tiny_cfg()
    ctrl = Controller(cfg).eval()
    x = lowres(cfg)
    a, b = ctrl(x, 6), ctrl(x, 6)
    torch.testing.assert_close(a.mask, b.mask)
    free = a.logits.masked_fill(forced_slots(3, 4), -float("inf"))
    top = free.topk(6 - 3, dim=1).indices
    expect = torch.zeros_like(a.logits).scatter_(1, top, 1.0) + forced_slots(3, 4).float()
    torch.testing.assert_close(a.mask.flatten(1), expect)


def test_seeded_gumbel_sampling() -> None:
    cfg = tiny_cfg()
    ctrl = Controller(cfg).train()
    x = lowres(cfg)
    a = ctrl(x, 6, generator=torch.Generator().manual_seed(1)).mask
    b = ctrl(x, 6, generator=torch.Generator().manual_seed(1)).mask
    torch.testing.assert_close(a, b)


def test_straight_through_gradients_reach_logits_and_controller() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model, ctrl = ADMN(cfg).eval(), Controller(cfg).train()
    for p in model.parameters():
        p.requires_grad_(False)
    x = rand_inputs(cfg)
    out = ctrl(lowres(cfg), 6)
    out.logits.retain_grad()
    loss = model.loss(model(x, out.mask), torch.tensor([[10.0, 20.0], [-50.0, 0.0]]))
    loss.backward()
    assert out.logits.grad is not None and bool(out.logits.grad.abs().sum() > 0)
    assert all(p.grad is not None for p in ctrl.stems["rgb"].parameters())


def test_gumbel_top_l_finite_with_extreme_logits() -> None:
    forced = forced_slots(3, 4)
    logits = torch.tensor([[1e6, -1e6, 0.0, 3.0] * 3], requires_grad=True)
    mask = gumbel_top_l(logits, torch.tensor([5]), forced, generator=torch.Generator())
    mask.sum().backward()
    assert torch.isfinite(mask).all() and torch.isfinite(logits.grad).all()
    assert mask.sum().item() == 5
    assert EXCLUDED_LOGIT < -1e3


def test_noise_and_ae_heads() -> None:
    cfg = tiny_cfg(ae_head=True)
    ctrl = Controller(cfg)
    x = lowres(cfg)
    out = ctrl(x, 5)
    assert out.noise.shape == (2, 3) and out.noise_per_node.shape == (2, 3, 3)
    assert bool(((out.noise >= 0) & (out.noise <= 1)).all())
    assert out.reconstruction["rgb"].shape == x["rgb"].shape
    loss = ctrl.noise_loss(out, torch.rand(2, 3, 3)) + ctrl.reconstruction_loss(out, x)
    loss.backward()
    assert ctrl.stems["depth"].proj.weight.grad is not None


@pytest.mark.parametrize("budget", [2, 13, -1, 2.5, torch.tensor([3, 13])])
def test_bad_budgets(budget) -> None:
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="budget"):
        Controller(cfg)(lowres(cfg), budget)


def test_budget_token_range() -> None:
    cfg = tiny_cfg(budget_token=True, budget_min=4, budget_max=8)
    ctrl = Controller(cfg)
    ctrl(lowres(cfg), 8)
    with pytest.raises(ValueError, match="4 <= L <= 8"):
        ctrl(lowres(cfg), 9)


def test_bad_lowres_size() -> None:
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="expected \\[B, 3, 3, 8, 8\\]"):
        Controller(cfg)(rand_inputs(cfg, size=16), 5)


def test_noise_prior_moves_blocks_off_a_judged_noisy_modality() -> None:
    cfg = tiny_cfg(noise_prior=1.0)
    ctrl = Controller(cfg).eval()
    x = lowres(cfg)
    with torch.no_grad():
        ctrl.noise_head[-1].bias.fill_(20.0)  # every view judged fully noisy
        ctrl.noise_prior.zero_()
        ctrl.noise_prior[0] = 100.0  # ... and that costs rgb's slots (modality 0) dearly
    out = ctrl(x, 7)
    assert torch.allclose(out.noise, torch.ones(2, 3))
    assert out.mask[:, 0].sum(-1).tolist() == [1.0, 1.0]  # rgb keeps only its forced block 0
    # the prior learns from the task loss; the noise head does not (the prior reads it detached)
    ctrl.train()
    ctrl(x, 7, generator=torch.Generator().manual_seed(0)).mask.mul(torch.rand(2, 3, 4)).sum() \
        .backward()
    assert ctrl.noise_prior.grad is not None and ctrl.noise_prior.grad.abs().sum() > 0
    assert ctrl.noise_head[-1].weight.grad is None


def test_noise_prior_needs_a_noise_head() -> None:
    with pytest.raises(ValueError, match=r"controller\.noise_prior"):
        tiny_cfg(noise_prior=1.0, noise_head=False)
