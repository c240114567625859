"""Strict configs: presets load, unknown keys / wrong types name the key path."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from admn_ros.core.config import ModelConfig, config_diff, from_dict, load_model_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["vitb16", "demo"])
def test_presets_load(name: str) -> None:
    cfg = load_model_config(ROOT / "config" / "model" / f"{name}.yaml")
    assert cfg.modalities == ["rgb", "depth", "radar"] and cfg.num_nodes == 3
    assert load_model_config(to_dict(cfg)) == cfg


def test_paper_and_demo_numbers() -> None:
    b = load_model_config(ROOT / "config/model/vitb16.yaml")
    assert (b.backbone.img_size, b.backbone.patch_size, b.backbone.embed_dim) == (224, 16, 768)
    assert (b.backbone.depth, b.backbone.num_heads, b.controller.img_size) == (12, 12, 100)
    assert load_model_config(ROOT / "config/model/demo.yaml").total_blocks == 24


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"backbone": {"depht": 3}}, "backbone.depht"),
        ({"backbone": {"depth": "12"}}, "backbone.depth: expected int"),
        ({"backbone": {"depth": 12.0}}, "backbone.depth: expected int"),
        ({"controller": {"noise_head": 1}}, "controller.noise_head: expected bool"),
        ({"fusion": {"arena": {"x_min": "a"}}}, "fusion.arena.x_min"),
        ({"in_chans": {"rgb": 3, "depth": 1, "radar": "1"}}, "in_chans.radar"),
        ({"layerdrop": {"mode": "mask"}}, "layerdrop.mode"),
        ({"extra": 1}, "unknown config key"),
        ({"backbone": {"img_size": 20, "patch_size": 8}}, "multiple of patch_size"),
        ({"controller": {"budget_min": 2}}, "budget_min"),
        ({"in_chans": {"rgb": 3}}, "in_chans"),
    ],
)
def test_strict_errors(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_model_config(data)


@dataclass
class Inner:
    lr: float = 1e-3
    steps: list[int] = field(default_factory=list)


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    opt: dict[str, float] | None = None


def test_generic_helper_for_other_configs() -> None:
    out = from_dict(Outer, {"name": "x", "inner": {"lr": 1, "steps": [1, 2]}})
    assert out.inner.lr == 1.0 and isinstance(out.inner.lr, float)
    with pytest.raises(ValueError, match=r"inner.steps\[1\]"):
        from_dict(Outer, {"name": "x", "inner": {"steps": [1, "b"]}})
    with pytest.raises(ValueError, match="name"):
        from_dict(Outer, {})


def test_config_diff() -> None:
    a, b = ModelConfig(), ModelConfig()
    b.backbone.depth = 6
    b.controller.dim = 64
    assert config_diff(a, b) == ["backbone.depth", "controller.dim"]


def test_yaml_base_merges_and_refuses_cycles(tmp_path) -> None:
    from admn_ros.core.config import load_yaml

    (tmp_path / "a.yaml").write_text("x: 1\nsec: {p: 1, q: [1, 2]}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\nsec: {q: [3]}\ny: 2\n")
    assert load_yaml(tmp_path / "sub" / "b.yaml") == {"x": 1, "y": 2, "sec": {"p": 1, "q": [3]}}
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_yaml(tmp_path / "c.yaml")


def test_recipe_variants_differ_from_demo_only_where_they_say() -> None:
    from admn_ros.train.config import load_train_config

    demo, min0 = (load_train_config(f"config/train/{r}.yaml") for r in ("demo_v1", "demo_min0"))
    assert min0.model_config().min_blocks_list == [0, 0, 0]
    assert demo.model_config().min_blocks_list == [1, 1, 1]
    assert (min0.seed, min0.backbone, min0.data) == (demo.seed, demo.backbone, demo.data)
    assert min0.controller.budgets == demo.controller.budgets
    assert min0.controller.universal_range == [1, 24]  # nothing forced: from one block
    assert min0.models_dir != demo.models_dir


def test_baselines_recipe_starts_every_method_from_the_shipped_weights_frozen() -> None:
    from admn_ros.train.config import load_train_config, validate

    cfg = load_train_config("config/train/demo_baselines.yaml")
    validate(cfg, cfg.model_config())
    assert cfg.recipe == "demo" and cfg.models_dir == "models"  # ADMN rows: the shipped files
    assert not (cfg.path(cfg.out_dir) / "admn.pt").exists()
    for stage in ("dynmm", "mmexit", "m2sn"):
        st = cfg.stage(stage)
        assert st.freeze_model and cfg.path(st.init).is_file()
        assert st.gate_init is None or cfg.path(st.gate_init).is_file()


def test_a_frozen_model_refuses_the_stage_that_trains_only_the_model(tmp_path) -> None:
    from admn_ros.train.config import load_train_config, validate

    path = tmp_path / "r.yaml"
    path.write_text(f"base: {Path('config/train/demo_baselines.yaml').resolve()}\n"
                    "dynmm: {pretrain_epochs: 1}\n")
    cfg = load_train_config(path)
    with pytest.raises(ValueError, match=r"dynmm: stage I trains only the model.*"
                                         r"expected pretrain_epochs: 0, got 1"):
        validate(cfg, cfg.model_config())


def test_shipped_recipe_is_the_rand1_backbone_with_candidate_controllers() -> None:
    """`make train` (demo.yaml) trains demo_rand1_ref_alone's backbone (so that run's weights
    are the recipe's), its controllers at 6 and 8 blocks and the universal one on scored
    candidate masks, at 12 and 16 by the paper's task loss; demo_v1 keeps the first recipe."""
    from admn_ros.train.config import load_train_config, validate

    demo, rand, cand, v1 = (load_train_config(f"config/train/{r}.yaml") for r in
                            ("demo", "demo_rand1_ref_alone", "demo_rand1_ref_alone_candidates",
                             "demo_v1"))
    validate(demo, demo.model_config())
    assert (demo.seed, demo.model_config(), demo.data, demo.noise, demo.backbone) == \
        (rand.seed, rand.model_config(), rand.data, rand.noise, rand.backbone)
    assert (demo.recipe, demo.models_dir, v1.recipe) == ("demo", "models", "demo_v1")
    assert v1.models_dir != "models" and v1.backbone.freeze_blocks == 0
    for b, objective, steps in ((6, "candidates", 180), (8, "candidates", 180),
                                (12, "task", 45), (16, "task", 45)):
        st = demo.controller.for_budget(b)
        assert (st.objective, st.max_steps_per_epoch) == (objective, steps)
    assert dataclasses.replace(demo.controller.for_budget(6), per_budget={}) == cand.controller
    assert demo.controller.for_budget((3, 24)) is demo.controller


