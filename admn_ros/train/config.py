"""Training recipes: one YAML file per recipe, one section per stage (strict loading).

Unknown keys and wrong types raise ValueError naming the key path (core's strict dataclass
helper). Paths in a recipe are relative to the repository root (the working directory of
`make train`), or absolute.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from admn_ros.core.baselines.common import LAM_MAX
from admn_ros.core.config import (
    ModelConfig,
    NoiseConfig,
    NoiseKind,
    from_dict,
    load_model_config,
    load_yaml,
    to_dict,
)
from admn_ros.core.noise import NOISE_KINDS
from admn_ros.paths import share_dir

BASELINE_STAGES = ("dynmm", "mmexit", "m2sn")  # competing methods (docs/BASELINES.md)
STAGE_ONE_METHODS = ("dynmm", "m2sn")  # their first `pretrain_epochs` train only the model
STAGES = ("mae", "backbone", "controller", "controller-ae", *BASELINE_STAGES)
REPO_ROOT = share_dir()  # the package's files: the source tree, or share/admn_ros installed
# knob name and valid range per method (the models' LAM_MAX; MMExit threshold in cm)
KNOBS = {"dynmm": ("lam", 0.0, LAM_MAX), "mmexit": ("threshold_cm", 0.0, math.inf),
         "m2sn": ("lam", 0.0, LAM_MAX)}


@dataclass
class GenerateConfig:
    """How `scripts/train.sh` generates the synthetic recording when `data.root` is absent."""

    frames: int = 3000
    seed: int = 0
    scene: str = "default"


@dataclass
class DataSection:
    root: str = "data/demo"
    generate: GenerateConfig | None = None
    cache: bool = True  # decode the split once into an in-memory float16 tensor cache
    num_workers: int = 0
    min_samples: int = 8  # a split smaller than this is an error


@dataclass
class BudgetOverride:
    """Controller-stage fields that differ for one budget's controller (None: the stage's)."""

    objective: Literal["task", "candidates", "values"] | None = None
    max_steps_per_epoch: int | None = None


@dataclass
class StageConfig:
    """One stage; every stage reads the fields it needs (unused ones keep their defaults)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    grad_clip: float | None = 1.0
    # cap of the steps of each epoch: with `epochs` it fixes the stage's amount of training,
    # the same on every machine (a wall-clock cap is only the explicit `--time-budget` option)
    max_steps_per_epoch: int | None = None
    # --- backbone / mae ---
    init: str | None = None  # checkpoint to start from (default: the previous stage's output)
    pretrained: str | None = None  # MAE / timm ViT weights loaded into every backbone first
    freeze_blocks: int = 0  # first N blocks (and patch embedding when N > 0) of each backbone
    layerdrop: bool = True
    clean_epochs: int = 1  # backbone: epochs without corruption before it switches on
    corrupt_prob: float = 1.0  # backbone: chance a batch is corrupted once switched on
    rgb_jitter: float = 0.0  # backbone: brightness augmentation strength (train/augment.py)
    # backbone and controllers: extra weight on the mean's Euclidean error (cm) added to the
    # model's NLL loss. Backbone: from scratch, the NLL first inflates the variance and the
    # mean learns slowly. Controllers: the NLL weighs each sample by its predicted precision,
    # so the corrupted inputs, where the allocation matters, teach them least.
    dist_weight: float = 0.0
    # backbone: weight of the mean loss of each modality alone through the fusion (the others
    # at their forced blocks; tasks.SingleModalityFusion); 0: off
    single_modality_weight: float = 0.0
    mask_ratio: float = 0.75  # mae
    decoder_dim: int = 64  # mae
    decoder_depth: int = 2  # mae
    # --- controllers ---
    noise_kinds: list[NoiseKind] = field(default_factory=lambda: ["binary", "discrete",
                                                                  "continuous"])
    budgets: list[int] = field(default_factory=list)  # one controller per budget
    universal: bool = False  # also train one budget-conditioned controller
    universal_range: list[int] | None = None  # [lo, hi]; None: the budget range of `budgets`
    noise_weight: dict[str, float] = field(default_factory=dict)  # per modality, default 1
    warmup_noise_epochs: int = 1  # first epoch(s): noise head (or AE) only
    max_warmup_steps: int | None = None  # cap of each of those epochs (None: whole split)
    recon_weight: float = 1.0  # controller-ae
    # controllers: "task": the paper's training, the task loss through Gumbel top-L
    # straight-through masks; "candidates": each step scores `max_candidates` masks of the
    # budget on the batch (frozen model, no gradients) and teaches the slot logits the masks
    # that localise each input best (softmin of their errors at `candidate_temperature_cm`):
    # a direct signal of which allocation suits which input. `candidate_family`: "splits",
    # the block-count splits in every-other order (a random subset where there are more);
    # "masks", masks drawn uniformly (the forced blocks plus random others); "local", half
    # the controller's own pick and single-block swaps of it (the search follows the
    # controller, where random masks of a large budget rarely hold the good ones), half
    # random masks. "values": the same candidates, but the slot logits are fitted as an
    # additive model of each candidate's error (tasks.ControllerTask.value_fit_loss).
    objective: Literal["task", "candidates", "values"] = "task"
    candidate_family: Literal["splits", "masks", "local"] = "splits"
    candidate_temperature_cm: float = 5.0
    max_candidates: int = 16
    # per-budget controllers: fields that differ for one budget, e.g. the paper's task loss
    # where random candidates of a large budget rarely hold the good masks (docs/RESULTS.md)
    # (null: none, e.g. to clear a base recipe's)
    per_budget: dict[int, BudgetOverride] | None = field(default_factory=dict)
    # --- baselines (dynmm, mmexit, m2sn): warm start from `init` (default: <out_dir>/admn.pt)
    baseline_config: str | None = None  # method config (default: config/baselines/<stage>.yaml)
    pretrain_epochs: int = 0  # dynmm / m2sn: first epochs run stage I (random gate / shortcuts)
    freeze_model: bool = False  # freeze backbones, fusion and head (train gate / exits only)
    # dynmm / m2sn: controller checkpoint whose trunk initialises the gate / navigator;
    # "auto": <out_dir>/controller_universal.pt, else the largest controller_L*.pt, if any
    gate_init: str | None = None

    def for_budget(self, budget: int | tuple[int, int]) -> StageConfig:
        """This stage as the controller of `budget` trains it (the universal one: as is)."""
        over = (self.per_budget or {}).get(budget) if isinstance(budget, int) else None
        if over is None:
            return self
        changes = {k: v for k, v in dataclasses.asdict(over).items() if v is not None}
        return dataclasses.replace(self, **changes)


