"""Checkpoint round-trip, config mismatch, MAE/timm-named backbone loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_core_helpers import rand_inputs, tiny_cfg

from admn_ros.core.checkpoint import (
    SHARD_FORMAT,
    CheckpointKind,
    load_checkpoint,
    load_pretrained_backbone,
    resize_pos_embed,
    save_checkpoint,
)
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.core.vit import VisionTransformer


def test_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = ADMN(cfg).eval()
    save_checkpoint(tmp_path / "m.pt", model, meta={"epoch": 3})
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.kind == "admn" and ck.meta == {"epoch": 3} and ck.model_config == cfg
    x = rand_inputs(cfg)
    torch.testing.assert_close(ck.module.eval()(x).mean, model(x).mean)
    into = ADMN(cfg)
    load_checkpoint(tmp_path / "m.pt", into=into)
    torch.testing.assert_close(into.eval()(x).mean, model(x).mean)


def test_controller_round_trip_and_kind(tmp_path: Path) -> None:
    cfg = tiny_cfg(budget_token=True)
    save_checkpoint(tmp_path / "c.pt", Controller(cfg))
    assert isinstance(load_checkpoint(tmp_path / "c.pt", kind="controller").module, Controller)
    with pytest.raises(ValueError, match=r"expected a 'admn' checkpoint"):
        load_checkpoint(tmp_path / "c.pt", kind="admn")


def test_config_mismatch_names_fields(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m.pt", ADMN(tiny_cfg()))
    other = tiny_cfg()
    other.fusion.dist_weight = 0.1
    with pytest.raises(ValueError, match=r"fusion\.dist_weight"):
        load_checkpoint(tmp_path / "m.pt", into=ADMN(other))


def test_main_network_ignores_the_controller_section(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m.pt", ADMN(tiny_cfg()))
    load_checkpoint(tmp_path / "m.pt", into=ADMN(tiny_cfg(noise_prior=2.0)))  # loads
    save_checkpoint(tmp_path / "c.pt", Controller(tiny_cfg()))
    with pytest.raises(ValueError, match=r"controller\.noise_prior"):  # a controller does not
        load_checkpoint(tmp_path / "c.pt", into=Controller(tiny_cfg(noise_prior=2.0)))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="admn_ros/1"):
        load_checkpoint(tmp_path / "x.pt")


def vit(img_size: int, in_chans: int, depth: int = 2) -> VisionTransformer:
    return VisionTransformer(img_size, 8, in_chans, 32, depth, 2)


def test_timm_names_with_prefix_resize_and_channels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = vit(32, 3, depth=3)  # 4x4 grid, RGB, one extra block
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    state["module.head.weight"] = torch.zeros(10, 32)
    torch.save({"model": state}, tmp_path / "timm.pth")
    dst = vit(16, 1)  # 2x2 grid, 1 channel
    report = load_pretrained_backbone(dst, tmp_path / "timm.pth")
    assert set(report.adapted) == {"patch_embed.proj.weight", "pos_embed"}
    assert "head.weight" in report.ignored and "blocks.2.norm1.weight" in report.ignored
    torch.testing.assert_close(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    torch.testing.assert_close(dst.cls_token, src.cls_token)
    torch.testing.assert_close(dst.pos_embed[:, :1], src.pos_embed[:, :1])  # CLS kept
    w = src.patch_embed.proj.weight
    torch.testing.assert_close(dst.patch_embed.proj.weight, w.sum(1, keepdim=True))
    assert dst(torch.rand(2, 1, 16, 16), torch.tensor([True, False])).shape == (2, 32)


def test_mae_names_decoder_ignored() -> None:
    src = vit(16, 3)
    state = dict(src.state_dict())
    state["mask_token"] = torch.zeros(1, 1, 16)
    state["decoder_embed.weight"] = torch.zeros(16, 32)
    state["decoder_blocks.0.norm1.weight"] = torch.zeros(16)
    dst = vit(16, 3)
    report = load_pretrained_backbone(dst, {f"encoder.{k}": v for k, v in state.items()})
    assert "decoder_embed.weight" in report.ignored and not report.adapted
    torch.testing.assert_close(dst.pos_embed, src.pos_embed)


def test_shape_mismatch_and_missing_named() -> None:
    state = dict(VisionTransformer(16, 8, 3, 48, 2, 2).state_dict())
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv.weight: checkpoint \(144, 48\)"):
        load_pretrained_backbone(vit(16, 3), state)
    state = dict(vit(16, 3).state_dict())
    del state["norm.weight"]
    with pytest.raises(ValueError, match=r"missing keys: \['norm.weight'\]"):
        load_pretrained_backbone(vit(16, 3), state)


def test_pretrained_weights_keep_the_models_input_reference() -> None:
    """Pretrained weights have no reference image (training sets it from data): loading them
    keeps the one the backbone has."""
    src = vit(16, 1)
    dst = VisionTransformer(16, 8, 1, 32, 2, 2, reference_nodes=3)
    ref = torch.rand(3, 1, 16, 16)
    dst.input_reference.copy_(ref)
    report = load_pretrained_backbone(dst, src.state_dict())
    assert "input_reference" not in report.loaded
    torch.testing.assert_close(dst.input_reference, ref)
    torch.testing.assert_close(dst.patch_embed.proj.weight, src.patch_embed.proj.weight)


def test_resize_pos_embed_identity() -> None:
    pos = torch.randn(1, 17, 8)
    assert torch.equal(resize_pos_embed(pos, 4), pos)
    assert resize_pos_embed(pos, 6).shape == (1, 37, 8)


def test_other_registries_use_the_same_functions(tmp_path: Path) -> None:
    """A layer with its own kinds (the baselines) passes `kinds=`; a module of an unregistered
    class, or a file of a kind the registry cannot build, fails naming what was expected."""
    kinds = {"ctrl2": CheckpointKind(Controller)}
    cfg = tiny_cfg()
    save_checkpoint(tmp_path / "c.pt", Controller(cfg), kinds=kinds)
    ck = load_checkpoint(tmp_path / "c.pt", kind="ctrl2", kinds=kinds)
    assert ck.kind == "ctrl2" and ck.configs == {"model": cfg} and ck.model_config == cfg
    with pytest.raises(ValueError, match=r"expected a module in \['Controller'\], got ADMN"):
        save_checkpoint(tmp_path / "a.pt", ADMN(cfg), kinds=kinds)
    save_checkpoint(tmp_path / "a.pt", ADMN(cfg))
    with pytest.raises(ValueError, match=r"expected kind in \['ctrl2'\], got 'admn'"):
        load_checkpoint(tmp_path / "a.pt", kinds=kinds)
    with pytest.raises(ValueError, match=r"expected a 'ctrl2' checkpoint, got 'admn'"):
        load_checkpoint(tmp_path / "a.pt", into=Controller(cfg), kinds=kinds)


def test_checkpoint_with_shards_loads_whole_and_names_a_missing_shard(tmp_path) -> None:
    cfg = tiny_cfg()
    model = ADMN(cfg)
    path = tmp_path / "admn.pt"
    save_checkpoint(path, model)
    data = torch.load(path, weights_only=True)
    part = {k: data["state_dict"].pop(k) for k in list(data["state_dict"])
            if k.startswith("backbones.rgb.")}
    data["meta"] = {"shards": ["admn_rgb.pt"]}
    torch.save(data, path)
    torch.save({"format": SHARD_FORMAT, "of": "admn.pt", "state_dict": part},
               tmp_path / "admn_rgb.pt")
    loaded = load_checkpoint(path, kind="admn").module
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    (tmp_path / "admn_rgb.pt").unlink()
    with pytest.raises(ValueError, match=r"admn_rgb\.pt"):
        load_checkpoint(path, kind="admn")