def test_per_budget_overrides_name_a_trained_budget(tmp_path) -> None:
    from admn_ros.train.config import load_train_config, validate

    base = f"base: {Path('config/train/demo.yaml').resolve()}\n"
    (tmp_path / "seven.yaml").write_text(
        base + "controller: {per_budget: {7: {objective: task}}}\n")
    cfg = load_train_config(tmp_path / "seven.yaml")
    with pytest.raises(ValueError, match=r"controller\.per_budget: expected keys among "
                                         r"budgets \[6, 8, 12, 16\], got \[7\]"):
        validate(cfg, cfg.model_config())
    (tmp_path / "cleared.yaml").write_text(  # a derived recipe may drop the base's overrides
        base + "controller: {budgets: [6, 8], per_budget: null}\n")
    cleared = load_train_config(tmp_path / "cleared.yaml")
    validate(cleared, cleared.model_config())
    assert cleared.controller.for_budget(6) is cleared.controller
    (tmp_path / "best.yaml").write_text(base + "controller: {per_budget: {6: {objective: best}}}\n")
    with pytest.raises(ValueError, match=r"controller\.per_budget\.6\.objective: expected one of"):
        load_train_config(tmp_path / "best.yaml")


def test_controllers_recipe_retrains_the_demo_stage_on_the_shipped_backbone() -> None:
    from admn_ros.train.config import load_train_config, validate

    demo = load_train_config("config/train/demo.yaml")
    cfg = load_train_config("config/train/demo_controllers.yaml")
    validate(cfg, cfg.model_config())
    assert cfg.path(cfg.controller.init).is_file() and cfg.models_dir == demo.models_dir
    assert cfg.out_dir != demo.out_dir and cfg.recipe == demo.recipe
    assert dataclasses.replace(cfg.controller, init=None) == demo.controller


