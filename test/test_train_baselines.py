"""Competing methods (DynMM, MMExit, M2SN) through `admn train` and `admn eval` on a tiny run."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import yaml
from test_train_eval import eval_cli
from test_train_stages import tiny_recipe

from admn_ros.train.config import load_train_config
from admn_ros.train.main import run_stage
from admn_ros.train.state import load_training_state

METHODS = ("dynmm", "mmexit", "m2sn")
STAGE = {"epochs": 4, "batch_size": 8, "lr": 3.0e-3, "max_steps_per_epoch": 3,
         "schedule": "constant", "noise_kinds": ["binary"]}
SWEEPS = {"dynmm": {"sweep": [0.0, 0.1, 1.0, 10.0]},
          "mmexit": {"sweep": [0.0, 20.0, 50.0, 1000.0], "budgets": [6]},
          "m2sn": {"sweep": [0.0, 0.1, 1.0, 10.0]}}


def baseline_recipe(tmp: Path, rec: Path, **over) -> dict:
    small = {"epochs": 2, "max_steps_per_epoch": 2}
    recipe = tiny_recipe(tmp, rec, backbone=small,
                         controller=dict(small, budgets=[], universal=True),
                         eval={"budgets": [3, 4, 6], "batch_size": 16, "max_samples": 9,
                               **SWEEPS})
    recipe.update(dynmm=dict(STAGE, pretrain_epochs=1, gate_init="auto"), mmexit=dict(STAGE),
                  m2sn=dict(STAGE, pretrain_epochs=1, gate_init="auto"))
    for k, v in over.items():
        recipe[k] = dict(recipe[k], **v)
    return recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    from admn_ros.data.testing import make_tiny_recording

    tmp = tmp_path_factory.mktemp("baselines")
    rec = make_tiny_recording(tmp, frames=60, seed=2)
    recipe = baseline_recipe(tmp, rec)
    cfg = load_train_config(recipe)
    for stage in ("backbone", "controller", *METHODS):
        run_stage(cfg, stage)
    return tmp, recipe


@pytest.mark.parametrize("method", METHODS)
def test_stage_trains_and_loss_falls(run, method):
    from admn_ros.core.baselines import load_baseline_checkpoint

    tmp, _ = run
    h = load_training_state(tmp / "run" / method / "checkpoint.pt")["history"]
    assert [r["step"] for r in h] == [3, 6, 9, 12]
    assert h[-1]["task"] < h[0]["task"] and h[-1]["loss"] < h[0]["loss"]
    assert "val_binary_cm" in h[-1] and h[-1]["gflops"] > 0
    ck = load_baseline_checkpoint(tmp / "run" / f"{method}.pt", kind=method)
    assert ck.meta["stage"] == method and ck.meta["step"] == 12


def test_baseline_stage_needs_the_admn_checkpoint(tmp_path, run):
    _, recipe = run
    cfg = load_train_config(dict(recipe, out_dir=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match=r"admn\.pt.*admn train backbone"):
        run_stage(cfg, "mmexit")


def test_eval_rows_sweeps_and_combined_plot(run):
    from admn_ros.train.evaluate import evaluate

    tmp, recipe = run
    out, res = eval_cli(tmp, recipe)
    assert set(res["baselines"]) == {"binary", "discrete", "continuous"}
    for methods in res["baselines"].values():
        assert set(methods) == set(METHODS)
        for method, points in methods.items():
            sweep = [p for p in points if "budget" not in p]
            assert [p["knob"] for p in sweep] == SWEEPS[method]["sweep"]
            for p in points:
                assert p["error_cm"] >= 0 and p["gflops"] > 0 and p["latency_ms"] > 0
            flops = [p["gflops"] for p in sweep]  # knob up -> cheaper (or equal)
            assert all(a >= b for a, b in itertools.pairwise(flops)), (method, flops)
            assert flops[0] > flops[-1] or method == "dynmm"
        calibrated = [p for p in methods["mmexit"] if "budget" in p]
        assert [p["budget"] for p in calibrated] == [6]
        l6 = res["tables"]["binary"]["naive"]["6"]["gflops"] + res["controller_gflops"]
        assert calibrated[0]["gflops"] <= l6 + 1e-3
    md = (out / "tiny.md").read_text()
    assert "## Competing methods vs ADMN at matched compute" in md
    for kind in ("binary", "discrete", "continuous"):
        assert f"### {kind} noise" in md
    for label in ("DynMM", "MMExit", "M2SN"):
        assert f"- {label}: better than ADMN at matched compute in" in md
    assert (out / "tiny_error_vs_gflops.png").stat().st_size > 1000
    # the Table-1 rows are the same with or without the methods
    none = {m: {"sweep": [], "budgets": []} for m in METHODS}
    bare = evaluate(load_train_config(dict(recipe, eval=dict(recipe["eval"], **none))),
                    progress=False)
    assert bare["baselines"] == {} and bare["tables"] == res["tables"]


def test_eval_skips_a_method_without_checkpoint(run, tmp_path, capsys):
    from admn_ros.train.evaluate import evaluate, write_report

    tmp, recipe = run
    shutil.copy(tmp / "run" / "admn.pt", tmp_path / "admn.pt")
    shutil.copy(tmp / "run" / "m2sn.pt", tmp_path / "m2sn.pt")
    res = evaluate(load_train_config(recipe), weights=str(tmp_path), progress=False)
    text = capsys.readouterr().out
    assert "dynmm: no checkpoint" in text and "mmexit: no checkpoint" in text
    assert all(set(m) == {"m2sn"} for m in res["baselines"].values())
    (tmp_path / "m2sn.pt").unlink()
    res = evaluate(load_train_config(recipe), weights=str(tmp_path), progress=False)
    assert res["baselines"] == {}
    paths = write_report(res, tmp_path / "report")
    assert not any(p.name.endswith("error_vs_gflops.png") for p in paths)
    assert "Competing methods" not in (tmp_path / "report" / "tiny.md").read_text()


def test_eval_bad_input(run, tmp_path):
    from admn_ros.train.evaluate import evaluate

    tmp, recipe = run
    ev = recipe["eval"]
    with pytest.raises(ValueError, match=r"eval\.dynmm\.sweep\[1\]: expected lam in \[0"):
        load_and_eval(recipe, dynmm={"sweep": [0.0, -1.0]})
    with pytest.raises(ValueError, match=r"eval\.mmexit\.sweep\[0\]: expected threshold_cm"):
        load_and_eval(recipe, mmexit={"sweep": [float("nan")]})
    with pytest.raises(ValueError, match=r"eval\.m2sn\.budgets: expected 3 <= L <= 9"):
        load_and_eval(recipe, m2sn={"sweep": [], "budgets": [12]})
    # a budget below the method's cheapest operating point: MMExit with exits at depths 2, 3
    # only (its own method config) cannot meet ADMN at L=3
    cfg_path = tmp_path / "mmexit_late.yaml"
    cfg_path.write_text(yaml.safe_dump({"method": "mmexit", "exit_depths": [2, 3]}))
    late = dict(recipe, out_dir=str(tmp_path / "late"),
                mmexit=dict(recipe["mmexit"], epochs=1, max_steps_per_epoch=1,
                            baseline_config=str(cfg_path)))
    (tmp_path / "late").mkdir()
    shutil.copy(tmp / "run" / "admn.pt", tmp_path / "late" / "admn.pt")
    run_stage(load_train_config(late), "mmexit")
    with pytest.raises(ValueError, match=r"eval\.mmexit\.budgets: L=3 .*MMExit cannot meet"):
        load_and_eval(late, mmexit={"sweep": [], "budgets": [3]})
    # another method's checkpoint under this method's name
    shutil.copy(tmp / "run" / "admn.pt", tmp_path / "admn.pt")
    shutil.copy(tmp / "run" / "m2sn.pt", tmp_path / "dynmm.pt")
    with pytest.raises(ValueError, match=r"dynmm\.pt.*expected a 'dynmm' checkpoint, got 'm2sn'"):
        evaluate(load_train_config(dict(recipe, eval=ev)), weights=str(tmp_path),
                 progress=False)


def load_and_eval(recipe: dict, **sweeps) -> dict:
    from admn_ros.train.evaluate import evaluate

    return evaluate(load_train_config(dict(recipe, eval=dict(recipe["eval"], **sweeps))),
                    progress=False)


def test_the_sweep_plot_draws_each_points_interval_against_admn() -> None:
    from admn_ros.train.evaluate_baselines import interval_bars

    points = [{"vs_admn": {"diff_cm": 2.0, "lo": 0.5, "hi": 4.0}}, {}]  # second: no ADMN match
    assert interval_bars(points) == [[1.5, 0.0], [2.0, 0.0]]


def test_a_point_wins_or_loses_only_where_its_interval_excludes_zero():
    from admn_ros.train.evaluate_baselines import point_verdict

    def point(diff: float, lo: float, hi: float) -> dict:
        return {"error_cm": 30.0, "vs_admn": {"diff_cm": diff, "lo": lo, "hi": hi}}

    assert point_verdict(point(-0.9, -2.0, -0.5), 31.0)[0] == "wins"
    assert point_verdict(point(1.3, 0.2, 2.0), 29.0)[0] == "loses"
    assert point_verdict(point(0.1, -0.7, 0.6), 29.9) == \
        ("level", 0.1, "level: +0.1 cm [-0.7, +0.6]")
    assert point_verdict({"error_cm": 30.0}, 31.0) == ("wins", -1.0, "wins by 1.0 cm")
    assert point_verdict({"error_cm": 30.0}, 30.0)[0] == "level"
