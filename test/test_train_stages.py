"""Training stages on a tiny generated recording: loss falls, resume, torchrun, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from admn_ros.train.config import load_train_config
from admn_ros.train.engine import NonFiniteLossError, lr_lambda
from admn_ros.train.main import run_stage
from admn_ros.train.state import load_training_state

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = {
    "modalities": ["rgb", "depth", "radar"],
    "in_chans": {"rgb": 3, "depth": 1, "radar": 1},
    "nodes": ["node1", "node2", "node3"],
    "backbone": {"img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2,
                 "mlp_ratio": 2.0},
    "fusion": {"dim": 32, "depth": 1, "num_heads": 2},
    "controller": {"img_size": 8, "stem_channels": [8], "dim": 32, "depth": 1, "num_heads": 2},
}


def tiny_recipe(tmp: Path, rec: Path, **over) -> dict:
    model = tmp / "tiny_model.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    stage = {"epochs": 4, "batch_size": 8, "lr": 3.0e-3, "max_steps_per_epoch": 3,
             "schedule": "constant"}
    recipe = {
        "recipe": "tiny", "seed": 0, "model": str(model), "out_dir": str(tmp / "run"),
        "models_dir": str(tmp / "models"), "results_dir": str(tmp / "results"),
        "device": "cpu", "threads": 1,
        "data": {"root": str(rec), "min_samples": 8},
        "mae": dict(stage, mask_ratio=0.5),
        "backbone": dict(stage, clean_epochs=1),
        "controller": dict(stage, budgets=[4], universal=True, universal_range=[3, 6],
                           warmup_noise_epochs=1, noise_kinds=["binary"]),
        "controller_ae": dict(stage, universal=True, universal_range=[3, 6],
                              warmup_noise_epochs=1, max_warmup_steps=2,
                              noise_kinds=["binary"]),
        "eval": {"budgets": [3, 4, 6], "batch_size": 16},
    }
    for k, v in over.items():
        recipe[k] = dict(recipe[k], **v) if isinstance(recipe.get(k), dict) else v
    return recipe


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    from admn_ros.data.testing import make_tiny_recording

    return make_tiny_recording(tmp_path_factory.mktemp("rec"), frames=60, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, rec) -> tuple[Path, dict]:
    """All four stages on the tiny recording (shared by the stage and eval tests)."""
    tmp = tmp_path_factory.mktemp("trained")
    recipe = tiny_recipe(tmp, rec)
    cfg = load_train_config(recipe)
    for stage in ("mae", "backbone", "controller", "controller-ae"):
        run_stage(cfg, stage)
    return tmp, recipe


def history(run: Path, job: str) -> list[dict]:
    return load_training_state(run / job / "checkpoint.pt")["history"]


@pytest.mark.parametrize("job", ["mae", "admn", "controller_L4", "controller_universal",
                                 "controller_ae"])
def test_stage_runs_and_loss_falls(trained, job):
    tmp, _ = trained
    run = tmp / "run"
    h = history(run, job)
    assert len(h) == 4
    if job.startswith("controller"):  # epoch 0 trains the noise / AE head only
        warm = 2 if job == "controller_ae" else 5  # max_warmup_steps, else the whole split
        assert h[0]["step"] == warm and h[-1]["step"] == warm + 3 * 3
        assert h[-1]["aux"] < h[0]["aux"]  # noise-sigma L1 / reconstruction
        assert h[-1]["loss"] < h[1]["loss"] * 1.1
    else:
        assert h[-1]["step"] == 12 and h[-1]["loss"] < h[0]["loss"]
    assert (run / f"{job}.pt").exists()
    assert (run / job / "metrics.csv").exists() and (run / job / "metrics.jsonl").exists()


def test_resume_continues_from_saved_step(tmp_path, rec, capsys):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 3}))
    assert run_stage(cfg, "backbone", stop_after_epochs=1) == []  # "killed" after epoch 1
    state = load_training_state(tmp_path / "run" / "admn" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (0, 3)
    assert not (tmp_path / "run" / "admn.pt").exists()
    run_stage(cfg, "backbone", resume=True)
    assert "resumed from" in capsys.readouterr().out
    h = history(tmp_path / "run", "admn")
    assert [r["epoch"] for r in h] == [0, 1, 2] and [r["step"] for r in h] == [3, 6, 9]
    assert h[0] == state["history"][0]
    assert (tmp_path / "run" / "admn.pt").exists()


def test_torchrun_two_processes_agree(tmp_path, rec):
    recipe = tiny_recipe(tmp_path, rec, backbone={"epochs": 2, "max_steps_per_epoch": 2,
                                                   "batch_size": 4})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "admn_ros.cli", "train", "backbone",
           "--config", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 ranks agree on the weights" in proc.stdout
    h = history(tmp_path / "run", "admn")
    assert h[-1]["step"] == 4  # 2 epochs x 2 steps, each rank on its own shard
    assert (tmp_path / "run" / "admn.pt").exists()


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, key", [
    ({"backbone": {"epochz": 3}}, "backbone.epochz"),
    ({"backbone": {"epochs": "ten"}}, "backbone.epochs"),
    ({"controller": {"budgets": [4.5]}}, "controller.budgets[0]"),
    ({"learning_rate": 1}, "learning_rate"),
])
def test_recipe_unknown_key_or_wrong_type(bad, key):
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_train_config(bad)


def test_cli_reports_bad_recipe(tmp_path, capsys):
    from admn_ros.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("backbone: {epochz: 1}\n")
    assert main(["train", "backbone", "--config", str(path)]) == 1
    assert "backbone.epochz" in capsys.readouterr().err


def test_checkpoint_from_another_model_config(trained, tmp_path):
    tmp, recipe = trained
    other = dict(TINY_MODEL, backbone=dict(TINY_MODEL["backbone"], embed_dim=16))
    model = tmp_path / "other.yaml"
    model.write_text(yaml.safe_dump(other))
    cfg = load_train_config(dict(recipe, model=str(model), out_dir=str(tmp_path / "o"),
                                 controller=dict(recipe["controller"],
                                                 init=str(tmp / "run" / "admn.pt"))))
    with pytest.raises(ValueError, match=r"backbone\.embed_dim"):
        run_stage(cfg, "controller")


def test_backbone_starts_from_mae_trained_with_another_layerdrop(trained, tmp_path):
    """LayerDrop is how the backbone stage trains, not the weights it starts from: MAE weights
    of the same network load whatever its LayerDrop; another network's are refused."""
    tmp, recipe = trained
    mae = str(tmp / "run" / "mae.pt")
    for name, over, ok in (
            ("drop", {"layerdrop": {"full_drop_prob": {"rgb": 0.1, "depth": 0.1, "radar": 0.9}}},
             True),
            ("wide", {"backbone": dict(TINY_MODEL["backbone"], embed_dim=16)}, False)):
        model = tmp_path / f"{name}.yaml"
        model.write_text(yaml.safe_dump(dict(TINY_MODEL, **over)))
        cfg = load_train_config(dict(recipe, model=str(model), out_dir=str(tmp_path / name),
                                     backbone=dict(recipe["backbone"], epochs=1, init=mae)))
        if ok:
            run_stage(cfg, "backbone")
            saved = torch.load(tmp_path / name / "admn.pt", weights_only=False)
            assert saved["model_config"]["layerdrop"]["full_drop_prob"]["radar"] == 0.9
        else:
            with pytest.raises(ValueError, match=r"backbone\.embed_dim"):
                run_stage(cfg, "backbone")


