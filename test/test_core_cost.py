"""Analytic cost model vs torch.utils.flop_counter (within 5 %)."""

from __future__ import annotations

import pytest
import torch
from test_core_helpers import rand_inputs, tiny_cfg
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from admn_ros.core.controller import Controller
from admn_ros.core.cost import CostModel
from admn_ros.core.model import ADMN, downsample


def counted(fn) -> float:
    # CPU fused attention has no flop formula; the math backend runs it as counted bmm's
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


@pytest.mark.parametrize("budget_token", [False, True])
def test_model_and_controller_vs_flop_counter(budget_token: bool) -> None:
    cfg = tiny_cfg(budget_token=budget_token)
    model, ctrl, cm = ADMN(cfg).eval(), Controller(cfg).eval(), CostModel(cfg)
    x = rand_inputs(cfg, batch=1)
    active = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert cm.cost(active) == pytest.approx(counted(lambda: model(x, active)), rel=0.05)
    low = downsample(x, cfg.controller.img_size)
    assert cm.controller_flops() == pytest.approx(counted(lambda: ctrl(low, 6)), rel=0.05)
    assert cm.cost(active, include_controller=True) == pytest.approx(
        cm.cost(active) + cm.controller_flops())


def test_block_and_fusion_parts() -> None:
    cfg = tiny_cfg()
    model, cm = ADMN(cfg).eval(), CostModel(cfg)
    blk = counted(lambda: model.backbones["rgb"].blocks[0](torch.rand(1, 5, 32)))
    assert cm.backbone_block_flops("rgb") == pytest.approx(blk, rel=0.05)
    feats = {m: torch.rand(1, 3, 32) for m in cfg.modalities}
    assert cm.fusion_flops() == pytest.approx(counted(lambda: model.fuse(feats)), rel=0.05)


def test_ae_decoder_flops() -> None:
    cfg = tiny_cfg(ae_head=True)
    ctrl, cm = Controller(cfg).eval(), CostModel(cfg)
    low = rand_inputs(cfg, batch=1, size=8)
    assert cm.controller_flops(include_decoder=True) == pytest.approx(
        counted(lambda: ctrl(low, 6)), rel=0.05)


def test_batched_mask_and_monotone() -> None:
    cm = CostModel(tiny_cfg())
    full = torch.ones(2, 3, 4, dtype=torch.bool)
    half = full.clone()
    half[1, :, 2:] = False
    per = cm.costs(half)
    assert per[0] == cm.full_cost() and per[1] < per[0]
    assert cm.cost(half) == pytest.approx(float(per.mean()))
    with pytest.raises(ValueError, match="expected \\[3, 4\\]"):
        cm.cost(torch.ones(3, 5, dtype=torch.bool))


def test_vitb16_matches_published_gmacs() -> None:
    from pathlib import Path

    from admn_ros.core.config import load_model_config

    root = Path(__file__).resolve().parents[1]
    cm = CostModel(load_model_config(root / "config/model/vitb16.yaml"))
    gmacs = (12 * cm.backbone_block_flops("rgb") + cm.backbone_stem_flops("rgb")) / 2e9
    assert gmacs == pytest.approx(17.6, rel=0.01)  # timm vit_base_patch16_224: 17.6 GMACs
