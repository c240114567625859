"""Table-1 evaluation, default-weight export / loading on a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_train_stages import tiny_recipe

from admn_ros.train.config import load_train_config
from admn_ros.train.evaluate import goal_lines
from admn_ros.train.main import run_stage


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    from admn_ros.data.testing import make_tiny_recording

    tmp = tmp_path_factory.mktemp("evalrun")
    rec = make_tiny_recording(tmp, frames=60, seed=1)
    small = {"epochs": 2, "max_steps_per_epoch": 2}
    recipe = tiny_recipe(tmp, rec, backbone=small, controller=small, controller_ae=small,
                         eval={"budgets": [3, 4, 6], "batch_size": 16, "max_samples": 9,
                               "exhaustive_max_masks": 6, "noise_repeats": 2,
                               "bootstrap_samples": 200, "bootstrap_block": 2,
                               "pattern_min_samples": 1})
    cfg = load_train_config(recipe)
    for stage in ("backbone", "controller", "controller-ae"):
        run_stage(cfg, stage)
    return tmp, recipe


def eval_cli(tmp: Path, recipe: dict) -> tuple[Path, dict]:
    """`admn eval` on `recipe` (written to tmp) -> (report dir, its JSON)."""
    from admn_ros.cli import main

    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp / "report"
    assert main(["eval", "--config", str(path), "--out", str(out)]) == 0
    return out, json.loads((out / f"{recipe['recipe']}.json").read_text())


@pytest.fixture(scope="module")
def report(run) -> tuple[Path, dict]:
    return eval_cli(*run)


def test_eval_writes_every_table_and_plot(report):
    out, res = report
    assert res["recipe"] == "tiny" and res["total_blocks"] == 9 and res["budgets"] == [3, 4, 6]
    assert set(res["tables"]) == {"binary", "discrete", "continuous"}
    for table in res["tables"].values():
        assert {"upper_bound", "admn", "admn_universal", "admn_ae", "naive", "random",
                "single_rgb", "single_depth", "single_radar"} <= set(table)
        assert set(table["upper_bound"]) == {"3", "4", "6"}
        assert set(table["admn"]) == {"4"}  # per-budget controller trained for L=4 only
        for row in table.values():
            for cell in row.values():
                assert cell["error_cm"] >= 0 and cell["gflops"] > 0
        full = table["upper_bound"]["6"]["gflops"]
        assert table["naive"]["3"]["gflops"] < table["naive"]["6"]["gflops"] < full
    md = (out / "tiny.md").read_text()
    for kind in ("binary", "discrete", "continuous"):
        assert f"## {kind} noise" in md
    assert (out / "tiny_error_vs_budget.png").stat().st_size > 1000
    assert (out / "tiny_allocation.png").stat().st_size > 1000
    assert "## What allocation can gain" in md and "| per noise pattern (val) |" in md


def test_eval_allocation_bounds(report):
    _, res = report
    for kind, families in res["bounds"].items():
        splits = families["splits"]
        assert [splits[b]["masks"] for b in ("3", "4", "6")] == [1, 3, 7]
        for b, cell in splits.items():
            best, hind = cell["best_static"], cell["best_static_in_hindsight"]
            assert sum(map(len, best["blocks"])) == int(b) and best["tuned_on"] == "val"
            # chosen on val, scored on test: never better than the test's own best
            assert cell["oracle_cm"] <= hind["error_cm"] <= best["error_cm"] + 0.01
            per_pattern = cell["best_per_noise_pattern"]
            assert per_pattern["tuned_on"] == "val" and per_pattern["patterns"] >= 1
            assert cell["oracle_cm"] <= per_pattern["error_cm"] + 0.01
        # one mask at L=3: every figure is the same mask's
        assert abs(splits["3"]["oracle_cm"] - splits["3"]["best_static"]["error_cm"]) < 0.01
        if kind != "binary":
            assert set(families) == {"splits"}
            continue
        # every mask where there are <= 6 of them (L=6 has 20): splits are a subset
        exhaustive = families["exhaustive"]
        assert {b: c["masks"] for b, c in exhaustive.items()} == {"3": 1, "4": 6}
        for b, cell in exhaustive.items():
            assert cell["oracle_cm"] <= splits[b]["oracle_cm"] + 0.01
        # the best_static row of Table 1 is the val choice over every family
        row = res["tables"][kind]["best_static"]
        assert set(row) == {"3", "4", "6"}


def test_eval_protocol_seeds_intervals_and_comparisons(report):
    out, res = report
    assert res["split"] == "test" and res["tune_split"] == "val" and res["noise_repeats"] == 2
    assert res["samples"] == 9 and not res["quick"]
    assert {"admn_demo.pt", "admn.pt"} & set(res["weight_files"])
    for kind, table in res["tables"].items():
        for row in table.values():
            for cell in row.values():
                lo, hi = cell["ci95"]
                assert lo <= cell["error_cm"] <= hi and len(cell["seed_error_cm"]) == 2
        cell = res["comparisons"][kind]["4"]
        assert cell["reference"] == "admn"
        assert {"naive", "random", "best_static", "single_radar", "upper_bound"} <= set(cell)
        for ci in (v for k, v in cell.items() if k != "reference"):
            assert ci["lo"] <= ci["diff_cm"] <= ci["hi"]
        naive = table["naive"]["4"]["error_cm"]
        assert cell["naive"]["diff_cm"] == pytest.approx(table["admn"]["4"]["error_cm"] - naive,
                                                         abs=0.02)
        assert res["comparisons"][kind]["6"]["reference"] == "admn_universal"
    md = (out / "tiny.md").read_text()
    assert "## ADMN against every other row" in md and "2 corruption seed(s)" in md
    assert (out / "tiny_comparisons.png").stat().st_size > 1000


def test_eval_refuses_to_tune_on_test(run):
    from admn_ros.train.config import validate
    from admn_ros.train.data import load_split
    from admn_ros.train.evaluate import check_tuning_split

    _, recipe = run
    for tune, split in (("test", "test"), ("val", "val")):  # test, or the reported split
        cfg = load_train_config(dict(recipe, eval=dict(recipe["eval"], tune_split=tune,
                                                        split=split)))
        with pytest.raises(ValueError, match="tune_split"):
            validate(cfg, cfg.model_config())
    cfg = load_train_config(dict(recipe, eval=dict(recipe["eval"], pattern_min_samples=0)))
    with pytest.raises(ValueError, match=r"pattern_min_samples >= 1, got .* 0"):
        validate(cfg, cfg.model_config())
    cfg = load_train_config(recipe)
    test = load_split(recipe["data"]["root"], "test", cfg.model_config())
    with pytest.raises(ValueError, match="tuning on the test split is refused"):
        check_tuning_split(test)
    check_tuning_split(load_split(recipe["data"]["root"], "val", cfg.model_config()))


def test_quick_eval_says_so(run, tmp_path):
    from admn_ros.train.evaluate import evaluate, summary, to_markdown

    _, recipe = run
    cfg = load_train_config(dict(recipe, eval=dict(recipe["eval"], quick_samples=4,
                                                    noise_repeats=1)))
    res = evaluate(cfg, progress=False, quick=True)
    assert res["quick"] and res["samples"] == 4
    assert "(`--quick` subset)" in to_markdown(res) and "--quick subset" in summary(res)


def test_allocation_scores_best_static_and_oracle() -> None:
    from types import SimpleNamespace

    from admn_ros.train.allocation_bounds import AllocationScores, split_candidates

    a, b = split_candidates(3, 4, 4)[:2]  # (1, 1, 2) and (1, 2, 1)
    errors = {a.numpy().tobytes(): [1.0, 5.0], b.numpy().tobytes(): [3.0, 2.0]}

    def runner(inputs, mask):  # error of each sample = its distance from the origin
        e = torch.tensor(errors[mask[0].numpy().tobytes()])
        return SimpleNamespace(mean=torch.stack([e, torch.zeros(2)], dim=1))

    scores = AllocationScores({4: [a, b], 5: []})
    assert scores.result() == {}
    scores.add(runner, {}, torch.zeros(2, 2))
    scores.add(runner, {}, torch.zeros(2, 2))
    # means: a 3.0, b 2.5 -> b is the best static mask; oracle: per sample min (1, 2) -> 1.5
    assert scores.result() == {"4": {"masks": 2, "oracle_cm": 1.5, "best_static": {
        "blocks": [[0], [0, 2], [0]], "error_cm": 2.5}}}


def test_best_candidate_per_noise_pattern() -> None:
    from types import SimpleNamespace

    from admn_ros.train.allocation_bounds import (
        AllocationScores,
        noise_pattern,
        split_candidates,
    )

    # sigma [B=3, S=3 nodes, M=2]: per modality, how many nodes are noisy, base-4 digits
    sigma = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 0.2]],
                          [[0.5, 0.0], [0.9, 0.0], [1.0, 0.49]],
                          [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    assert noise_pattern(sigma).tolist() == [0 * 4 + 2, 3 * 4 + 0, 0]
    a, b = split_candidates(3, 4, 4)[:2]
    # pattern 7: a is better (1 vs 4); pattern 9: b is better (6 vs 2)
    errors = {a.numpy().tobytes(): [1.0, 6.0, 1.0], b.numpy().tobytes(): [4.0, 2.0, 4.0]}

    def runner(inputs, mask):
        e = torch.tensor(errors[mask[0].numpy().tobytes()])
        return SimpleNamespace(mean=torch.stack([e, torch.zeros(3)], dim=1))

    scores = AllocationScores({4: [a, b]})
    scores.add(runner, {}, torch.zeros(3, 2), torch.tensor([7, 9, 7]))
    assert scores.index(4, b) == 1
    assert scores.best_for_pattern(4, min_samples=1) == {7: 0, 9: 1}
    assert scores.best_for_pattern(4, min_samples=2) == {7: 0}  # pattern 9 seen once
    # static a: (1 + 6 + 1) / 3; per pattern: (1 + 2 + 1) / 3; 9 unknown -> the fallback b
    assert scores.mean_error(4, a) == round(8 / 3, 2)
    assert scores.choice_error(4, {7: 0, 9: 1}, fallback=0) == round(4 / 3, 2)
    assert scores.choice_error(4, {7: 0}, fallback=1) == round(4 / 3, 2)
    assert scores.choice_error(4, {}, fallback=1) == round(10 / 3, 2)
    with pytest.raises(ValueError, match="no noise patterns"):
        AllocationScores({4: [a]}).choice_error(4, {}, fallback=0)


def test_allocation_candidates() -> None:
    from admn_ros.train.allocation_bounds import (
        exhaustive_candidates,
        num_masks,
        split_candidates,
    )

    masks = exhaustive_candidates(3, 4, 5)
    assert len(masks) == num_masks(3, 4, 5) == 36
    assert len({m.numpy().tobytes() for m in masks}) == 36
    assert all(int(m.sum()) == 5 and bool(m[:, 0].all()) for m in masks)
    keys = {m.numpy().tobytes() for m in masks}
    assert all(m.numpy().tobytes() in keys for m in split_candidates(3, 4, 5))


def test_premise_curves_agree_with_the_table(report):
    """Depth curves (issue 20) on the tables' frames and first corruption seed: at k = D every
    backbone runs all blocks (upper bound); at k = 2 of 3 modalities, the naive split of 6."""
    out, res = report
    pre = res["premise"]
    assert pre["blocks"] == [1, 2, 3] and set(pre["curves"]) == {"clean", "binary"}
    binary, table = pre["curves"]["binary"], res["tables"]["binary"]
    assert set(binary) == {"all", "rgb", "depth", "radar"}
    assert binary["all"][2] == pytest.approx(table["upper_bound"]["6"]["seed_error_cm"][0],
                                             abs=0.02)  # k = 3 of 3
    assert binary["all"][1] == pytest.approx(table["naive"]["6"]["seed_error_cm"][0], abs=0.02)
    assert binary["all"][0] == binary["rgb"][0]  # k = 1: block 0 everywhere
    assert pre["curves"]["clean"]["all"] != binary["all"]
    assert "## Does depth matter?" in (out / "tiny.md").read_text()
    assert (out / "tiny_premise.png").stat().st_size > 1000


def test_premise_counts_follow_min_blocks() -> None:
    from admn_ros.core.config import load_model_config
    from admn_ros.train.premise import premise_counts

    cfg = load_model_config("config/model/demo_min0.yaml")
    counts = premise_counts(cfg)  # k = 0..8
    assert counts["all"][0] == [0, 0, 0] and counts["all"][8] == [8, 8, 8]
    assert counts["depth"][3] == [0, 3, 0]
    one = premise_counts(load_model_config("config/model/demo.yaml"))  # k = 1..8
    assert len(one["all"]) == 8 and one["all"][0] == [1, 1, 1] and one["radar"][4] == [1, 1, 5]


def test_eval_rows_share_the_fixed_corruption(run):
    from admn_ros.train.evaluate import evaluate

    _, recipe = run
    cfg = load_train_config(recipe)
    a = evaluate(cfg, progress=False)["tables"]
    b = evaluate(cfg, progress=False)["tables"]
    assert a == b


def test_eval_budget_outside_controller_range(run):
    from admn_ros.train.evaluate import evaluate

    _, recipe = run
    cfg = load_train_config(dict(recipe, eval=dict(recipe["eval"], budgets=[3, 8])))
    with pytest.raises(ValueError, match=r"range 3\.\.6"):
        evaluate(cfg, progress=False)


@pytest.mark.parametrize("change, match", [
    ({"budgets": [99]}, r"eval\.budgets"),
    ({"exhaustive_max_masks": -1}, r"eval\.exhaustive_max_masks"),
    ({"exhaustive_noise": ["foggy"]}, r"exhaustive_noise"),
    ({"premise_noise": ["foggy"]}, r"eval\.premise_noise"),
])
def test_bad_eval_section(run, change, match):
    from admn_ros.train.config import validate

    _, recipe = run
    with pytest.raises(ValueError, match=match):
        cfg = load_train_config(dict(recipe, eval=dict(recipe["eval"], **change)))
        validate(cfg, cfg.model_config())


def test_export_and_load_default_weights(run):
    from admn_ros.train.weights import export, load_default_weights, write_card

    tmp, recipe = run
    cfg = load_train_config(recipe)
    files = export(cfg)
    models = tmp / "models"
    names = sorted(p.name for p in files)
    assert names == ["admn_tiny.pt", "admn_tiny_backbone_depth.pt", "admn_tiny_backbone_radar.pt",
                     "admn_tiny_backbone_rgb.pt", "controller_tiny_L4.pt",
                     "controller_tiny_ae.pt", "controller_tiny_universal.pt"]
    raw = torch.load(models / "admn_tiny.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values()
               if v.is_floating_point())
    dw = load_default_weights(models, "tiny", cfg.model_config())
    assert set(dw.controllers) == {"L4", "ae", "universal"}
    assert all(p.dtype == torch.float32 for p in dw.model.parameters())
    assert dw.controller_for(4) is dw.controllers["L4"]
    assert dw.controller_for(5) is dw.controllers["universal"]
    with pytest.raises(ValueError, match="budget"):
        dw.controller_for(8)
    card = write_card(cfg, train_seconds=60)
    text = card.read_text()
    assert "SHA-256" in text and "admn_tiny.pt" in text

    # a damaged file: hash mismatch names the path and `make train`
    victim = models / "controller_tiny_L4.pt"
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ValueError, match=r"controller_tiny_L4\.pt.*make train"):
        load_default_weights(models, "tiny", cfg.model_config())
    # a damaged backbone shard
    shard = models / "admn_tiny_backbone_rgb.pt"
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"admn_tiny_backbone_rgb\.pt"):
        load_default_weights(models, "tiny", cfg.model_config(), controllers=False)
    # a missing file
    victim.unlink()
    (models / "admn_tiny.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"admn_tiny\.pt.*make train"):
        load_default_weights(models, "tiny", cfg.model_config())


def test_weights_trained_under_other_preprocessing_are_refused(run, tmp_path):
    """Training records the input preprocessing in each file's meta, export keeps it, and
    the loaders (shipped weights, nodes) refuse weights trained under other settings."""
    from admn_ros.data.preprocess import input_settings
    from admn_ros.nodes.models import WeightsError, load_module
    from admn_ros.train.weights import export, load_default_weights, write_sums

    _, recipe = run
    models = tmp_path / "m"
    cfg = load_train_config(dict(recipe, models_dir=str(models)))
    export(cfg)
    main = models / "admn_tiny.pt"
    raw = torch.load(main, weights_only=True)
    assert raw["meta"]["preprocess"] == input_settings()
    load_default_weights(models, "tiny", cfg.model_config())  # as trained: loads
    filled = input_settings()["depth_hole_fill_px"] + 3
    raw["meta"]["preprocess"] = dict(raw["meta"]["preprocess"], depth_hole_fill_px=filled)
    torch.save(raw, main)
    write_sums(models)
    want = rf"admn_tiny\.pt: .*depth_hole_fill_px: trained with {filled}, config/data\.yaml has"
    with pytest.raises(ValueError, match=want):
        load_default_weights(models, "tiny", cfg.model_config(), controllers=False)
    with pytest.raises(WeightsError, match=want):
        load_module(str(main), "admn")


def test_default_weights_from_another_config(run, tmp_path):
    from admn_ros.train.weights import export, load_default_weights

    _, recipe = run
    cfg = load_train_config(dict(recipe, models_dir=str(tmp_path / "m")))
    export(cfg)
    other = yaml.safe_load(Path(recipe["model"]).read_text())
    other["backbone"]["depth"] = 4
    with pytest.raises(ValueError, match=r"backbone\.depth"):
        load_default_weights(tmp_path / "m", "tiny", other)


def test_controller_for_another_main_network_is_refused(run, tmp_path):
    """A controller whose main network differs (its own section may) is refused by name."""
    from admn_ros.train.weights import export, load_controller, load_default_weights, write_sums

    _, recipe = run
    models = tmp_path / "m"
    cfg = load_train_config(dict(recipe, models_dir=str(models)))
    export(cfg)
    path = sorted(models.glob("controller_tiny_*.pt"))[0]
    raw = torch.load(path, weights_only=True)
    raw["model_config"]["controller"]["gumbel_tau"] = 0.5  # its own section: accepted
    torch.save(raw, path)
    write_sums(models)
    assert load_controller(path, cfg.model_config()).training is False
    raw["model_config"]["fusion"]["depth"] += 1  # the controller never reads it
    torch.save(raw, path)
    write_sums(models)
    want = rf"{path.name}: controller was trained for another model config .*fusion\.depth"
    with pytest.raises(ValueError, match=want):
        load_controller(path, cfg.model_config())
    with pytest.raises(ValueError, match=want):
        load_default_weights(models, "tiny", cfg.model_config())


def test_goal_lines_report_each_ratio_against_the_recipes_goals() -> None:
    def cell(e: float) -> dict:
        return {"error_cm": e}

    table = {"upper_bound": {"6": cell(20.0), "8": cell(20.0)},
             "admn": {"6": cell(25.0), "8": cell(22.0)},
             "admn_universal": {"6": cell(27.5), "8": cell(22.0)},
             "naive": {"6": cell(40.0)}, "random": {"6": cell(50.0)}}
    discrete = {"upper_bound": {"6": cell(30.0)}, "admn": {"6": cell(36.0)}}
    bounds = {"binary": {"splits": {"6": {"masks": 10, "oracle_cm": 16.0, "best_static": {
        "blocks": [[0], [0], [0, 2, 4, 6]], "error_cm": 20.0}, "best_per_noise_pattern": {
        "error_cm": 18.0, "patterns": 12}}}}}
    premise = {"curves": {"clean": {"all": [70.0, 12.0]}}}
    res = {"tables": {"binary": table, "discrete": discrete}, "budgets": [6, 8],
           "bounds": bounds, "premise": premise}
    text = "\n".join(goal_lines(res))  # no goals recorded: EvalGoals' defaults
    assert "full model, clean inputs: 12.0 cm (goal <= 15 cm: met)" in text
    assert "full model, binary noise: 20.0 cm (goal <= 35 cm: met)" in text
    assert "binary noise, ADMN at L=6 vs the full model: 25.0 / 20.0 cm = 1.250x " \
        "(goal <= 1.15x: missed)" in text
    assert "discrete noise, ADMN at L=6 vs the full model: 36.0 / 30.0 cm = 1.200x " \
        "(goal <= 1.4x: met)" in text
    assert "naive at L=6 vs ADMN: 40.0 / 25.0 cm = 1.600x (goal >= 1.5x: met)" in text
    assert "random at L=6 vs ADMN: 50.0 / 25.0 cm = 2.000x (goal >= 1.5x: met)" in text
    assert "naive at L=6 vs the per-sample oracle over splits (10 masks): 40.0 / 16.0 cm = " \
        "2.50x" in text
    assert "ADMN at L=6 vs the best static mask of splits (1/1/4): 25.0 / 20.0 cm = 1.25x" \
        in text
    assert "L=6: +10.0 %, L=8: +0.0 % (goal within 5 % at every budget: missed)" in text
    assert "best static vs the best splits mask per noise pattern at L=6: 20.0 / 18.0 cm = " \
        "1.11x" in text
    strict = dict(res, goals={"full_clean_cm": 10.0, "baseline_vs_admn": 1.8,
                              "universal_within_pct": 10.0})
    text = "\n".join(goal_lines(strict))
    assert "12.0 cm (goal <= 10 cm: missed)" in text
    assert "naive at L=6 vs ADMN: 40.0 / 25.0 cm = 1.600x (goal >= 1.8x: missed)" in text
    assert "(goal within 10 % at every budget: met)" in text
    near = dict(res, tables={"binary": dict(table, admn={"6": cell(23.1)})})
    assert "23.1 / 20.0 cm = 1.155x (goal <= 1.15x: missed)" in "\n".join(goal_lines(near))
    assert goal_lines({"tables": {}, "budgets": [6]}) == []


def test_allocation_bounds_follow_min_blocks() -> None:
    from admn_ros.core.config import load_model_config
    from admn_ros.core.model import check_forced
    from admn_ros.train.allocation_bounds import (
        exhaustive_candidates,
        num_masks,
        split_candidates,
    )

    low = [0, 1, 2]
    masks = exhaustive_candidates(3, 4, 4, low)
    assert len(masks) == num_masks(3, 4, 4, low) == 9  # 3 forced + 1 of the 9 free slots
    splits = split_candidates(3, 4, 4, low)
    keys = {m.numpy().tobytes() for m in masks}
    assert splits and all(m.numpy().tobytes() in keys for m in splits)
    cfg = load_model_config("config/model/demo_min0.yaml")
    assert num_masks(3, 8, 2, cfg.min_blocks_list) == 276  # C(24, 2): a modality may be off
    for m in exhaustive_candidates(3, 8, 2, cfg.min_blocks_list):
        check_forced(m, cfg)