def test_resume_with_another_model_config(tmp_path, rec):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 2}))
    run_stage(cfg, "backbone", stop_after_epochs=1)
    other = dict(TINY_MODEL, fusion=dict(TINY_MODEL["fusion"], depth=2))
    (tmp_path / "tiny_model.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(ValueError, match=r"fusion\.depth"):
        run_stage(cfg, "backbone", resume=True)


def test_split_too_small_or_missing(tmp_path, rec):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, data={"min_samples": 10_000}))
    with pytest.raises(ValueError, match="expected at least 10000 samples"):
        run_stage(cfg, "backbone")
    cfg = load_train_config(tiny_recipe(tmp_path, rec, data={"root": str(tmp_path / "none")}))
    with pytest.raises(ValueError, match="none"):
        run_stage(cfg, "backbone")
    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"batch_size": 10_000}))
    with pytest.raises(ValueError, match="batch_size"):
        run_stage(cfg, "backbone")


def test_budget_outside_range(tmp_path, rec):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, controller={"budgets": [99]}))
    with pytest.raises(ValueError, match=r"controller\.budgets"):
        run_stage(cfg, "controller")
    cfg = load_train_config(tiny_recipe(tmp_path, rec, controller={"universal_range": [1, 6]}))
    with pytest.raises(ValueError, match="universal_range"):
        run_stage(cfg, "controller")


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, rec, monkeypatch):
    from admn_ros.train import tasks

    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 3}))
    real = tasks.BackboneTask.loss

    def poisoned(self, batch, epoch, step, gen):
        loss, metrics = real(self, batch, epoch, step, gen)
        return (loss * float("nan") if step == 4 else loss), metrics

    monkeypatch.setattr(tasks.BackboneTask, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 4, batch of samples \[\d+"):
        run_stage(cfg, "backbone")
    state = load_training_state(tmp_path / "run" / "admn" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (0, 3)
    assert torch.isfinite(torch.cat([v.flatten().float() for v in state["module"].values()
                                     if v.is_floating_point()])).all()
    assert json.loads((tmp_path / "run" / "admn" / "metrics.jsonl").read_text()
                      .splitlines()[-1])["step"] == 3


def test_input_reference_is_the_train_splits_median_and_kept_by_later_stages(tmp_path, rec):
    from admn_ros.core.checkpoint import load_checkpoint
    from admn_ros.train.data import load_split

    (tmp_path / "m.yaml").write_text(yaml.safe_dump({**TINY_MODEL, "input_reference": ["depth"]}))
    recipe = tiny_recipe(tmp_path, rec, model=str(tmp_path / "m.yaml"),
                         backbone={"epochs": 1}, controller={"epochs": 1, "universal": False})
    cfg = load_train_config(recipe)
    run_stage(cfg, "backbone")
    model = load_checkpoint(tmp_path / "run" / "admn.pt", kind="admn").module
    train = load_split(rec, "train", cfg.model_config(), 1)
    want = train.inputs["depth"].float().median(0).values  # [S, 1, s, s]
    ref = model.backbones["depth"].input_reference
    torch.testing.assert_close(ref, want)
    assert ref.std() > 0  # an image of the scene, not a constant
    # the controller stage loads admn.pt into a fresh model: the reference travels with it
    assert [p.name for p in run_stage(cfg, "controller")] == ["controller_L4.pt"]


def test_mae_encoder_sees_the_standardised_inputs_finetuning_feeds_it(tmp_path, rec):
    """MAE pretrains the patch embedding that later stages (and frozen blocks) use: it must see
    the inputs after the model's mean, std and reference, as `VisionTransformer.embed` does."""
    from admn_ros.core.config import load_model_config
    from admn_ros.core.model import ADMN
    from admn_ros.train.tasks import MAEModule

    st = load_train_config(tiny_recipe(tmp_path, rec)).mae
    mean = {m: [0.4] * c for m, c in TINY_MODEL["in_chans"].items()}
    std = {m: [0.2] * c for m, c in TINY_MODEL["in_chans"].items()}
    torch.manual_seed(0)
    plain = MAEModule(ADMN(load_model_config(TINY_MODEL)), st)
    normed = MAEModule(ADMN(load_model_config({**TINY_MODEL, "input_mean": mean,
                                               "input_std": std})), st)
    normed.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    x = {m: torch.rand(2, 3, c, 16, 16, generator=g) for m, c in TINY_MODEL["in_chans"].items()}
    active = torch.ones(3, 3, dtype=torch.bool)
    with torch.no_grad():
        got = normed(x, active, 0.5, torch.Generator().manual_seed(2))
        want = plain({m: (v - 0.4) / 0.2 for m, v in x.items()}, active, 0.5,
                     torch.Generator().manual_seed(2))
    torch.testing.assert_close(got, want)


def test_lr_schedule_starts_after_the_head_only_warmup() -> None:
    f = lr_lambda(110, 0, "cosine", hold_steps=10)
    assert [f(0), f(9), f(10)] == [1.0, 1.0, 1.0]  # warm-up at the base rate; cosine from 10
    assert f(60) == pytest.approx(0.51)  # half way through the 100 scheduled steps
    assert f(110) == pytest.approx(0.02)


# --------------------------------------------------------------------------------------------
# per-modality deep supervision (backbone.single_modality_weight)
# --------------------------------------------------------------------------------------------
def tiny_model_and_inputs(batch: int = 4):
    from admn_ros.core.config import load_model_config
    from admn_ros.core.model import ADMN

    torch.manual_seed(0)
    model = ADMN(load_model_config(TINY_MODEL))
    inputs = {m: torch.rand(batch, 3, c, 16, 16) for m, c in TINY_MODEL["in_chans"].items()}
    return model, inputs


def test_single_modality_fusion_runs_each_modality_alone_without_teaching_forced_blocks():
    from admn_ros.train.tasks import SingleModalityFusion

    model, inputs = tiny_model_and_inputs()
    wrapper = SingleModalityFusion(model)
    active = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    pred, alone = wrapper(inputs, active)
    assert torch.allclose(pred.mean, model(inputs, active).mean, atol=1e-6)
    assert sorted(alone) == ["radar", "rgb"]  # depth runs only its forced block 0
    only_rgb = torch.tensor([[True, True, False], [True, False, False], [True, False, False]])
    assert torch.allclose(alone["rgb"].mean, model(inputs, only_rgb).mean, atol=1e-6)
    alone["rgb"].mean.sum().backward()
    bb = model.backbones
    assert all(p.grad is None for m in ("depth", "radar") for p in bb[m].parameters())
    assert bb["rgb"].blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert model.fusion.adapters["radar"].weight.grad.abs().sum() > 0


def test_backbone_stage_with_single_modality_loss_exports_a_plain_model(tmp_path, rec):
    from admn_ros.core.checkpoint import load_checkpoint

    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 2,
                                                                  "single_modality_weight": 0.5}))
    run_stage(cfg, "backbone")
    h = history(tmp_path / "run", "admn")
    assert h[-1]["step"] == 6 and all(r["alone_cm"] > 0 for r in h)
    model, _ = tiny_model_and_inputs()
    load_checkpoint(tmp_path / "run" / "admn.pt", model)  # no wrapper keys in the weights
    with pytest.raises(ValueError, match="single_modality_weight"):
        from admn_ros.train.config import validate
        bad = load_train_config(tiny_recipe(tmp_path, rec,
                                            backbone={"single_modality_weight": -1.0}))
        validate(bad, bad.model_config())


