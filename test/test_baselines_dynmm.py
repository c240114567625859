"""DynMM: training, knob direction, real skipping at eval, knob and budget errors."""

from __future__ import annotations

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

from admn_ros.core.baselines import DynMM
from admn_ros.core.baselines.dynmm import LAM_MAX

model_fixture_ = model_fixture(DynMM)  # the `model` of the tests below


def test_output_shapes_and_default_experts(model: DynMM) -> None:
    x, lr, _ = tiny_batch(model.model_cfg)
    with torch.no_grad():
        out = model(x, lr, 0.1)
    assert len(model.experts) == 7  # every non-empty subset of 3 modalities
    assert out.pred.mean.shape == (4, 2) and out.mask.shape == (4, 3, 4)
    assert out.fusion_keep.shape == (4, 1) and out.flops.shape == (4,)
    # an expert runs its modalities at full depth and nothing of the others
    rows = model.expert_masks[out.expert]
    assert torch.equal(out.mask, rows[:, :, None].expand(-1, -1, 4))


def test_training_loss_falls() -> None:
    m = seeded(DynMM).train()
    x, lr, t = tiny_batch(m.model_cfg)
    g = torch.Generator().manual_seed(0)
    stage1 = train_losses(m, lambda: m.pretrain_loss(m(x, lr, random_gate=True, generator=g), t))
    assert stage1[-1] < stage1[0]
    stage2 = train_losses(m, lambda: m.loss(m(x, lr, 0.05, sample=False), t))
    assert stage2[-1] < stage2[0]


def test_training_with_lambda_lowers_expected_cost() -> None:
    # paper-faithful mode: lambda acts only through the resource loss
    m = seeded(DynMM, {"lam_in_decision": False}).train()
    x, lr, t = tiny_batch(m.model_cfg)
    for p in m.model.parameters():
        p.requires_grad_(False)

    def soft_cost() -> float:
        with torch.no_grad():
            ex, fu = m.gate_logits(lr)
            c = ex.softmax(-1) @ (m.expert_flops / m.full_flops).float()
            return float((c + fu.softmax(-1)[..., 1].sum(1) * m.fusion_block_flops
                          / m.full_flops).mean())

    before = soft_cost()
    train_losses(m, lambda: m.loss(m(x, lr, 5.0, sample=False), t))
    assert soft_cost() < before


def test_eval_runs_only_the_chosen_expert(model: DynMM) -> None:
    x, lr, _ = tiny_batch(model.model_cfg, batch=3)
    with count_block_calls(model.model.backbones) as calls, torch.no_grad():
        out = model(x, lr, LAM_MAX)
    used = model.expert_masks[out.expert].any(0)
    for i, m in enumerate(model.model_cfg.modalities):
        assert (calls.get((m, 0), 0) > 0) == bool(used[i]), m


def test_train_and_eval_forward_agree(model: DynMM) -> None:
    x, lr, _ = tiny_batch(model.model_cfg)
    with torch.no_grad():
        model.train()
        a = model(x, lr, 0.2, sample=False)
        model.eval()
        b = model(x, lr, 0.2)
    assert torch.equal(a.expert, b.expert)
    torch.testing.assert_close(a.pred.mean, b.pred.mean, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("lam", [-0.1, float("nan"), 2 * LAM_MAX, True])
def test_bad_lambda(model: DynMM, lam: float) -> None:
    x, lr, _ = tiny_batch(model.model_cfg, batch=2)
    with pytest.raises(ValueError, match=r"lam: expected a value in \[0.0, 10000.0\]"):
        model(x, lr, lam)


def test_bad_experts_config() -> None:
    with pytest.raises(ValueError, match=r"experts\[0\]"):
        DynMM(tiny_cfg(), {"experts": [["rgb", "lidar"]]})
    with pytest.raises(ValueError, match="unknown config key"):
        DynMM(tiny_cfg(), {"lambda": 0.1})


def test_forced_absent_is_admn_with_the_forced_blocks_of_the_other_modalities() -> None:
    """`absent: forced`: an expert runs its modalities at full depth and the others' forced
    blocks (block 0 here), exactly the ADMN model under that mask, and pays for them."""
    m = seeded(DynMM, {"absent": "forced", "fusion_gating": False}).eval()
    zero = seeded(DynMM, {"fusion_gating": False})
    x, lr, _ = tiny_batch(m.model_cfg)
    bias = m.gate_head[-1].bias  # [E + 2F]: a large bias picks one expert for every input
    with torch.no_grad():
        for e in range(len(m.experts)):
            bias.zero_()
            bias[e] = 1e3
            out = m(x, lr, 0.0)
            assert (out.expert == e).all()
            assert out.mask[:, :, 0].all()  # every modality keeps block 0
            off = ~m.expert_masks[e]  # [M]
            assert out.mask[:, off, 1:].sum() == 0 and out.mask[:, ~off].all()
            torch.testing.assert_close(out.pred.mean, m.model(x, out.mask).mean)
        bias.zero_()
    single = [i for i, e in enumerate(m.experts) if len(e) == 1]
    assert bool((m.expert_flops[single] > zero.expert_flops[single]).all())
    full = m.experts.index(list(m.model_cfg.modalities))
    assert m.expert_flops[full] == zero.expert_flops[full]
    m.train()  # training mixes every expert's prediction: the same forced features
    with torch.no_grad():
        a = m(x, lr, 0.3, sample=False)
    m.eval()
    with torch.no_grad():
        b = m(x, lr, 0.3)
    torch.testing.assert_close(a.pred.mean, b.pred.mean, atol=1e-4, rtol=1e-4)