@dataclass
class BaselineEval:
    """One competing method in `admn eval` (skipped with a note when its checkpoint is absent).

    sweep: knob values (dynmm / m2sn: lambda in [0, 1e4]; mmexit: threshold_cm in [0, inf]).
    budgets: ADMN budgets L at which the knob is also calibrated (`knob_for_budget`) to ADMN's
        GFLOPs at L (naive-mask cost + controller), on the evaluated samples themselves.
    """

    sweep: list[float] = field(default_factory=list)
    budgets: list[int] = field(default_factory=list)


@dataclass
class EvalGoals:
    """What the report measures itself against (its "Goals" section): the full model's error,
    and at the lowest budget ADMN against the full model and naive / random against ADMN."""

    full_clean_cm: float = 15.0  # full model, clean inputs (the premise curve at every block)
    full_binary_cm: float = 35.0  # full model, binary noise
    admn_vs_full_binary: float = 1.15  # ADMN / full model at most, binary noise
    admn_vs_full_other: float = 1.4  # ... discrete and continuous noise
    baseline_vs_admn: float = 1.5  # naive / ADMN and random / ADMN at least, binary noise
    universal_within_pct: float = 5.0  # universal vs per-budget controllers, every budget


@dataclass
class EvalSection:
    """`admn eval`: reported tables on `split` (default: every frame of the test split);
    every choice it makes (the best static allocation, the baselines' calibrated knobs) on
    `tune_split`, which may never be the reported split nor `test`."""

    budgets: list[int] = field(default_factory=list)  # default: 1/4, 1/3, 1/2, 2/3 of all
    split: str = "test"
    batch_size: int = 64
    max_samples: int | None = None  # None: the whole split
    quick_samples: int = 150  # `admn eval --quick`: this many frames, evenly spaced
    noise_seed: int = 1234
    noise_repeats: int = 3  # corruption draws (seeds) per frame; means over all of them
    random_seed: int = 0
    tune_split: str = "val"
    tune_samples: int | None = None  # frames of tune_split (evenly spaced); None: all
    # paired block bootstrap of every comparison: contiguous blocks of this many evaluated
    # frames (neighbouring frames are correlated), this many resamples, 95 % intervals
    bootstrap_block: int = 30
    bootstrap_samples: int = 2000
    # allocation bounds: per-modality block-count splits at every budget; also every mask
    # (block 0 on) where a budget has at most `exhaustive_max_masks` (0: never), under these
    exhaustive_max_masks: int = 0
    exhaustive_noise: list[NoiseKind] = field(default_factory=lambda: ["binary"])
    # ... and the best candidate per noise pattern (allocation_bounds.noise_pattern), chosen
    # on tune_split for the patterns seen there at least this often (others: best static)
    pattern_min_samples: int = 5
    # does depth matter (train/premise.py): error vs blocks per backbone, on the evaluated
    # frames, in these settings (`clean` or a noise kind; empty: not measured)
    premise_noise: list[str] = field(default_factory=lambda: ["clean", "binary"])
    # competing methods: knob sweeps (empty sweep and budgets: not evaluated)
    dynmm: BaselineEval = field(default_factory=lambda: BaselineEval(
        sweep=[0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]))
    mmexit: BaselineEval = field(default_factory=lambda: BaselineEval(
        sweep=[0.0, 10.0, 20.0, 30.0, 50.0, 100.0, 1000.0]))
    m2sn: BaselineEval = field(default_factory=lambda: BaselineEval(
        sweep=[0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]))
    goals: EvalGoals = field(default_factory=EvalGoals)


