"""Reproducible training: recipes fix steps, not wall clock (docs/ARCHITECTURE.md).

A stage runs exactly its configured steps however slow each step is; `--time-budget` stops a
job early and the job records it; the same seed on one CPU thread gives identical metrics.
"""

from __future__ import annotations

import time

import pytest
import torch
from test_train_stages import tiny_recipe

from admn_ros.core.checkpoint import read_checkpoint
from admn_ros.train import tasks
from admn_ros.train.config import load_train_config
from admn_ros.train.main import epoch_plan, run_stage
from admn_ros.train.state import load_training_state

SLOW_S = 0.05  # per step: slower than a (tiny) time budget allows for all steps


@pytest.fixture
def rec(tmp_path_factory) -> object:
    from admn_ros.data.testing import make_tiny_recording

    return make_tiny_recording(tmp_path_factory.mktemp("rec"), frames=60, seed=0)


@pytest.fixture
def slow_steps(monkeypatch) -> None:
    real = tasks.BackboneTask.loss

    def slowed(self, batch, epoch, step, gen):
        time.sleep(SLOW_S)
        return real(self, batch, epoch, step, gen)

    monkeypatch.setattr(tasks.BackboneTask, "loss", slowed)


def test_stage_runs_exactly_the_configured_steps_however_slow(tmp_path, rec, slow_steps):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 3}))
    run_stage(cfg, "backbone")
    meta = read_checkpoint(tmp_path / "run" / "admn.pt")["meta"]
    assert (meta["step"], meta["steps_planned"], meta["stopped_early"]) == (9, 9, False)
    prov = meta["provenance"]
    assert prov["threads"] == 1 and prov["torch"] == str(torch.__version__)
    assert prov["wall_s"] >= 9 * SLOW_S and meta["seed"] == 0


def test_time_budget_stops_early_and_records_it(tmp_path, rec, slow_steps, capsys):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 3}))
    run_stage(cfg, "backbone", time_budget_min=2.5 * SLOW_S / 60)  # < 9 slowed steps
    meta = read_checkpoint(tmp_path / "run" / "admn.pt")["meta"]
    n = meta["step"]
    assert 1 <= n < 9 and meta["steps_planned"] == 9 and meta["stopped_early"] is True
    assert f"STOPPED EARLY at step {n} of 9" in capsys.readouterr().out
    assert meta["stopped"].startswith(f"stopped at step {n} of 9")
    h = load_training_state(tmp_path / "run" / "admn" / "checkpoint.pt")["history"]
    assert h[-1]["stopped_early"] == 1 and h[-1]["steps_planned"] == 9 and h[-1]["step"] == n
    with pytest.raises(ValueError, match="--time-budget"):
        run_stage(cfg, "backbone", time_budget_min=0.0)


def test_model_card_says_stopped_early(tmp_path, rec, slow_steps):
    from admn_ros.train.weights import export, write_card

    cfg = load_train_config(tiny_recipe(tmp_path, rec, backbone={"epochs": 3}))
    run_stage(cfg, "backbone", time_budget_min=2.5 * SLOW_S / 60)
    export(cfg)
    card = write_card(cfg).read_text()
    assert "**stopped early**: stopped at step" in card and " of 9 (time budget" in card


def test_same_seed_same_metrics_on_one_thread(tmp_path, rec):
    torch.set_num_threads(1)
    rows = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        recipe = tiny_recipe(tmp_path / name, rec, backbone={"epochs": 2},
                             controller={"epochs": 2, "budgets": [4], "universal": False})
        cfg = load_train_config(recipe)
        run_stage(cfg, "backbone")
        run_stage(cfg, "controller")
        run = tmp_path / name / "run"
        rows.append([{k: v for k, v in r.items() if k != "seconds"}
                     for job in ("admn", "controller_L4")
                     for r in load_training_state(run / job / "checkpoint.pt")["history"]])
    assert rows[0] == rows[1]
    assert any("val_clean_cm" in r for r in rows[0]) and any("val_binary_L4_cm" in r
                                                             for r in rows[0])


def test_epoch_plan_is_the_recipe_not_the_machine(tmp_path, rec):
    cfg = load_train_config(tiny_recipe(tmp_path, rec, controller={"max_warmup_steps": 2}))
    assert epoch_plan(cfg.backbone, 42, "backbone") == [3, 3, 3, 3]
    assert epoch_plan(cfg.controller, 42, "controller") == [2, 3, 3, 3]  # 1 head-only epoch
    assert epoch_plan(cfg.backbone, 20, "backbone") == [2, 2, 2, 2]  # 20 // 8 < cap 3


def test_estimate_counts_each_controllers_own_steps(tmp_path, rec):
    from admn_ros.train.estimate import estimate

    cfg = load_train_config(tiny_recipe(
        tmp_path, rec, mae={"epochs": 0}, controller_ae={"epochs": 0},
        controller={"budgets": [4, 5], "max_warmup_steps": 2,
                    "per_budget": {5: {"objective": "candidates", "max_steps_per_epoch": 1}}}))
    stages = {e.stage: e for e in estimate(cfg, n_train=42, warm_steps=1)}
    assert sorted(stages) == ["backbone", "controller"]
    c = stages["controller"]
    assert (c.jobs, c.head_steps) == (3, 3 * 2)  # L4, L5, universal: one warm-up epoch each
    assert c.steps - c.head_steps == 3 * 3 + 3 * 1 + 3 * 3
    assert c.seconds > 0 and stages["backbone"].steps == 4 * 3
