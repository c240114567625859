"""Baseline configs (YAML, strictness), checkpoints and kinds, shared parts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from test_baselines_helpers import seeded, single_thread, tiny_batch, tiny_cfg  # noqa: F401

from admn_ros.core.baselines import (
    M2SN,
    DynMM,
    MMExit,
    build_baseline,
    init_from_admn,
    load_baseline_checkpoint,
    load_baseline_config,
    save_baseline_checkpoint,
)
from admn_ros.core.baselines.common import LAM_MAX, LowResEncoder, fuse_masked
from admn_ros.core.checkpoint import load_checkpoint, save_checkpoint
from admn_ros.core.controller import Controller
from admn_ros.core.cost import CostModel
from admn_ros.core.model import ADMN

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "baselines"

# Per method: its cheapest cost (GFLOPs per sample: cheapest expert / first exit / first
# shortcut everywhere) and the knob value that reaches it, as its budget error names it.
CHEAPEST = {
    DynMM: (lambda m: float(m.expert_flops.min()) + m.fixed_flops, "lam=10000.0"),
    MMExit: (lambda m: float(m.exit_flops[0]), "threshold_cm=inf"),
    M2SN: (lambda m: float(m.option_flops[:, 0].sum()) + m.fixed_flops, "lam=10000.0"),
}


@pytest.mark.parametrize("name", ["dynmm", "mmexit", "m2sn"])
def test_yaml_configs_build(name: str) -> None:
    cfg = load_baseline_config(CONFIG_DIR / f"{name}.yaml", name)
    assert name == build_baseline(tiny_cfg(), cfg).KIND


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="method: expected one of"):
        load_baseline_config({"method": "admn"})
    with pytest.raises(ValueError, match="expected method 'm2sn'"):
        load_baseline_config({"method": "dynmm"}, "m2sn")
    with pytest.raises(ValueError, match="lam: expected"):
        DynMM(tiny_cfg(), {"lam": -1.0})
    with pytest.raises(ValueError, match="gumbel_tau: expected float"):
        DynMM(tiny_cfg(), {"gumbel_tau": "hot"})


@pytest.mark.parametrize("cls", [DynMM, MMExit, M2SN])
def test_checkpoint_round_trip(tmp_path: Path, cls: type) -> None:
    torch.manual_seed(0)
    m = cls(tiny_cfg()).eval()
    save_baseline_checkpoint(tmp_path / "b.pt", m, meta={"step": 2})
    ck = load_baseline_checkpoint(tmp_path / "b.pt", kind=cls.KIND)
    assert ck.kind == cls.KIND and ck.meta == {"step": 2} and ck.config == m.cfg
    x, lr, _ = tiny_batch(m.model_cfg, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(ck.module.eval()(x, lr).pred.mean, m(x, lr).pred.mean)


def test_wrong_kind_fails_clearly(tmp_path: Path) -> None:
    save_baseline_checkpoint(tmp_path / "d.pt", DynMM(tiny_cfg()))
    with pytest.raises(ValueError, match=r"expected a 'mmexit' checkpoint, got 'dynmm'"):
        load_baseline_checkpoint(tmp_path / "d.pt", kind="mmexit")
    with pytest.raises(ValueError, match=r"expected a 'm2sn' checkpoint, got 'dynmm'"):
        load_baseline_checkpoint(tmp_path / "d.pt", into=M2SN(tiny_cfg()))
    with pytest.raises(ValueError, match=r"expected kind in \['admn', 'controller'\], got 'dynmm'"):
        load_checkpoint(tmp_path / "d.pt", kind="admn")  # the core loader
    save_checkpoint(tmp_path / "a.pt", ADMN(tiny_cfg()))
    with pytest.raises(ValueError, match=r"expected a 'dynmm' checkpoint, got 'admn'"):
        load_baseline_checkpoint(tmp_path / "a.pt", kind="dynmm")
    with pytest.raises(ValueError, match=r"baseline\.fusion_gating"):
        load_baseline_checkpoint(tmp_path / "d.pt", into=DynMM(tiny_cfg(),
                                                               {"fusion_gating": False}))


def test_init_from_admn_and_controller_trunk(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    admn, ctrl = ADMN(cfg), Controller(cfg)
    save_checkpoint(tmp_path / "a.pt", admn)
    m = M2SN(cfg)
    init_from_admn(m, tmp_path / "a.pt")
    torch.testing.assert_close(m.model.state_dict(), admn.state_dict())
    keys = m.nav_trunk.load_from_controller(ctrl)
    assert "stems.rgb.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys
    torch.testing.assert_close(m.nav_trunk.stems.rgb.proj.weight, ctrl.stems.rgb.proj.weight)


def test_fuse_masked_all_on_equals_core_fusion() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg()
    admn = ADMN(cfg).eval()
    feats = {m: torch.randn(3, cfg.num_nodes, cfg.backbone.embed_dim) for m in cfg.modalities}
    ref = admn.fusion(feats)
    ones = torch.ones(3, cfg.fusion.depth)
    with torch.no_grad():
        torch.testing.assert_close(fuse_masked(admn.fusion, feats, None), ref)
        torch.testing.assert_close(fuse_masked(admn.fusion, feats, ones), ref)
        torch.testing.assert_close(fuse_masked(admn.fusion, feats, ones.bool()), ref)


def test_lowres_encoder_flops_below_controller() -> None:
    cfg = tiny_cfg()
    assert 0 < LowResEncoder(cfg).flops() < CostModel(cfg).controller_flops()


@pytest.mark.parametrize("cls", [DynMM, M2SN])
def test_more_lambda_fewer_flops(cls: type) -> None:
    model = seeded(cls).eval()
    x, lr, _ = tiny_batch(model.model_cfg, batch=6)
    with torch.no_grad():
        flops = [float(model(x, lr, lam).flops.mean()) for lam in (0.0, 0.3, 1.0, 3.0, LAM_MAX)]
    assert all(a >= b for a, b in itertools.pairwise(flops))
    assert flops[-1] == pytest.approx(CHEAPEST[cls][0](model))


@pytest.mark.parametrize("cls", [DynMM, MMExit, M2SN])
def test_budget_below_the_cheapest_cost_is_refused_and_a_met_one_kept(cls: type) -> None:
    model = seeded(cls).eval()
    x, lr, _ = tiny_batch(model.model_cfg, batch=4)
    lowres = None if cls is MMExit else lr  # MMExit decides on its own exits' outputs
    knob_input = x if lowres is None else lowres
    cheapest, knob = CHEAPEST[cls]
    with pytest.raises(ValueError, match=rf"budget: {cls.__name__} cannot meet .*{knob}"):
        model.knob_for_budget(knob_input, 0.9 * cheapest(model))
    budget = 0.5 * (cheapest(model) + model.full_flops)
    with torch.no_grad():
        out = model(x, lowres, model.knob_for_budget(knob_input, budget))
    assert float(out.flops.mean()) <= budget