@dataclass
class TrainConfig:
    recipe: str = "demo"
    seed: int = 0
    model: str = "config/model/demo.yaml"
    out_dir: str = "runs/demo"
    models_dir: str = "models"  # where exported default weights go
    results_dir: str = "docs/results"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    data: DataSection = field(default_factory=DataSection)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    mae: StageConfig = field(default_factory=lambda: StageConfig(epochs=0))
    backbone: StageConfig = field(default_factory=StageConfig)
    controller: StageConfig = field(default_factory=StageConfig)
    controller_ae: StageConfig = field(default_factory=StageConfig)
    dynmm: StageConfig = field(default_factory=StageConfig)
    mmexit: StageConfig = field(default_factory=StageConfig)
    m2sn: StageConfig = field(default_factory=StageConfig)
    eval: EvalSection = field(default_factory=EvalSection)

    def stage(self, name: str) -> StageConfig:
        if name not in STAGES:
            raise ValueError(f"stage: expected one of {list(STAGES)}, got {name!r}")
        return getattr(self, name.replace("-", "_"))

    def path(self, p: str) -> Path:
        """A recipe path: absolute, else relative to the working directory (falling back to
        the repository root for files that exist only there, e.g. config/model/*.yaml)."""
        q = Path(p)
        if q.is_absolute() or q.exists() or not (REPO_ROOT / q).exists():
            return q
        return REPO_ROOT / q

    def model_config(self) -> ModelConfig:
        return load_model_config(self.path(self.model))


