"""The design-choice benchmarks (block order, noise prior) run on a tiny trained run and
decide on the validation split only."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_train_stages import tiny_recipe

from admn_ros.train.config import load_train_config
from admn_ros.train.main import run_stage

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    from admn_ros.data.testing import make_tiny_recording

    tmp = tmp_path_factory.mktemp("choices")
    rec = make_tiny_recording(tmp, frames=60, seed=2)
    small = {"epochs": 1, "max_steps_per_epoch": 2}
    recipe = tiny_recipe(tmp, rec, backbone=small, controller=small,
                         eval={"budgets": [3, 6], "batch_size": 16, "tune_samples": 6})
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_stage(load_train_config(path), "backbone")
    return tmp, path


def bench(script: str, *argv: str) -> None:
    old = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    finally:
        sys.argv = old


def test_block_order_scores_every_order_on_val(run):
    tmp, recipe = run
    bench("block_order.py", "--config", str(recipe), "--out", str(tmp / "res"))
    res = json.loads((tmp / "res" / "tiny_block_order.json").read_text())
    assert res["split"] == "val" and res["frames"] == 6
    assert set(res["orders"]) == {"sequential", "every_other", "spread"}
    assert res["orders"]["every_other"] == [0, 2, 1]
    assert len(res["error_cm"]) == 2 * 3 * 2  # clean/binary x orders x budgets
    assert all(v > 0 for v in res["error_cm"].values())
    assert "| every_other [0, 2, 1] |" in (tmp / "res" / "tiny_block_order.md").read_text()


def test_noise_prior_trains_one_controller_per_prior(run):
    tmp, recipe = run
    bench("noise_prior.py", "--config", str(recipe), "--priors", "0", "1.5",
          "--out", str(tmp / "prior"), "--results", str(tmp / "res"))
    for p in ("0", "1.5"):
        assert (tmp / "prior" / f"prior_{p}" / "controller_universal.pt").is_file()
    res = json.loads((tmp / "res" / "tiny_noise_prior.json").read_text())
    assert res["split"] == "val" and res["priors"] == [0.0, 1.5]
    assert set(res["error_cm"]) == {f"{p}/{k}/{b}" for p in ("0", "1.5")
                                    for k in ("binary", "discrete", "continuous")
                                    for b in (3, 6)}
    for key, blocks in res["blocks"].items():  # the controller spends exactly the budget
        assert sum(blocks) == pytest.approx(int(key.split("/")[2]), abs=0.02)


def test_linear_probe_fits_a_linear_target_and_reports_each_modality(run, capsys):
    probe = runpy.run_path(str(BENCH / "linear_probe.py"))
    g = np.random.default_rng(0)
    x = g.normal(size=(200, 6))
    y = x[:, :2] * 50.0 + 10.0  # cm, exactly linear in two features
    assert probe["ridge_error_cm"](x[:150], y[:150], x[150:], y[150:], 1e-3) < 0.1
    assert probe["ridge_error_cm"](x[:150], y[:150], x[150:], y[150:], 1e6) > 30  # shrunk
    rec = yaml.safe_load(run[1].read_text())["data"]["root"]
    bench("linear_probe.py", "--data", rec, "--img-size", "16", "--modalities", "depth",
          "--lam", "10")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("depth: ridge lambda 10: val ") and "chance" in line


def test_controller_probe_scores_controllers_per_noise_pattern(run):
    tmp, recipe = run
    run_stage(load_train_config(recipe), "controller")
    out = tmp / "probe.md"
    ctrl = tmp / "run" / "controller_L4.pt"
    bench("controller_probe.py", "--config", str(recipe), "--weights", str(tmp / "run"),
          "--budget", "4", "--controller", f"a={ctrl}", f"b={ctrl}", "--out", str(out))
    rows = [r for r in out.read_text().splitlines() if r.startswith("| ")][1:]  # no header
    assert rows[0].startswith("| all | 6 |")  # every val frame (tune_samples)
    assert sum(int(r.split(" | ")[1]) for r in rows[1:]) == 6  # each frame in one pattern
    for r in rows[1:]:
        full, naive, a, b = r.strip(" |").split(" | ")[2:]
        assert float(full) > 0 and float(naive) > 0
        assert a == b  # one checkpoint twice: the same masks and errors
        counts = [c.split(" x")[0] for c in a.split("(")[1].rstrip(")").split(", ")]
        assert all(sum(map(int, c.split("/"))) == 4 for c in counts)  # the whole budget


def test_controller_probe_premise_agrees_with_its_full_model(run, capsys):
    tmp, recipe = run
    bench("controller_probe.py", "--config", str(recipe), "--weights", str(tmp / "run"),
          "--budget", "4", "--premise")
    out = capsys.readouterr().out
    assert "Controller probe" not in out  # no controllers: the curves only
    tables = out.split("**")[1:]
    kinds = tables[::2]
    assert kinds == ["clean", "binary"]
    binary = {r.split(" | ")[0].strip("| "): [float(v) for v in r.strip(" |").split(" | ")[1:]]
              for r in tables[3].splitlines() if r.startswith("| ") and "curve" not in r}
    assert set(binary) == {"all", "rgb", "depth", "radar"}
    ctrl = tmp / "run" / "controller_L4.pt"
    if not ctrl.exists():
        run_stage(load_train_config(recipe), "controller")
    bench("controller_probe.py", "--config", str(recipe), "--weights", str(tmp / "run"),
          "--budget", "4", "--controller", f"a={ctrl}")
    probe_all = capsys.readouterr().out.split("| all | 6 | ")[1].split(" | ")
    # the same frames and corruption draws: every block of every backbone = the full model
    assert binary["all"][-1] == pytest.approx(float(probe_all[0]), abs=0.11)  # both rounded
