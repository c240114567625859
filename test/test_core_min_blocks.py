"""`min_blocks` per modality: 0 lets a modality be switched off (the paper's full-backbone drop).

With `min_blocks: 0` a controller can give a modality no block at all, the fusion then sees its
embedding-only token, LayerDrop's full drop removes every block, and the policies respect the
per-modality minimums; the default (1: block 0 always runs) is unchanged.
"""

from __future__ import annotations

import pytest
import torch

from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.layerdrop import LayerDrop
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.policies import even_split, make_policy

TINY = {
    "modalities": ["rgb", "depth", "radar"],
    "in_chans": {"rgb": 3, "depth": 1, "radar": 1},
    "nodes": ["node1", "node2"],
    "backbone": {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 4, "num_heads": 2,
                 "mlp_ratio": 2.0},
    "fusion": {"dim": 16, "depth": 1, "num_heads": 2},
    "controller": {"img_size": 8, "stem_channels": [8], "dim": 16, "depth": 1, "num_heads": 2},
}


def config(min_blocks: dict[str, int], **controller):
    return load_model_config(dict(TINY, min_blocks=min_blocks,
                                  controller=dict(TINY["controller"], **controller)))


def inputs(cfg, batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    s, size = cfg.num_nodes, cfg.backbone.img_size
    return {m: torch.rand(batch, s, c, size, size, generator=gen)
            for m, c in cfg.in_chans.items()}


def test_controller_can_give_a_modality_zero_blocks_and_the_fusion_handles_it():
    cfg = config({"rgb": 0, "depth": 0, "radar": 0})
    assert cfg.budget_range == (1, 12)
    ctrl = Controller(cfg).eval()
    with torch.no_grad():  # make rgb's and depth's slots the least wanted
        ctrl.logit_head[-1].bias.copy_(torch.tensor([-9.0] * 8 + [9.0] * 4))
        ctrl.logit_head[-1].weight.zero_()
    x = inputs(cfg)
    mask = ctrl(downsample(x, 8), 2, sample=False).mask.bool()
    assert mask.sum((1, 2)).tolist() == [2, 2]
    assert mask[:, :2].sum().item() == 0  # rgb and depth: no block at all
    model = ADMN(cfg).eval()
    with torch.no_grad():
        pred = model(x, mask)
        assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.scale_tril).all()
        # the switched-off modalities still reach the fusion as embedding-only tokens
        off = model.encode("rgb", x["rgb"].flatten(0, 1), torch.zeros(4, dtype=torch.bool))
        assert off.shape == (4, 16) and torch.isfinite(off).all()


def test_default_keeps_block_0_and_rejects_it_off():
    cfg = config({})
    assert cfg.min_blocks_list == [1, 1, 1] and cfg.budget_range == (3, 12)
    model = ADMN(cfg)
    off = torch.ones(3, 4, dtype=torch.bool)
    off[1, 0] = False
    with pytest.raises(ValueError, match="block 0"):
        model(inputs(cfg), off)
    mixed = config({"rgb": 2, "radar": 0})  # rgb keeps blocks 0-1, radar may be off
    assert mixed.min_blocks_list == [2, 1, 0] and mixed.budget_range == (3, 12)
    bad = torch.ones(3, 4, dtype=torch.bool)
    bad[0, 1] = False
    with pytest.raises(ValueError, match=r"blocks 0\.\.1"):
        ADMN(mixed)(inputs(mixed), bad)


@pytest.mark.parametrize("bad, match", [
    ({"rgb": 5}, "min_blocks"), ({"lidar": 0}, "min_blocks"), ({"rgb": -1}, "min_blocks"),
])
def test_bad_min_blocks(bad, match):
    with pytest.raises(ValueError, match=match):
        config(bad)


def test_full_drop_removes_every_block_with_min_blocks_0():
    ld = LayerDrop(3, 4, rate=0.0, full_drop_prob=1.0, min_blocks=[0, 1, 2])
    keep = ld.sample(0, generator=torch.Generator().manual_seed(0))
    assert keep.tolist() == [[False] * 4, [True, False, False, False],
                             [True, True, False, False]]
    masks = LayerDrop(3, 4, rate=0.5, full_drop_prob=0.0, min_blocks=[0, 0, 0]).sample(
        0, batch_size=400, generator=torch.Generator().manual_seed(1))
    assert not masks[:, :, 0].all()  # block 0 is dropped like any other
    with pytest.raises(ValueError, match="min_blocks"):
        LayerDrop(3, 4, min_blocks=[0, 5, 0])


def test_policies_respect_min_blocks():
    cfg = config({"rgb": 0, "depth": 2})
    lowres = downsample(inputs(cfg), 8)
    naive = make_policy("naive", cfg)(lowres, 3)
    assert naive[0].sum(-1).tolist() == [0, 2, 1]  # the minimums, then the most even split
    assert even_split(7, [0, 2, 1], 4) == [3, 2, 2]
    rand = make_policy("random", cfg, seed=0)(lowres, 4)
    assert rand.sum((1, 2)).tolist() == [4, 4] and rand[:, 1, :2].all()
    single = make_policy("single:radar", cfg)
    assert single.budget_range == (3, 6)
    assert single(lowres, 6)[0].sum(-1).tolist() == [0, 2, 4]
    # with equal minimums the naive split is the paper's L/M, remainder first
    assert even_split(8, [1, 1, 1], 8) == [3, 3, 2]
