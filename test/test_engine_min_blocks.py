"""Engine and nodes with `min_blocks` 0: a modality given no block at all runs only its stem
(its embedding-only token reaches the fusion) and the result equals the core model's, with and
without the controller overlap; exactly the config's forced blocks are required; the smallest
budget is max(1, sum(min_blocks))."""

from __future__ import annotations

import pytest
import torch
from test_engine_fixtures import masks, tiny_inputs, tiny_modules

from admn_ros.core.model import downsample
from admn_ros.engine import make_backend
from admn_ros.nodes.allocation import Allocator
from admn_ros.nodes.localise import Localiser, active_from_msg

TOL = {"atol": 1e-4, "rtol": 1e-4}
MIXED = {"rgb": 0, "depth": 1, "radar": 2}  # none, block 0, blocks 0..1 forced (depth 3)
LOW = {"rgb": 0, "depth": 0}  # radar keeps block 0: the smallest budget is 1


def assert_pred_close(a, b) -> None:
    torch.testing.assert_close(a.mean, b.mean, **TOL)
    torch.testing.assert_close(a.scale_tril, b.scale_tril, **TOL)


def rgb_block_calls(model) -> tuple[list[int], list]:
    """Views seen by rgb's blocks (one entry per call) and the hook handles."""
    calls: list[int] = []
    handles = [blk.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
               for blk in model.backbones["rgb"].blocks]
    return calls, handles


def test_run_with_a_zero_block_modality_matches_the_core_model():
    model, _ = tiny_modules(min_blocks=MIXED)
    cfg = model.cfg
    engine = make_backend("eager", model, None, device="cpu")
    x = tiny_inputs(cfg, 4, seed=1)
    active = masks(cfg, 4, seed=2)
    active[:2, 0] = False  # rgb switched off for two samples, fully on for one
    active[2, 0] = True
    off = torch.ones(cfg.num_modalities, cfg.depth, dtype=torch.bool)
    off[0] = False  # rgb off for the whole batch
    for mask in (active, off):
        with torch.no_grad():
            ref = model(x, mask)
        assert_pred_close(engine.run(x, mask), ref)
    calls, handles = rgb_block_calls(model)
    try:
        engine.run(x, off)
    finally:
        for h in handles:
            h.remove()
    assert calls == []  # no block of rgb ran: its stem's tokens went straight to the head


@pytest.mark.parametrize("overlap", [True, False])
def test_step_gives_a_modality_zero_blocks_like_the_controller_and_model(overlap):
    model, controller = tiny_modules(min_blocks=MIXED)
    cfg = model.cfg
    with torch.no_grad():  # rgb's slots the least wanted, every other free slot wanted
        controller.logit_head[-1].weight.zero_()
        controller.logit_head[-1].bias.copy_(torch.tensor([-9.0] * 3 + [9.0] * 6))
    engine = make_backend("eager", model, controller, device="cpu", overlap=overlap)
    assert engine.budget_range == (3, 9)
    x = tiny_inputs(cfg, 2, seed=3)
    for budget in (3, 4, 6):  # forced: depth 0, radar 0..1; then the 3 free non-rgb slots
        res = engine.step(x, budget)
        with torch.no_grad():
            out = controller(downsample(x, cfg.controller.img_size), budget, sample=False)
            ref = model(x, res.mask)
        assert torch.equal(res.mask, out.mask.bool())
        assert res.mask[:, 0].sum().item() == 0  # rgb: no block at all
        assert res.mask.sum((1, 2)).tolist() == [budget] * 2
        assert_pred_close(res.prediction, ref)


def test_only_the_configs_forced_blocks_are_required():
    x1 = None
    for min_blocks, drop, what in (({}, (0, 0), "block 0 of rgb"),
                                   (MIXED, (2, 1), r"blocks 0\.\.1 of radar"),
                                   (MIXED, (1, 0), "block 0 of depth")):
        model, _ = tiny_modules(min_blocks=min_blocks)
        engine = make_backend("eager", model, None, device="cpu")
        x1 = tiny_inputs(model.cfg, 1)
        bad = torch.ones(model.cfg.num_modalities, model.cfg.depth, dtype=torch.bool)
        bad[drop] = False
        with pytest.raises(ValueError, match=f"active: expected {what} active"):
            engine.run(x1, bad)
    good = torch.ones(3, 3, dtype=torch.bool)  # the MIXED engine: rgb off, forced blocks on
    good[0], good[2, 2] = False, False
    assert torch.isfinite(engine.run(x1, good).mean).all()


def test_smallest_budget_is_the_sum_of_min_blocks():
    model, controller = tiny_modules(min_blocks=LOW)
    x = tiny_inputs(model.cfg, 1, seed=4)
    for ctl in (None, controller):  # the fallback policy and the learned controller
        engine = make_backend("eager", model, ctl, device="cpu")
        assert engine.budget_range == (1, 9)
        mask = engine.step(x, 1).mask[0]
        assert mask.sum().item() == 1 and bool(mask[2, 0])  # radar's forced block only
        with pytest.raises(ValueError, match="budget"):
            engine.step(x, 0)
    naive = Allocator(model.cfg, None, {}, "naive")
    assert naive.budgets() == list(range(1, 10))
    with pytest.raises(ValueError, match=r"impossible: expected 1 <= L <= 9"):
        naive.check_budget(0)
    shipped_like, _ = tiny_modules()  # min_blocks 1: from 3, as before
    assert Allocator(shipped_like.cfg, None, {}, "naive").budgets() == list(range(3, 10))


def test_localise_accepts_a_zero_block_modality_only_where_min_blocks_allows():
    model, _ = tiny_modules(min_blocks=LOW)
    cfg = model.cfg
    flags = [False] * 3 + [False, True, False] + [True, False, True]  # rgb: no block
    active = active_from_msg(flags, cfg.modalities, cfg.depth, model)
    assert active.tolist() == [[False] * 3, [False, True, False], [True, False, True]]
    x1 = tiny_inputs(cfg, 1, seed=5)
    est = Localiser(model, "eager")(x1, active)
    with torch.no_grad():
        ref = model(x1, active)
    torch.testing.assert_close(torch.from_numpy(est.mean_cm).float(), ref.mean[0], **TOL)
    shipped_like, _ = tiny_modules()
    with pytest.raises(ValueError, match="allocation: expected block 0 of rgb active"):
        active_from_msg(flags, cfg.modalities, cfg.depth, shipped_like)


def test_a_controller_must_keep_the_models_forced_blocks():
    model, _ = tiny_modules(min_blocks=LOW)
    _, forcing = tiny_modules()  # min_blocks 1: block 0 of every modality forced
    engine = make_backend("eager", model, forcing, device="cpu")
    x = tiny_inputs(model.cfg, 2, seed=6)
    res = engine.step(x, 3)
    with torch.no_grad():
        out = forcing(downsample(x, model.cfg.controller.img_size), 3, sample=False)
    assert torch.equal(res.mask, out.mask.bool()) and bool(res.mask[..., 0].all())
    assert engine.budget_range == (3, 9)  # the controller's forced blocks set the floor
    with pytest.raises(ValueError, match="budget"):
        engine.step(x, 1)
    shipped_like, _ = tiny_modules()
    with pytest.raises(ValueError, match=r"controller: expected min_blocks >= the model's"):
        make_backend("eager", shipped_like, tiny_modules(min_blocks=LOW)[1], device="cpu")