def test_frozen4_recipe_is_demo_frozen_with_four_trainable_blocks() -> None:
    """The issue-20 experiment: demo_frozen's MAE and data, blocks 0-3 frozen, 3000 steps,
    written outside the shipped models/ and under its own recipe name."""
    from admn_ros.train.config import load_train_config, validate

    frozen, four = (load_train_config(f"config/train/{r}.yaml")
                    for r in ("demo_frozen", "demo_frozen4"))
    validate(four, four.model_config())
    assert (four.mae, four.data, four.seed) == (frozen.mae, frozen.data, frozen.seed)
    assert (frozen.backbone.freeze_blocks, four.backbone.freeze_blocks) == (6, 4)
    assert four.backbone.epochs * four.backbone.max_steps_per_epoch == 3000
    assert four.controller.budgets == [6] and not four.controller.universal
    assert four.recipe == "demo_frozen4" and "models" not in (four.models_dir, frozen.models_dir)



def test_ref_recipes_change_only_the_depth_input_and_modality_drop() -> None:
    """The issue-20 run with the depth reference: demo_frozen4's stages on the demo model
    whose depth backbone subtracts each node's reference image and has its own scale; from
    scratch (demo_ref) and with whole-modality dropout 0.3 (demo_ref_drop), both combined
    (demo_frozen4_ref_drop) and that with block 0 frozen only (demo_frozen1_ref_drop), also
    finetuned longer (demo_frozen1_ref_drop_long), with radar dropped more often than the
    cameras (demo_frozen1_ref_radardrop) and with a loss on each modality alone
    (demo_frozen1_ref_alone), that with block 0 frozen at its random initialisation
    (demo_rand1_ref_alone), and that model's controllers trained on scored candidate masks
    (demo_rand1_ref_alone_candidates), also searching around each controller's own pick
    (demo_rand1_ref_alone_local)."""
    import dataclasses

    from admn_ros.core.config import load_model_config
    from admn_ros.train.config import load_train_config, validate

    four, ref = (load_train_config(f"config/train/{r}.yaml")
                 for r in ("demo_frozen4", "demo_frozen4_ref"))
    validate(ref, ref.model_config())
    assert (ref.mae, ref.backbone, ref.controller, ref.data) == \
        (four.mae, four.backbone, four.controller, four.data)
    demo, model = load_model_config("config/model/demo_v1.yaml"), ref.model_config()
    assert model.input_reference == ["depth"] and demo.input_reference == []
    assert (model.input_mean["depth"], model.input_std["depth"]) == ([0.0], [0.03])
    same = {"input_reference": [], "input_mean": demo.input_mean, "input_std": demo.input_std}
    assert dataclasses.replace(model, **same) == demo
    assert ref.recipe == "demo_frozen4_ref" and ref.models_dir != "models"
    demo, scratch = (load_train_config(f"config/train/{r}.yaml") for r in ("demo_v1", "demo_ref"))
    assert scratch.model_config() == model and scratch.models_dir != "models"
    assert (scratch.mae, scratch.backbone, scratch.controller) == \
        (demo.mae, demo.backbone, demo.controller)
    drop = load_train_config("config/train/demo_ref_drop.yaml")
    validate(drop, drop.model_config())
    assert drop.model_config().layerdrop.full_drop_prob == 0.3
    assert dataclasses.replace(drop.model_config(), layerdrop=model.layerdrop) == model
    assert (drop.mae, drop.backbone, drop.controller, drop.controller_ae) == \
        (scratch.mae, scratch.backbone, scratch.controller, scratch.controller_ae)
    assert drop.recipe == "demo_ref_drop" and drop.models_dir != "models"
    both = load_train_config("config/train/demo_frozen4_ref_drop.yaml")
    validate(both, both.model_config())
    assert both.model_config() == drop.model_config()
    assert (both.mae, both.backbone, both.data) == (ref.mae, ref.backbone, ref.data)
    assert (both.controller, both.controller_ae) == (demo.controller, demo.controller_ae)
    assert both.recipe == "demo_frozen4_ref_drop" and both.models_dir != "models"
    one = load_train_config("config/train/demo_frozen1_ref_drop.yaml")
    validate(one, one.model_config())
    assert one.model_config() == both.model_config() and one.backbone.freeze_blocks == 1
    assert dataclasses.replace(one.backbone, freeze_blocks=4) == both.backbone
    assert (one.mae, one.controller, one.controller_ae, one.eval, one.data) == \
        (both.mae, both.controller, both.controller_ae, both.eval, both.data)
    assert one.recipe == "demo_frozen1_ref_drop" and one.models_dir != "models"
    long = load_train_config("config/train/demo_frozen1_ref_drop_long.yaml")
    assert dataclasses.replace(long.backbone, epochs=5) == one.backbone
    assert long.backbone.epochs * long.backbone.max_steps_per_epoch == 4800
    assert (long.model_config(), long.mae, long.controller, long.eval) == \
        (one.model_config(), one.mae, one.controller, one.eval)
    assert long.recipe == "demo_frozen1_ref_drop_long" and long.out_dir != one.out_dir
    radar = load_train_config("config/train/demo_frozen1_ref_radardrop.yaml")
    validate(radar, radar.model_config())
    assert radar.model_config().layerdrop.full_drop_probs(["rgb", "depth", "radar"]) == \
        [0.2, 0.2, 0.5]
    same_drop = dataclasses.replace(radar.model_config().layerdrop, full_drop_prob=0.3)
    assert dataclasses.replace(radar.model_config(), layerdrop=same_drop) == one.model_config()
    assert (radar.mae, radar.backbone, radar.controller, radar.eval, radar.data) == \
        (one.mae, one.backbone, one.controller, one.eval, one.data)
    assert radar.recipe == "demo_frozen1_ref_radardrop" and radar.models_dir != "models"
    alone = load_train_config("config/train/demo_frozen1_ref_alone.yaml")
    validate(alone, alone.model_config())
    assert dataclasses.replace(alone.backbone, single_modality_weight=0.0) == one.backbone
    assert alone.backbone.single_modality_weight == 1.0
    assert (alone.model_config(), alone.mae, alone.controller, alone.eval, alone.data) == \
        (one.model_config(), one.mae, one.controller, one.eval, one.data)
    assert alone.recipe == "demo_frozen1_ref_alone" and alone.models_dir != "models"
    rand = load_train_config("config/train/demo_rand1_ref_alone.yaml")
    validate(rand, rand.model_config())
    assert rand.mae.epochs == 0 and dataclasses.replace(rand.mae, epochs=alone.mae.epochs) == \
        alone.mae
    assert (rand.model_config(), rand.backbone, rand.controller, rand.eval, rand.data) == \
        (alone.model_config(), alone.backbone, alone.controller, alone.eval, alone.data)
    assert rand.recipe == "demo_rand1_ref_alone" and rand.out_dir != alone.out_dir
    methods = load_train_config("config/train/demo_rand1_ref_alone_baselines.yaml")
    validate(methods, methods.model_config())
    assert (methods.recipe, methods.out_dir, methods.backbone, methods.controller) == \
        (rand.recipe, rand.out_dir, rand.backbone, rand.controller)
    assert all(getattr(methods, m).freeze_model and not getattr(methods, m).pretrain_epochs
               for m in ("dynmm", "mmexit", "m2sn"))
    uni = load_train_config("config/train/demo_rand1_ref_alone_universal4x.yaml")
    validate(uni, uni.model_config())
    assert uni.controller.universal and uni.controller.budgets == []
    assert dataclasses.replace(uni.controller, budgets=rand.controller.budgets,
                               max_steps_per_epoch=45) == rand.controller
    assert (uni.model_config(), uni.backbone) == (rand.model_config(), rand.backbone)
    cand = load_train_config("config/train/demo_rand1_ref_alone_candidates.yaml")
    validate(cand, cand.model_config())
    assert (cand.controller.objective, cand.controller.candidate_family) == \
        ("candidates", "masks")
    assert dataclasses.replace(cand.controller, objective="task", candidate_family="splits",
                               max_steps_per_epoch=45) == rand.controller
    assert (cand.model_config(), cand.backbone, cand.eval) == \
        (rand.model_config(), rand.backbone, rand.eval)
    assert cand.out_dir != rand.out_dir and cand.models_dir != "models"
    local = load_train_config("config/train/demo_rand1_ref_alone_local.yaml")
    validate(local, local.model_config())
    assert dataclasses.replace(local.controller, candidate_family="masks") == cand.controller
    assert (local.model_config(), local.backbone, local.eval) == \
        (cand.model_config(), cand.backbone, cand.eval)
    assert local.out_dir not in (cand.out_dir, rand.out_dir) and local.models_dir != "models"
    budget = load_train_config("config/train/demo_rand1_budget.yaml")
    validate(budget, budget.model_config())
    assert budget.model_config().layerdrop.budget_prob == 0.5
    assert dataclasses.replace(budget.model_config().layerdrop, budget_prob=0.0) == \
        rand.model_config().layerdrop
    assert (budget.backbone, budget.controller) == (rand.backbone, rand.controller)
    assert budget.out_dir != rand.out_dir and budget.models_dir != "models"
    budget_cand = load_train_config("config/train/demo_rand1_budget_candidates.yaml")
    validate(budget_cand, budget_cand.model_config())
    assert budget_cand.controller == cand.controller
    assert (budget_cand.model_config(), budget_cand.backbone) == \
        (budget.model_config(), budget.backbone)
    assert budget_cand.out_dir not in (budget.out_dir, cand.out_dir)
    values = load_train_config("config/train/demo_rand1_budget_values.yaml")
    validate(values, values.model_config())
    assert dataclasses.replace(values.controller, objective="candidates") == budget_cand.controller
    assert values.model_config() == budget.model_config()
    assert values.out_dir not in (budget.out_dir, budget_cand.out_dir)
    min0 = load_train_config("config/train/demo_budget_min0.yaml")
    validate(min0, min0.model_config())
    assert min0.model_config().min_blocks_list == [0, 0, 0] and min0.backbone.freeze_blocks == 0
    assert dataclasses.replace(min0.model_config(), min_blocks={}) == budget.model_config()
    assert dataclasses.replace(min0.backbone, freeze_blocks=1) == budget.backbone
    assert min0.out_dir != budget.out_dir and min0.models_dir != "models"
    traffic = load_train_config("config/train/demo_traffic.yaml")
    validate(traffic, traffic.model_config())
    assert (traffic.model_config(), traffic.backbone, traffic.controller) == \
        (min0.model_config(), min0.backbone, min0.controller)
    assert traffic.data.generate.scene == "traffic" and traffic.data.root != min0.data.root
    assert traffic.out_dir != min0.out_dir and traffic.models_dir != "models"
    ft = load_train_config("config/train/demo_traffic_ft.yaml")
    validate(ft, ft.model_config())
    assert ft.backbone.init == f"{min0.out_dir}/admn.pt" and ft.data == traffic.data
    assert dataclasses.replace(ft.backbone, init=None, epochs=traffic.backbone.epochs) == \
        traffic.backbone
    assert ft.out_dir not in (traffic.out_dir, min0.out_dir) and ft.models_dir != "models"
    ft_cand = load_train_config("config/train/demo_traffic_ft_candidates.yaml")
    validate(ft_cand, ft_cand.model_config())
    assert ft_cand.controller.init == f"{ft.out_dir}/admn.pt"
    assert dataclasses.replace(
        ft_cand.controller, init=None, budgets=budget_cand.controller.budgets,
        universal=True, universal_range=budget_cand.controller.universal_range) == \
        budget_cand.controller
    assert (ft_cand.model_config(), ft_cand.backbone, ft_cand.data) == \
        (ft.model_config(), ft.backbone, ft.data)
    ft_values = load_train_config("config/train/demo_traffic_ft_values.yaml")
    validate(ft_values, ft_values.model_config())
    assert dataclasses.replace(ft_values.controller, objective="candidates") == ft_cand.controller
    assert len({ft.out_dir, ft_cand.out_dir, ft_values.out_dir}) == 3