def validate(cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    """Cross-field checks against the model (budgets in range, noise levels per modality)."""
    lo, hi = model_cfg.network_budget_range
    for sec in ("controller", "controller_ae"):
        st = getattr(cfg, sec)
        for b in st.budgets:
            if not lo <= b <= hi:
                raise ValueError(f"{sec}.budgets: expected {lo} <= L <= {hi}, got {b}")
        if st.universal_range is not None:
            r = st.universal_range
            if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
                raise ValueError(f"{sec}.universal_range: expected [lo, hi] with "
                                 f"{lo} <= lo <= hi <= {hi}, got {r}")
        extra = sorted(set(st.per_budget or {}) - set(st.budgets))
        if extra:
            raise ValueError(f"{sec}.per_budget: expected keys among budgets {st.budgets}, "
                             f"got {extra}")
    for b in cfg.eval.budgets:
        if not lo <= b <= hi:
            raise ValueError(f"eval.budgets: expected {lo} <= L <= {hi}, got {b}")
    ev = cfg.eval
    if ev.tune_split in ("test", ev.split):
        raise ValueError(f"eval.tune_split: expected a split other than 'test' and the reported "
                         f"split {ev.split!r} (design choices are made on validation data), "
                         f"got {ev.tune_split!r}")
    if ev.noise_repeats < 1 or ev.quick_samples < 1 or ev.bootstrap_block < 1 \
            or ev.bootstrap_samples < 1 or ev.pattern_min_samples < 1:
        raise ValueError(f"eval: expected noise_repeats, quick_samples, bootstrap_block, "
                         f"bootstrap_samples and pattern_min_samples >= 1, got "
                         f"{ev.noise_repeats}, {ev.quick_samples}, {ev.bootstrap_block}, "
                         f"{ev.bootstrap_samples}, {ev.pattern_min_samples}")
    bad = [k for k in ev.premise_noise if k not in ("clean", *NOISE_KINDS)]
    if bad:
        raise ValueError(f"eval.premise_noise: expected 'clean' or one of {list(NOISE_KINDS)}, "
                         f"got {bad}")
    if cfg.eval.exhaustive_max_masks < 0:
        raise ValueError(f"eval.exhaustive_max_masks: expected >= 0, got "
                         f"{cfg.eval.exhaustive_max_masks}")
    missing = [m for m in model_cfg.modalities if m not in cfg.noise.levels]
    if missing:
        raise ValueError(f"noise.levels: expected a level list for {model_cfg.modalities}, "
                         f"missing {missing}")
    if cfg.backbone.single_modality_weight < 0:
        raise ValueError(f"backbone.single_modality_weight: expected >= 0, got "
                         f"{cfg.backbone.single_modality_weight}")
    for sec in ("backbone", "mae"):
        st = getattr(cfg, sec)
        if not 0 <= st.freeze_blocks <= model_cfg.depth:
            raise ValueError(f"{sec}.freeze_blocks: expected 0..{model_cfg.depth}, "
                             f"got {st.freeze_blocks}")
    for name in ("mae", "backbone", "controller", "controller_ae", *BASELINE_STAGES):
        st = getattr(cfg, name)
        if st.epochs < 0 or st.batch_size < 1 or st.lr <= 0:
            raise ValueError(f"{name}: expected epochs >= 0, batch_size >= 1, lr > 0, got "
                             f"{st.epochs}, {st.batch_size}, {st.lr}")
        if st.dist_weight < 0:
            raise ValueError(f"{name}.dist_weight: expected >= 0, got {st.dist_weight}")
        if st.candidate_temperature_cm <= 0 or st.max_candidates < 1:
            raise ValueError(f"{name}: expected candidate_temperature_cm > 0 and "
                             f"max_candidates >= 1, got {st.candidate_temperature_cm}, "
                             f"{st.max_candidates}")
    for name in BASELINE_STAGES:
        st = getattr(cfg, name)
        if not 0 <= st.freeze_blocks <= model_cfg.depth or st.pretrain_epochs < 0:
            raise ValueError(f"{name}: expected freeze_blocks in 0..{model_cfg.depth} and "
                             f"pretrain_epochs >= 0, got {st.freeze_blocks}, "
                             f"{st.pretrain_epochs}")
        if st.freeze_model and st.pretrain_epochs and name in STAGE_ONE_METHODS:
            raise ValueError(f"{name}: stage I trains only the model, which freeze_model "
                             f"freezes: expected pretrain_epochs: 0, got {st.pretrain_epochs}")
        ev: BaselineEval = getattr(cfg.eval, name)
        knob, klo, khi = KNOBS[name]
        for i, v in enumerate(ev.sweep):
            if math.isnan(v) or not klo <= v <= khi:
                raise ValueError(f"eval.{name}.sweep[{i}]: expected {knob} in [{klo}, {khi}], "
                                 f"got {v}")
        for b in ev.budgets:
            if not lo <= b <= hi:
                raise ValueError(f"eval.{name}.budgets: expected {lo} <= L <= {hi}, got {b}")


def load_train_config(source: str | Path | dict[str, Any]) -> TrainConfig:
    """TrainConfig from a YAML path or dict; ValueError naming any unknown / mistyped key."""
    data = load_yaml(source) if isinstance(source, str | Path) else source
    return from_dict(TrainConfig, data)


def default_budgets(total_blocks: int) -> list[int]:
    """1/4, 1/3, 1/2 and 2/3 of all blocks (6/8/12/16 of 24)."""
    return sorted({max(1, round(total_blocks * f)) for f in (1 / 4, 1 / 3, 1 / 2, 2 / 3)})


def as_dict(cfg: TrainConfig) -> dict[str, Any]:
    return to_dict(cfg)


def replace_controller(model_cfg: ModelConfig, **changes: Any) -> ModelConfig:
    """The model config with some controller fields changed (universal, AE variants)."""
    ctrl = dataclasses.replace(model_cfg.controller, **changes)
    return dataclasses.replace(model_cfg, controller=ctrl)
