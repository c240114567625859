"""M2SN: two-stage training, lambda direction, real skipping at eval, tau schedule, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_baselines_helpers import (  # noqa: F401
    count_block_calls,
    model_fixture,
    seeded,
    single_thread,
    tiny_batch,
    tiny_cfg,
    train_losses,
)

from admn_ros.core.baselines import M2SN, anneal_tau
from admn_ros.core.baselines.m2sn import LAM_MAX

model_fixture_ = model_fixture(M2SN)  # the `model` of the tests below


def test_training_loss_falls() -> None:
    m = seeded(M2SN).train()
    x, lr, t = tiny_batch(m.model_cfg)
    stage1 = train_losses(m, lambda: m.pretrain_loss(m(x, lr), t))
    assert stage1[-1] < stage1[0]
    g = torch.Generator().manual_seed(0)
    step = iter(range(100))
    stage2 = train_losses(
        m, lambda: m.loss(m(x, lr, 0.1, tau=m.tau_at(next(step), 8), generator=g), t))
    assert stage2[-1] < stage2[0]


def test_training_with_lambda_lowers_expected_cost() -> None:
    m = seeded(M2SN, {"lam_in_decision": False}).train()
    x, lr, t = tiny_batch(m.model_cfg)

    def soft_cost() -> float:
        with torch.no_grad():
            w = m.nav_logits(lr).softmax(-1)
            return float((w * (m.option_flops / m.full_flops).float()).sum((1, 2)).mean())

    before = soft_cost()
    train_losses(m, lambda: m.loss(m(x, lr, 5.0, tau=1.0, sample=False), t))
    assert soft_cost() < before


def test_eval_runs_only_the_chosen_prefix(model: M2SN) -> None:
    x, lr, _ = tiny_batch(model.model_cfg, batch=3)
    with count_block_calls(model.model.backbones) as calls, torch.no_grad():
        out = model(x, lr, LAM_MAX)
    assert bool((out.choice == 0).all())  # the earliest shortcut everywhere
    assert bool(out.mask[..., 0].all()) and not bool(out.mask[..., 1:].any())
    assert set(calls) == {(m, 0) for m in model.model_cfg.modalities}


def test_hard_train_forward_matches_eval(model: M2SN) -> None:
    x, lr, _ = tiny_batch(model.model_cfg)
    hard = M2SN(tiny_cfg(), {"hard": True})
    hard.load_state_dict(model.state_dict())
    with torch.no_grad():
        a = hard.train()(x, lr, 1.0, sample=False)
        b = hard.eval()(x, lr, 1.0)
    assert torch.equal(a.choice, b.choice)
    torch.testing.assert_close(a.pred.mean, b.pred.mean, atol=1e-4, rtol=1e-4)


def test_tau_schedule() -> None:
    for kind in ("exponential", "linear", "cosine"):
        taus = [anneal_tau(s, 10, 5.0, 0.5, kind) for s in range(12)]
        assert taus[0] == pytest.approx(5.0) and taus[10] == pytest.approx(0.5) == taus[11]
        assert all(a >= b for a, b in itertools.pairwise(taus))
    with pytest.raises(ValueError, match="schedule"):
        anneal_tau(0, 10, 5.0, 0.5, "step")


@pytest.mark.parametrize(("kw", "msg"), [({"knob": -1.0}, r"lam: expected a value in \[0.0"),
                                         ({"tau": 0.0}, r"tau: expected a value in \(0"),
                                         ({"tau": -2.0}, r"tau: expected a value in")])
def test_bad_knobs(model: M2SN, kw: dict, msg: str) -> None:
    x, lr, _ = tiny_batch(model.model_cfg, batch=2)
    with pytest.raises(ValueError, match=msg):
        model(x, lr, **kw)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="shortcut_depths"):
        M2SN(tiny_cfg(), {"shortcut_depths": [2, 4]})
    with pytest.raises(ValueError, match="tau_schedule"):
        M2SN(tiny_cfg(), {"tau_schedule": "step"})
