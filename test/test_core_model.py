"""ADMN main network: real block skipping, blend mode, input validation, Gaussian loss."""

from __future__ import annotations

import pytest
import torch
from test_core_helpers import count_block_calls, rand_inputs, tiny_cfg

from admn_ros.core.config import load_model_config, to_dict
from admn_ros.core.model import ADMN, downsample


@pytest.fixture(scope="module")
def model() -> ADMN:
    torch.manual_seed(0)
    return ADMN(tiny_cfg()).eval()


def test_forward_shapes(model: ADMN) -> None:
    x = rand_inputs(model.cfg)
    pred = model(x)
    assert pred.mean.shape == (2, 2) and pred.scale_tril.shape == (2, 2, 2)
    a = model.cfg.fusion.arena
    assert bool((pred.mean[:, 0] >= a.x_min).all() and (pred.mean[:, 0] <= a.x_max).all())
    assert bool((pred.covariance.diagonal(dim1=-2, dim2=-1) > 0).all())


def test_hook_counted_blocks_equal_mask(model: ADMN) -> None:
    cfg = model.cfg
    active = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    with count_block_calls(model.backbones) as calls:
        model(rand_inputs(cfg), active)
    for i, m in enumerate(cfg.modalities):
        for j in range(cfg.depth):
            assert calls.get((m, j), 0) == int(active[i, j]), (m, j)


def test_per_sample_bool_mask_skips_and_matches_single(model: ADMN) -> None:
    cfg = model.cfg
    x = rand_inputs(cfg, batch=3)
    active = torch.ones(3, 3, 4, dtype=torch.bool)
    active[0, :, 2:] = False
    active[2, 1, 1:] = False
    with count_block_calls(model.backbones) as calls, torch.no_grad():
        grouped = model(x, active)
    assert calls[("rgb", 3)] == 1  # samples 1 and 2 share the rgb mask: one call
    with torch.no_grad():
        for b in range(3):
            single = model({m: v[b:b + 1] for m, v in x.items()}, active[b])
            torch.testing.assert_close(grouped.mean[b], single.mean[0], atol=1e-4, rtol=1e-4)


def test_blend_with_binary_mask_equals_skip(model: ADMN) -> None:
    x = rand_inputs(model.cfg)
    active = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        skip = model(x, active)
        blend = model(x, active.float().expand(2, -1, -1))
        blend_bool = model(x, active.expand(2, -1, -1), blend=True)
    torch.testing.assert_close(skip.mean, blend.mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(skip.scale_tril, blend.scale_tril, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(skip.mean, blend_bool.mean, atol=1e-4, rtol=1e-4)


def test_blend_gradients_reach_mask(model: ADMN) -> None:
    x = rand_inputs(model.cfg)
    m = torch.ones(2, 3, 4, requires_grad=True)
    pred = model(x, m)
    model.loss(pred, torch.zeros(2, 2)).backward()
    assert m.grad is not None and bool(m.grad[:, :, 1:].abs().sum() > 0)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda x: x.update(rgb=x["rgb"][:, :, :1]), "expected \\[B, 3, 3, 16, 16\\]"),
        (lambda x: x.update(depth=torch.rand(2, 3, 1, 12, 12)), "expected \\[B, 3, 1, 16, 16\\]"),
        (lambda x: x.update(radar=(x["radar"] * 255).to(torch.uint8)), "float"),
        (lambda x: x["rgb"].__setitem__((0, 0, 0, 0, 0), float("nan")), "NaN"),
        (lambda x: x.pop("radar"), "expected keys"),
        (lambda x: x.update(depth=torch.rand(3, 3, 1, 16, 16)), "batch size"),
    ],
)
def test_bad_inputs(model: ADMN, mutate, match) -> None:
    x = rand_inputs(model.cfg)
    mutate(x)
    with pytest.raises(ValueError, match=match):
        model(x)


@pytest.mark.parametrize(
    ("active", "match"),
    [
        (torch.ones(3, 5, dtype=torch.bool), "expected \\[3, 4\\]"),
        (torch.ones(12, dtype=torch.bool), "expected \\[3, 4\\]"),
        (torch.tensor([[0, 1, 1, 1]] + [[1, 1, 1, 1]] * 2, dtype=torch.bool), "block 0"),
        (torch.ones(3, 4), "dtype bool"),
        (torch.ones(5, 3, 4, dtype=torch.bool), "batch size"),
    ],
)
def test_bad_masks(model: ADMN, active, match) -> None:
    with pytest.raises(ValueError, match=match):
        model(rand_inputs(model.cfg), active)


def test_encode_one_backbone(model: ADMN) -> None:
    x = torch.rand(4, 1, 16, 16)
    act = torch.tensor([True, False, True, False])
    assert model.encode("depth", x, act).shape == (4, 32)
    with pytest.raises(ValueError, match="block 0"):
        model.encode("depth", x, ~act)
    with pytest.raises(ValueError, match="expected one of"):
        model.encode("audio", x, act)


def test_downsample_shapes() -> None:
    cfg = tiny_cfg()
    low = downsample(rand_inputs(cfg), 8)
    assert all(v.shape[-2:] == (8, 8) for v in low.values())