# --------------------------------------------------------------------------------------------
# controllers: the mean's error in the task loss (controller.dist_weight)
# --------------------------------------------------------------------------------------------
def test_controller_dist_weight_adds_the_error_to_its_task_loss(tmp_path, rec):
    from admn_ros.core.config import NoiseConfig, load_model_config
    from admn_ros.core.controller import Controller
    from admn_ros.train.config import StageConfig, validate
    from admn_ros.train.tasks import ControllerTask

    model, inputs = tiny_model_and_inputs()
    torch.manual_seed(1)
    controller = Controller(load_model_config(TINY_MODEL))
    batch = {"inputs": inputs, "target": torch.rand(4, 2) * 100}
    noise = NoiseConfig(levels={"rgb": [0.0, 0.5], "depth": [0.0, 0.2], "radar": [0.0, 0.4]})
    out = {}
    for w in (0.0, 2.0):
        st = StageConfig(dist_weight=w, warmup_noise_epochs=0, noise_kinds=["binary"])
        task = ControllerTask(model, controller, st, noise, budget=4)
        torch.manual_seed(2)  # the controller's Gumbel draw
        out[w] = task.loss(batch, 0, 0, torch.Generator().manual_seed(0))
    (loss0, m0), (loss2, m2) = out[0.0], out[2.0]
    assert m0["error_cm"] == pytest.approx(m2["error_cm"]) and m0["error_cm"] > 0
    assert (loss2 - loss0).item() == pytest.approx(2.0 * m2["error_cm"], rel=1e-4)
    loss2.backward()  # the error reaches the controller's logits (straight-through mask)
    assert controller.logit_head[-1].weight.grad.abs().sum() > 0
    bad = load_train_config(tiny_recipe(tmp_path, rec, controller={"dist_weight": -0.1}))
    with pytest.raises(ValueError, match=r"controller\.dist_weight"):
        validate(bad, bad.model_config())


