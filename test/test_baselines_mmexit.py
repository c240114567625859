"""MMExit: joint training, threshold direction, real early exit, knob and budget errors."""

from __future__ import annotations

import dataclasses
import itertools
import math

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

from admn_ros.core.baselines import MMExit
from admn_ros.core.baselines.common import prefix_mask

model_fixture_ = model_fixture(MMExit)  # the `model` of the tests below


def test_training_loss_falls() -> None:
    m = seeded(MMExit, {"exit_weights": [1.0, 1.0, 2.0, 4.0]}).train()
    x, _, t = tiny_batch(m.model_cfg)
    losses = train_losses(m, lambda: m.loss(m(x, None, 30.0), t))
    assert losses[-1] < losses[0]


def test_exit_d_is_the_admn_path(model: MMExit) -> None:
    # zero depth embedding at init: threshold 0 -> every sample takes the last exit = ADMN
    x, _, _ = tiny_batch(model.model_cfg)
    with torch.no_grad():
        out = model(x, None, 0.0)
        ref = model.model(x)
    assert bool((out.exit == 3).all()) and bool(out.mask.all())
    torch.testing.assert_close(out.pred.mean, ref.mean)


def test_higher_threshold_earlier_exits(model: MMExit) -> None:
    x, _, _ = tiny_batch(model.model_cfg, batch=6)
    with torch.no_grad():
        model.train()
        std = model(x, None, 0.0).exit_preds
        model.eval()
        levels = sorted({float(v) for p in std for v in
                         (p.covariance.diagonal(dim1=-2, dim2=-1).sum(-1) / 2).sqrt()})
        knobs = [0.0, *levels, math.inf]
        flops = [float(model(x, None, k).flops.mean()) for k in knobs]
    assert all(a >= b for a, b in itertools.pairwise(flops))
    assert flops[0] > flops[-1] == pytest.approx(float(model.exit_flops[0]))


def test_eval_early_exit_matches_all_exits_and_skips(model: MMExit) -> None:
    x, _, _ = tiny_batch(model.model_cfg, batch=5)
    with torch.no_grad():
        model.train()
        a = model(x, None, 49.8)
        model.eval()
        with count_block_calls(model.model.backbones) as calls:
            b = model(x, None, 49.8)
    assert torch.equal(a.exit, b.exit)
    torch.testing.assert_close(a.pred.mean, b.pred.mean, atol=1e-4, rtol=1e-4)
    deepest = int(b.exit.max()) + 1  # exit_depths = 1..D
    assert calls.get(("rgb", deepest - 1), 0) == 1 and ("rgb", deepest) not in calls


def avg_pooled_mmexit() -> MMExit:
    """MMExit on backbones that pool the mean of the patch tokens (the demo model's
    `global_pool: avg`), not the CLS token."""
    cfg = tiny_cfg()
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, global_pool="avg"))
    torch.manual_seed(0)
    return MMExit(cfg).eval()


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_prefix_features_equal_truncated_backbone(model: MMExit, pool: str) -> None:
    from admn_ros.core.baselines.common import prefix_features
    vit = (model if pool == "token" else avg_pooled_mmexit()).model.backbones["depth"]
    assert vit.global_pool == pool
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        f = prefix_features(vit, x, [1, 3])
        torch.testing.assert_close(f[:, 1], vit(x, prefix_mask(4, 3)))


def test_last_exit_is_the_admn_path_with_avg_pooled_backbones() -> None:
    m = avg_pooled_mmexit()
    x, _, _ = tiny_batch(m.model_cfg)
    with torch.no_grad():
        torch.testing.assert_close(m(x, None, 0.0).pred.mean, m.model(x).mean)


@pytest.mark.parametrize("knob", [-1.0, float("nan"), "high"])
def test_bad_threshold(model: MMExit, knob: float) -> None:
    x, _, _ = tiny_batch(model.model_cfg, batch=2)
    with pytest.raises(ValueError, match=r"threshold_cm: expected a value in \[0.0, inf\]"):
        model(x, None, knob)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="exit_depths: expected the last exit at the full"):
        MMExit(tiny_cfg(), {"exit_depths": [1, 2]})
    with pytest.raises(ValueError, match="exit_weights"):
        MMExit(tiny_cfg(), {"exit_weights": [1.0]})
    with pytest.raises(ValueError, match="uncertainty"):
        MMExit(tiny_cfg(), {"uncertainty": "entropy"})