def test_gaussian_nll_finite_and_decreasing() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = ADMN(cfg)
    x = rand_inputs(cfg, batch=4)
    target = torch.tensor([[50.0, -30.0], [-120.0, 80.0], [10.0, 10.0], [150.0, 150.0]])
    opt = torch.optim.Adam(list(model.fusion.parameters()) + list(model.head.parameters()),
                           lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model.loss(model(x), target)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_seeded_determinism() -> None:
    torch.manual_seed(3)
    a = ADMN(tiny_cfg())
    torch.manual_seed(3)
    b = ADMN(tiny_cfg())
    x = rand_inputs(a.cfg)
    torch.testing.assert_close(a(x).mean, b(x).mean)


def test_backbones_standardise_inputs_with_config_statistics() -> None:
    cfg = tiny_cfg()
    mean = {m: [0.4] * cfg.in_chans[m] for m in cfg.modalities}
    std = {m: [0.2] * cfg.in_chans[m] for m in cfg.modalities}
    torch.manual_seed(0)
    plain = ADMN(cfg).eval()
    normed = ADMN(load_model_config({**to_dict(cfg), "input_mean": mean, "input_std": std})).eval()
    normed.load_state_dict(plain.state_dict())  # the statistics are config, not weights
    x = rand_inputs(cfg)
    full = torch.ones(cfg.num_modalities, cfg.depth, dtype=torch.bool)
    with torch.no_grad():
        got = normed(x, full).mean
        want = plain({m: (v - 0.4) / 0.2 for m, v in x.items()}, full).mean
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"input_std\.rgb: expected 3 values"):
        load_model_config({**to_dict(cfg), "input_std": {"rgb": [0.2]}})
    with pytest.raises(ValueError, match="input_std: expected values > 0"):
        load_model_config({**to_dict(cfg), "input_std": {"depth": [0.0]}})


def test_input_reference_subtracts_each_nodes_image_before_standardising() -> None:
    cfg = tiny_cfg()
    ref_cfg = load_model_config({**to_dict(cfg), "input_reference": ["depth"]})
    torch.manual_seed(0)
    plain = ADMN(cfg).eval()
    model = ADMN(ref_cfg).eval()
    vit = model.backbones["depth"]
    s, c, k = cfg.num_nodes, cfg.in_chans["depth"], cfg.backbone.img_size
    assert vit.input_reference.shape == (s, c, k, k) and not vit.input_reference.any()
    assert not hasattr(model.backbones["rgb"], "input_reference")
    ref = torch.rand(s, c, k, k)
    model.load_state_dict({**plain.state_dict(), "backbones.depth.input_reference": ref})
    assert "backbones.depth.input_reference" in model.state_dict()  # saved with the weights
    x = rand_inputs(cfg, batch=2)
    full = torch.ones(cfg.num_modalities, cfg.depth, dtype=torch.bool)
    with torch.no_grad():
        got = model(x, full).mean
        want = plain({**x, "depth": x["depth"] - ref}, full).mean  # node k minus image k
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="multiple of 3"):
        vit(torch.rand(2, c, k, k))
    with pytest.raises(ValueError, match="input_reference: expected distinct modalities"):
        load_model_config({**to_dict(cfg), "input_reference": ["lidar"]})


def test_global_pool_avg_is_the_normalised_mean_of_patch_tokens() -> None:
    cfg = tiny_cfg()
    d = to_dict(cfg)
    d["backbone"]["global_pool"] = "avg"
    torch.manual_seed(0)
    model = ADMN(load_model_config(d)).eval()
    vit = next(iter(model.backbones.values()))
    x = torch.rand(2, vit.in_chans, vit.img_size, vit.img_size)
    with torch.no_grad():
        tokens = vit.embed(x)
        for blk in vit.blocks:
            tokens = blk(tokens)
        torch.testing.assert_close(vit(x), vit.norm(tokens[:, 1:].mean(1)))
        assert not torch.allclose(vit(x), vit.norm(tokens[:, 0]))
    d["backbone"]["global_pool"] = "max"
    with pytest.raises(ValueError, match=r"backbone\.global_pool"):
        load_model_config(d)


def test_sincos_pos_embed_is_fixed_and_distinguishes_every_patch() -> None:
    cfg = tiny_cfg()
    d = to_dict(cfg)
    d["backbone"]["pos_embed"] = "sincos"
    name = cfg.modalities[0]
    vit = ADMN(load_model_config(d)).backbones[name]
    pos = vit.pos_embed[0, 1:]  # [P, E]
    assert not vit.pos_embed.requires_grad
    assert pos.pow(2).mean().item() == pytest.approx(0.5, abs=1e-4)  # sin^2 + cos^2 halves
    dist = torch.cdist(pos, pos) + torch.eye(len(pos)) * 1e3
    assert dist.min() > 0.1  # every patch position has its own code
    again = ADMN(load_model_config(d)).backbones[name]
    torch.testing.assert_close(again.pos_embed, vit.pos_embed)  # deterministic, not drawn
    d["backbone"]["pos_embed"] = "random"
    with pytest.raises(ValueError, match=r"backbone\.pos_embed"):
        load_model_config(d)


@pytest.mark.parametrize("readout", ["flatten", "mean"])
def test_fusion_readout_keeps_which_node_saw_what(readout: str) -> None:
    d = to_dict(tiny_cfg())
    d["fusion"]["readout"] = readout
    torch.manual_seed(0)
    model = ADMN(load_model_config(d)).eval()
    model.fusion.node_embed.data.zero_()  # node identity only through the readout itself
    feats = {m: torch.randn(2, model.cfg.num_nodes, model.cfg.backbone.embed_dim)
             for m in model.cfg.modalities}
    swapped = {m: f.flip(1) for m, f in feats.items()}  # the nodes' views exchanged
    with torch.no_grad():
        same = torch.allclose(model.fuse(feats).mean, model.fuse(swapped).mean, atol=1e-5)
    assert same == (readout == "mean")