def test_candidate_objective_teaches_each_input_its_best_split(tmp_path, rec):
    from admn_ros.core.config import NoiseConfig, load_model_config
    from admn_ros.core.controller import Controller
    from admn_ros.train.config import StageConfig
    from admn_ros.train.tasks import ControllerTask, localisation_error_cm

    model, inputs = tiny_model_and_inputs()
    target = torch.rand(4, 2) * 100
    torch.manual_seed(1)
    controller = Controller(load_model_config(TINY_MODEL))
    noise = NoiseConfig(levels={"rgb": [0.0, 0.5], "depth": [0.0, 0.2], "radar": [0.0, 0.4]})
    st = StageConfig(objective="candidates", candidate_temperature_cm=1e-3)
    task = ControllerTask(model, controller, st, noise, budget=4)
    logits = torch.randn(4, 9, requires_grad=True)
    cands = task.candidates(4, logits, torch.Generator())[0]  # block 0 forced: one extra each
    assert cands.sum((1, 2)).tolist() == [4, 4, 4] and cands[:, :, 0].all()
    with torch.no_grad():
        errs = torch.stack([localisation_error_cm(model(inputs, c).mean, target) for c in cands])
    best = cands[errs.argmin(0)]  # [B, M, D]: each sample's best split
    task.runner.new_batch()
    loss, best_cm = task.candidate_loss(inputs, target, logits, 4, torch.Generator())
    assert best_cm.item() == pytest.approx(errs.min(0).values.mean().item(), rel=1e-5)
    free = ~controller.forced
    log_q = torch.log_softmax(logits[:, free], 1)
    expect = -(log_q * best.flatten(1)[:, free]).sum(1).mean()  # one free slot per split
    assert loss.item() == pytest.approx(expect.item(), rel=1e-4)
    opt = torch.optim.SGD([logits], lr=5.0)
    for _ in range(20):
        opt.zero_grad()
        task.runner.new_batch()
        task.candidate_loss(inputs, target, logits, 4, torch.Generator())[0].backward()
        opt.step()
    free_logits = logits.detach().masked_fill(controller.forced, -torch.inf)
    chosen = controller.forced | (free_logits >= free_logits.max(1, keepdim=True).values)
    assert torch.equal(chosen.view(4, 3, 3), best)
    st = StageConfig(objective="candidates", candidate_family="masks", max_candidates=6)
    masks = ControllerTask(model, controller, st, noise, budget=5).candidates(
        5, logits, torch.Generator().manual_seed(0))
    assert masks.shape == (4, 6, 3, 3) and masks.sum((2, 3)).eq(5).all()
    assert masks[..., 0].all() and len(masks[0].flatten(1).unique(dim=0)) > 1


def test_values_objective_fits_each_blocks_share_of_the_error(tmp_path, rec):
    from admn_ros.core.config import NoiseConfig, load_model_config
    from admn_ros.core.controller import Controller
    from admn_ros.train.config import StageConfig
    from admn_ros.train.tasks import ControllerTask, localisation_error_cm

    model, inputs = tiny_model_and_inputs()
    controller = Controller(load_model_config(TINY_MODEL))
    noise = NoiseConfig(levels={"rgb": [0.0, 0.5], "depth": [0.0, 0.2], "radar": [0.0, 0.4]})
    st = StageConfig(objective="values", candidate_family="masks", max_candidates=10,
                     candidate_temperature_cm=2.0)
    task = ControllerTask(model, controller, st, noise, budget=5)
    free = ~controller.forced  # 6 free slots, 2 of them chosen at budget 5
    cands = task.candidates(5, torch.zeros(4, 9), torch.Generator().manual_seed(0))
    member = cands.flatten(2)[:, :, free].float()  # [B, K, F]
    # an additive world: free block f adds w[b, f] cm to sample b's error
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)) * 10
    errs = 50.0 + torch.einsum("bkf,bf->bk", member, w)
    assert task.value_fit_loss(errs, member, -w / 2.0 + 3.0).item() == pytest.approx(0, abs=1e-6)
    logits = torch.zeros(4, 6, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        task.value_fit_loss(errs, member, logits).backward()
        opt.step()
    picked = logits.detach().topk(2, 1).indices.sort(1).values
    assert torch.equal(picked, w.topk(2, 1, largest=False).indices.sort(1).values)
    # through the frozen model: the candidates' measured errors, the same fit
    target = torch.rand(4, 2) * 100
    full_logits = torch.randn(4, 9, requires_grad=True)
    task.runner.new_batch()
    loss, best_cm = task.candidate_loss(inputs, target, full_logits, 5,
                                        torch.Generator().manual_seed(2))
    cands = task.candidates(5, full_logits, torch.Generator().manual_seed(2))
    with torch.no_grad():
        errs = torch.stack([localisation_error_cm(model(inputs, cands[0, j]).mean, target)
                            for j in range(10)], 1)  # [B, K]
    member = cands.flatten(2)[:, :, free].float()
    assert best_cm.item() == pytest.approx(errs.min(1).values.mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(
        task.value_fit_loss(errs, member, full_logits[:, free]).item(), rel=1e-4)
    loss.backward()
    assert full_logits.grad[:, free].abs().sum() > 0 and full_logits.grad[:, ~free].eq(0).all()


def test_local_candidates_search_around_the_controllers_pick(tmp_path, rec):
    from admn_ros.core.config import NoiseConfig, load_model_config
    from admn_ros.core.controller import Controller, top_l_mask
    from admn_ros.train.config import StageConfig
    from admn_ros.train.tasks import ControllerTask

    model, _ = tiny_model_and_inputs()
    controller = Controller(load_model_config(TINY_MODEL))
    noise = NoiseConfig(levels={"rgb": [0.0, 0.5], "depth": [0.0, 0.2], "radar": [0.0, 0.4]})
    st = StageConfig(objective="candidates", candidate_family="local", max_candidates=8)
    task = ControllerTask(model, controller, st, noise, budget=5)
    logits = torch.randn(4, 9)
    cands = task.candidates(5, logits, torch.Generator().manual_seed(0))  # [B, K, M, D]
    assert cands.shape == (4, 8, 3, 3) and cands.sum((2, 3)).eq(5).all()
    assert cands[..., 0].all()  # the forced blocks stay in every candidate
    pick = top_l_mask(logits, torch.full((4,), 5), controller.forced).bool()  # [B, M*D]
    flat = cands.flatten(2)  # [B, K, M*D]
    assert torch.equal(flat[:, 0], pick)  # first the controller's own pick...
    moved = (flat[:, 1:4] != pick[:, None]).sum(-1)  # ...then 3 single swaps of it
    assert moved.eq(2).all()
    assert torch.equal(flat[0, 4:], flat[1, 4:])  # the random half is shared by the batch


def test_controller_stage_with_the_candidate_objective(tmp_path, rec):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, controller={
        "objective": "candidates", "candidate_family": "local", "max_candidates": 4,
        "epochs": 2, "budgets": [4, 5],
        "per_budget": {5: {"objective": "task", "max_steps_per_epoch": 1}}}))
    run_stage(cfg, "backbone")
    run_stage(cfg, "controller")
    for job in ("controller_L4", "controller_universal"):
        h = history(tmp_path / "run", job)
        assert "best_cm" not in h[0] and h[-1]["best_cm"] > 0, job  # after the warm-up epoch
    # L = 5 trains by its own settings: the task loss, one step after the warm-up
    h4, h5 = (history(tmp_path / "run", f"controller_L{b}") for b in (4, 5))
    assert "best_cm" not in h5[-1] and h5[-1]["step"] - h5[0]["step"] == 1
    assert h4[-1]["step"] - h4[0]["step"] == 3
    # a finished job trained with other settings than the recipe's is not taken as finished
    other = load_train_config(tiny_recipe(tmp_path, rec, controller={
        "objective": "candidates", "candidate_family": "local", "max_candidates": 4,
        "epochs": 2, "budgets": [4, 5], "per_budget": {5: {"max_steps_per_epoch": 1}}}))
    with pytest.raises(ValueError, match=r"controller_L5/checkpoint\.pt: trained with other "
                                         r"stage settings \(objective\)"):
        run_stage(other, "controller", resume=True)
    with pytest.raises(ValueError, match="max_candidates"):
        from admn_ros.train.config import validate
        bad = load_train_config(tiny_recipe(tmp_path, rec, controller={"max_candidates": 0}))
        validate(bad, bad.model_config())
