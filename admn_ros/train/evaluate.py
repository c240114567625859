"""Table 1 of the paper on a held-out split: mean localisation error (cm) and GFLOPs per policy,
budget and noise setting; markdown + JSON + plots.

Rows: `upper_bound`, `admn` (per-budget controllers), `admn_universal`, `admn_ae`, `naive`,
`random`, `single_<modality>`. Columns: the recipe's eval budgets (default 1/4, 1/3, 1/2, 2/3
of all blocks). Test-time corruptions use a fixed seed per noise setting, so every row sees the
same corrupted inputs.

The main network is called in one place, a `CachingRunner` (`runner.py`). Beside Table 1,
candidate allocations are scored at each budget (`allocation_bounds.py`): every per-modality
block-count split, and every mask where there are few; the best static mask and the
per-sample oracle bound what any allocation could gain over naive.

Competing methods (DynMM, MMExit, M2SN; `evaluate_baselines.py`) add a `baselines` key (knob
sweeps: error, GFLOPs, latency per point), a markdown section against ADMN at matched compute
and an error-vs-GFLOPs plot; the Table-1 rows above are untouched by them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from admn_ros.core.config import ModelConfig, from_dict, to_dict
from admn_ros.core.controller import Controller
from admn_ros.core.cost import CostModel
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.noise import add_gaussian_noise, corrupt
from admn_ros.core.policies import SinglePolicy, make_policy
from admn_ros.train.allocation_bounds import (
    AllocationScores,
    exhaustive_candidates,
    noise_pattern,
    num_masks,
    split_candidates,
)
from admn_ros.train.bootstrap import paired_block_bootstrap, verdict
from admn_ros.train.config import (
    EvalGoals,
    TrainConfig,
    default_budgets,
    load_train_config,
    validate,
)
from admn_ros.train.data import Split, load_split
from admn_ros.train.evaluate_baselines import (
    attach_intervals,
    baseline_lines,
    evaluate_baselines,
    plot_error_vs_gflops,
)
from admn_ros.train.figures import panel_row, save_figure
from admn_ros.train.premise import plot_premise, premise, premise_lines
from admn_ros.train.runner import CachingRunner, eval_order, noise_generator

NOISE_SETTINGS = ("binary", "discrete", "continuous")


# --------------------------------------------------------------------------------------------
# what is evaluated
# --------------------------------------------------------------------------------------------
@dataclass
class EvalModels:
    model: ADMN
    per_budget: dict[int, Controller] = field(default_factory=dict)
    universal: Controller | None = None
    ae: dict[int, Controller] = field(default_factory=dict)  # per budget
    ae_universal: Controller | None = None
    source: str = ""
    files: dict[str, str] = field(default_factory=dict)  # file -> SHA-256 (first 12)


def load_models(cfg: TrainConfig, model_cfg: ModelConfig, weights: str | None) -> EvalModels:
    """From the recipe's run folder when it has `admn.pt` (or `weights` = a run folder),
    else the shipped default weights in `models_dir`."""
    from admn_ros.core.checkpoint import load_checkpoint
    from admn_ros.data.preprocess import check_input_settings
    from admn_ros.train.weights import load_controller, load_default_weights, sha256

    run = Path(weights) if weights else cfg.path(cfg.out_dir)
    if (run / "admn.pt").exists():
        ck = load_checkpoint(run / "admn.pt", into=ADMN(model_cfg), kind="admn")
        check_input_settings(ck.meta.get("preprocess"), str(run / "admn.pt"))
        model = ck.module
        out = EvalModels(model.eval(), source=str(run))
        paths = [run / "admn.pt"]
        for p in sorted(run.glob("controller*.pt")):
            _assign(out, p.stem[len("controller"):].lstrip("_"), load_controller(p, model_cfg))
            paths.append(p)
    else:
        dw = load_default_weights(cfg.path(cfg.models_dir), cfg.recipe, model_cfg)
        out = EvalModels(dw.model, source=str(cfg.path(cfg.models_dir)))
        for key, c in dw.controllers.items():
            _assign(out, key, c)
        paths = list(dw.paths.values())
    out.files = {p.name: sha256(p)[:12] for p in paths}
    return out


def _assign(out: EvalModels, key: str, ctrl: Controller) -> None:
    """key: `L6`, `universal`, `ae`, `ae_L6`."""
    if key == "universal":
        out.universal = ctrl
    elif key == "ae":
        out.ae_universal = ctrl
    elif key.startswith("ae_L"):
        out.ae[int(key[4:])] = ctrl
    elif key.startswith("L"):
        out.per_budget[int(key[1:])] = ctrl


def controller_for(models: EvalModels, policy: str, budget: int) -> Controller | None:
    if policy == "admn":
        return models.per_budget.get(budget)
    if policy == "admn_universal":
        return models.universal
    if policy == "admn_ae":
        return models.ae.get(budget) or models.ae_universal
    return None


def check_budget_ranges(models: EvalModels, budgets: list[int]) -> None:
    """A budget outside a budget-conditioned controller's range is a user error."""
    for name, c in (("admn_universal", models.universal), ("admn_ae", models.ae_universal)):
        if c is None:
            continue
        bad = [b for b in budgets if not c.budget_min <= b <= c.budget_max]
        if bad:
            raise ValueError(f"eval.budgets: expected budgets within the {name} controller's "
                             f"range {c.budget_min}..{c.budget_max}, got {bad}")


# --------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------
def policy_names(model_cfg: ModelConfig) -> list[str]:
    return ["upper_bound", "admn", "admn_universal", "admn_ae", "naive", "random",
            "best_static", *[f"single_{m}" for m in model_cfg.modalities]]


def check_tuning_split(split: Split) -> None:
    """Design choices are made on validation data: ValueError for the test split."""
    if split.name == "test":
        raise ValueError("tuning on the test split is refused: design choices (the best static "
                         "allocation, baselines' knobs) are made on eval.tune_split (val)")


@dataclass
class TuningSet:
    """What a design-choice benchmark reads: the recipe, its weights, and the validation frames
    it decides on (`eval.tune_samples` of `eval.tune_split`, never the test split)."""
    cfg: TrainConfig
    model_cfg: ModelConfig
    models: EvalModels
    split: Split
    frames: Tensor  # [N] frame indices into split
    budgets: list[int]


def tuning_set(config: str | Path, weights: str | None = None) -> TuningSet:
    """Load a recipe's models (`weights`: a run folder, else the recipe's) and its val frames."""
    cfg = load_train_config(config)
    model_cfg = cfg.model_config()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ev = cfg.eval
    models = load_models(cfg, model_cfg, weights)
    split = load_split(cfg.path(cfg.data.root), ev.tune_split, model_cfg, 1)
    check_tuning_split(split)
    budgets = list(ev.budgets) or default_budgets(model_cfg.total_blocks)
    return TuningSet(cfg, model_cfg, models, split, eval_order(len(split), ev.tune_samples),
                     budgets)


@torch.no_grad()
def tune_static(cfg: TrainConfig, model_cfg: ModelConfig, runner: CachingRunner, split: Split,
                budgets: list[int], families: dict[str, dict[int, list[Tensor]]],
                progress: bool) -> dict[str, dict[str, dict]]:
    """The best static allocation per noise setting and budget, chosen on `split` (val):
    `{kind: {"families": {family: {"<L>": cell}}, "best": {"<L>": cell}}}`, cell =
    `{"blocks", "val_error_cm", "family", "mask", "index", "per_pattern"}` (`per_pattern`:
    noise pattern -> index of its best candidate); "best": over every family."""
    from tqdm import tqdm

    check_tuning_split(split)
    order = eval_order(len(split), cfg.eval.tune_samples)
    out: dict[str, dict[str, dict]] = {}
    for k, kind in enumerate(NOISE_SETTINGS):
        fams = {n: c for n, c in families.items()
                if n == "splits" or kind in cfg.eval.exhaustive_noise}
        scores = {n: AllocationScores(c) for n, c in fams.items()}
        gen = noise_generator(cfg.eval.noise_seed + TUNE_SEED_OFFSET, k, 0)
        for i in tqdm(range(0, len(order), cfg.eval.batch_size), desc=f"tune {kind} on "
                      f"{split.name}", disable=not progress, leave=False):
            batch = split.batch(order[i:i + cfg.eval.batch_size], torch.device("cpu"))
            c = corrupt(batch["inputs"], cfg.noise, kind, gen)
            runner.new_batch()
            for sc in scores.values():
                sc.add(runner, c.inputs, batch["target"], noise_pattern(c.sigma))
        per_family = {}
        for name, sc in scores.items():
            per_family[name] = {}
            for b, cell in sc.result().items():
                cand = cell["best_static"]
                mask = torch.zeros(model_cfg.num_modalities, model_cfg.depth, dtype=torch.bool)
                for j, blocks in enumerate(cand["blocks"]):
                    mask[j, blocks] = True
                per_family[name][b] = {
                    "blocks": cand["blocks"], "family": name, "val_error_cm": cand["error_cm"],
                    "mask": mask, "index": sc.index(int(b), mask),
                    "per_pattern": sc.best_for_pattern(int(b), cfg.eval.pattern_min_samples)}
        best = {}
        for cells in per_family.values():
            for b, cell in cells.items():
                if b not in best or cell["val_error_cm"] < best[b]["val_error_cm"]:
                    best[b] = cell
        out[kind] = {"families": per_family, "best": best}
    return out


@torch.no_grad()
def evaluate(cfg: TrainConfig, data_dir: str | Path | None = None,
             weights: str | None = None, progress: bool = True, quick: bool = False) -> dict:
    """Compute every table; returns the result dict (the schema of the eval JSON in the
    project's interface spec, plus extras). Tables: every frame of `eval.split` (`quick`:
    `eval.quick_samples` of them) x `eval.noise_repeats` corruption seeds; the best static
    allocation is chosen on `eval.tune_split`; paired block-bootstrap intervals compare ADMN
    with every other row."""
    from tqdm import tqdm

    model_cfg = cfg.model_config()
    validate(cfg, model_cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ev = cfg.eval
    budgets = list(ev.budgets) or default_budgets(model_cfg.total_blocks)
    models = load_models(cfg, model_cfg, weights)
    check_budget_ranges(models, budgets)
    runner = CachingRunner(models.model)
    root = cfg.path(data_dir) if data_dir else cfg.path(cfg.data.root)
    split = load_split(root, ev.split, model_cfg, cfg.data.min_samples)
    order = eval_order(len(split), ev.quick_samples if quick else ev.max_samples)
    cost = CostModel(model_cfg)
    m, d = model_cfg.num_modalities, model_cfg.depth
    single_max = SinglePolicy(model_cfg, model_cfg.modalities[0]).budget_range[1]
    ctrl_size = model_cfg.controller.img_size
    names = policy_names(model_cfg)

    low = model_cfg.min_blocks_list
    splits = {b: split_candidates(m, d, b, low) for b in budgets}
    few = [b for b in budgets if ev.exhaustive_noise
           and num_masks(m, d, b, low) <= ev.exhaustive_max_masks]
    families = {"splits": splits}
    if few:
        families["exhaustive"] = {b: exhaustive_candidates(m, d, b, low) for b in few}
    tune = load_split(root, ev.tune_split, model_cfg, 1)
    tuned = tune_static(cfg, model_cfg, runner, tune, budgets, families, progress)

    tables: dict[str, dict[str, dict[str, dict]]] = {}
    comparisons: dict[str, dict[str, dict]] = {}
    admn_first_seed: dict[str, dict[int, Tensor]] = {}  # ADMN's errors for the baselines' CIs
    bounds: dict[str, dict[str, dict]] = {}
    for k, kind in enumerate(NOISE_SETTINGS):
        fams = {n: c for n, c in families.items()
                if n == "splits" or kind in ev.exhaustive_noise}
        scores = {n: AllocationScores(c) for n, c in fams.items()}  # oracle: first seed
        errs: dict[tuple[str, int], list[list[Tensor]]] = {}  # (policy, L) -> [seed][batch]
        flops: dict[tuple[str, int], float] = {}
        for r in range(ev.noise_repeats):
            gen = noise_generator(ev.noise_seed, k, r)
            rand_policy = make_policy("random", model_cfg, seed=ev.random_seed + r)
            for i in tqdm(range(0, len(order), ev.batch_size), desc=f"eval {kind} seed {r}",
                          disable=not progress, leave=False):
                batch = split.batch(order[i:i + ev.batch_size], torch.device("cpu"))
                c = corrupt(batch["inputs"], cfg.noise, kind, gen)
                x = c.inputs
                lowres = downsample(x, ctrl_size)
                runner.new_batch()
                target = batch["target"]
                for name in names:
                    for budget in budgets:
                        mask = policy_mask(name, budget, models, model_cfg, lowres, len(target),
                                           rand_policy, tuned[kind]["best"], budgets[0],
                                           single_max)
                        if mask is None:
                            continue
                        err = (runner(x, mask).mean - target).norm(dim=-1)
                        key = (name, budget)
                        errs.setdefault(key, [[] for _ in range(ev.noise_repeats)])[r].append(err)
                        with_ctrl = name in CONTROLLER_ROWS
                        flops[key] = flops.get(key, 0.0) + float(
                            cost.costs(mask, include_controller=with_ctrl).sum())
                if r == 0:
                    for sc in scores.values():
                        sc.add(runner, x, target, noise_pattern(c.sigma))
        per_sample = {key: torch.stack([torch.cat(b) for b in seeds])  # [R, N]
                      for key, seeds in errs.items()}
        tables[kind] = table_rows(names, budgets, per_sample, flops, ev)
        comparisons[kind] = compare_rows(per_sample, budgets, models, ev)
        admn_first_seed[kind] = {b: per_sample[(admn_row(per_sample, b), b)][0]
                                 for b in budgets if admn_row(per_sample, b)}
        bounds[kind] = {n: bound_cells(sc, tuned[kind]["families"][n])
                        for n, sc in scores.items()}

    premise_gens = {kind: noise_generator(ev.noise_seed, k, 0)  # Table 1's first seed
                    for k, kind in enumerate(NOISE_SETTINGS)}
    depth_curves = premise(runner, split, order, model_cfg, cfg.noise, ev.premise_noise,
                           premise_gens, ev.batch_size) if ev.premise_noise else {}
    allocation = allocation_sweep(models, cfg, model_cfg, split, order, budgets)
    run_dir = Path(weights) if weights else cfg.path(cfg.out_dir)
    baselines = evaluate_baselines(cfg, model_cfg, split, order, run_dir, NOISE_SETTINGS,
                                   progress, tune_split=tune)
    res = {"recipe": cfg.recipe, "total_blocks": model_cfg.total_blocks, "budgets": budgets,
           "tables": tables, "comparisons": comparisons, "bounds": bounds,
           "samples": len(order), "split": ev.split, "quick": quick,
           "tune_split": ev.tune_split, "tune_samples": len(eval_order(len(tune),
                                                                       ev.tune_samples)),
           "noise_seed": ev.noise_seed, "noise_repeats": ev.noise_repeats,
           "bootstrap": {"block": ev.bootstrap_block, "samples": ev.bootstrap_samples,
                         "level": 0.95},
           "best_static": {kind: {b: {k2: cell[k2] for k2 in ("blocks", "family", "val_error_cm")}
                                  for b, cell in t["best"].items()}
                           for kind, t in tuned.items()},
           "noise_levels": dict(cfg.noise.levels), "weights": models.source,
           "weight_files": models.files, "allocation": allocation, "premise": depth_curves,
           "controller_gflops": round(cost.controller_flops() / 1e9, 4),
           "baselines": baselines, "goals": to_dict(ev.goals)}
    attach_intervals(res, admn_first_seed, ev)
    return res


CONTROLLER_ROWS = ("admn", "admn_universal", "admn_ae")
TUNE_SEED_OFFSET = 50_021  # tuning draws its corruptions from seeds the tables never use


def policy_mask(name: str, budget: int, models: EvalModels, model_cfg: ModelConfig,
                lowres: dict[str, Tensor], batch: int, rand_policy, tuned: dict[str, dict],
                first_budget: int, single_max: int) -> Tensor | None:
    """The row's bool mask [B, M, D] at `budget` (None: the row has no cell there)."""
    if name == "upper_bound":
        return None if budget != first_budget else \
            make_policy(name, model_cfg)(lowres, budget)
    if name.startswith("single_"):
        return None if budget > single_max else \
            make_policy(f"single:{name[7:]}", model_cfg)(lowres, budget)
    if name in CONTROLLER_ROWS:
        ctrl = controller_for(models, name, budget)
        return None if ctrl is None else ctrl(lowres, budget, sample=False).mask.bool()
    if name == "best_static":
        cell = tuned.get(str(budget))
        return None if cell is None else cell["mask"].expand(batch, -1, -1)
    if name == "random":
        return rand_policy(lowres, budget)
    return make_policy(name, model_cfg)(lowres, budget)


def table_rows(names: list[str], budgets: list[int], per_sample: dict[tuple[str, int], Tensor],
               flops: dict[tuple[str, int], float], ev) -> dict[str, dict[str, dict]]:
    """`{policy: {"<L>": {"error_cm", "gflops", "ci95", "seed_error_cm"}}}`; upper_bound is
    evaluated once and repeated at every budget."""
    table: dict[str, dict[str, dict]] = {}
    for name in names:
        row = {}
        for budget in budgets:
            key = (name, budgets[0] if name == "upper_bound" else budget)
            if key not in per_sample:
                continue
            e = per_sample[key]
            ci = paired_block_bootstrap(e, torch.zeros_like(e), ev.bootstrap_block,
                                        ev.bootstrap_samples)
            row[str(budget)] = {"error_cm": round(float(e.mean()), 2),
                                "gflops": round(flops[key] / e.numel() / 1e9, 3),
                                "ci95": [round(ci["lo"], 2), round(ci["hi"], 2)],
                                "seed_error_cm": [round(float(v), 2) for v in e.mean(1)]}
        if row:
            table[name] = row
    return table


def admn_row(per_sample: dict[tuple[str, int], Tensor], budget: int) -> str | None:
    """The ADMN row compared at a budget: per-budget controllers, else the universal one."""
    for name in ("admn", "admn_universal"):
        if (name, budget) in per_sample:
            return name
    return None


def compare_rows(per_sample: dict[tuple[str, int], Tensor], budgets: list[int],
                 models: EvalModels, ev) -> dict[str, dict]:
    """`{"<L>": {"reference": row, "<other row>": {"diff_cm", "lo", "hi"}}}`: ADMN's error
    minus the other row's on the same frames and corruptions (negative: ADMN better), with a
    paired block-bootstrap 95 % interval."""
    out: dict[str, dict] = {}
    for budget in budgets:
        ref = admn_row(per_sample, budget)
        if ref is None:
            continue
        cell: dict = {"reference": ref}
        for (name, b), e in per_sample.items():
            other = b == budget or (name == "upper_bound" and b == budgets[0])
            if name != ref and other:
                cell[name] = paired_block_bootstrap(per_sample[(ref, budget)], e,
                                                    ev.bootstrap_block, ev.bootstrap_samples)
        out[str(budget)] = cell
    return out


def bound_cells(scores: AllocationScores, tuned: dict[str, dict]) -> dict[str, dict]:
    """Per budget: the per-sample oracle over the family's candidates (test, first corruption
    seed), the family's static mask chosen on val and its best mask per noise pattern chosen
    on val, both scored on the same test inputs (the mask best on test itself is kept,
    labelled in hindsight, for reference)."""
    out = {}
    for b, cell in scores.result().items():
        choice = tuned[b]
        out[b] = {"masks": cell["masks"], "oracle_cm": cell["oracle_cm"],
                  "best_static": {"blocks": choice["blocks"], "tuned_on": "val",
                                  "val_error_cm": choice["val_error_cm"],
                                  "error_cm": scores.mean_error(int(b), choice["mask"])},
                  "best_per_noise_pattern": {
                      "tuned_on": "val", "patterns": len(choice["per_pattern"]),
                      "error_cm": scores.choice_error(int(b), choice["per_pattern"],
                                                      choice["index"])},
                  "best_static_in_hindsight": cell["best_static"]}
    return out


@torch.no_grad()
def allocation_sweep(models: EvalModels, cfg: TrainConfig, model_cfg: ModelConfig, split,
                     order: Tensor, budgets: list[int], steps: int = 6,
                     samples: int = 64) -> dict:
    """Blocks the controller gives each modality as one modality's sigma grows (others clean),
    at the middle budget; per-budget controller if shipped, else the universal one."""
    budget = budgets[len(budgets) // 2]
    ctrl = models.per_budget.get(budget) or models.universal
    if ctrl is None:
        return {}
    idx = order[torch.linspace(0, len(order) - 1, min(samples, len(order))).long()]
    batch = split.batch(idx, torch.device("cpu"))
    gen = torch.Generator().manual_seed(cfg.eval.noise_seed)
    out = {"budget": budget, "sweeps": {}}
    for mod in model_cfg.modalities:
        hi = cfg.noise.max_sigma(mod)
        levels = [hi * j / (steps - 1) for j in range(steps)]
        rows = []
        for sigma in levels:
            x = dict(batch["inputs"])
            x[mod] = add_gaussian_noise(x[mod], sigma, gen)
            mask = ctrl(downsample(x, model_cfg.controller.img_size), budget,
                        sample=False).mask
            rows.append([round(float(v), 3) for v in mask.sum(-1).mean(0)])  # blocks per mod
        out["sweeps"][mod] = {"sigma": [round(s, 3) for s in levels], "blocks": rows}
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def protocol_text(res: dict) -> str:
    """One paragraph: what was evaluated, on what, how often, with which intervals."""
    bs = res.get("bootstrap", {})
    subset = " (`--quick` subset)" if res.get("quick") else ""
    return (f"Mean localisation error (cm) / GFLOPs per sample over {res['samples']} frames of "
            f"the `{res['split']}` split{subset} x {res.get('noise_repeats', 1)} corruption "
            f"seed(s) (from {res['noise_seed']}); [lo, hi]: 95 % paired block-bootstrap "
            f"interval (blocks of {bs.get('block', '?')} frames, {bs.get('samples', '?')} "
            f"resamples). Every choice (the best static allocation, calibrated knobs) was made "
            f"on the `{res.get('tune_split', '?')}` split ({res.get('tune_samples', '?')} "
            f"frames), never on the reported one. Weights: `{res['weights']}` ("
            + ", ".join(f"`{n}` {h}" for n, h in res.get("weight_files", {}).items())
            + f"). Budgets are active backbone blocks out of {res['total_blocks']}. GFLOPs "
            f"count backbones + fusion (+ controller, {res['controller_gflops']} GFLOPs, for "
            "the ADMN rows).")


def comparison_lines(res: dict) -> list[str]:
    """ADMN minus each other row, with its interval and verdict, per noise and budget."""
    comps = res.get("comparisons") or {}
    if not comps:
        return []
    lines = ["## ADMN against every other row", "",
             "ADMN's error minus the row's on the same frames and corruptions (negative: ADMN "
             "better), 95 % paired block-bootstrap interval; *better* / *worse* only when the "
             "interval excludes 0. ADMN = the per-budget controller (else the universal one).",
             "", "| noise | L | ADMN row | vs | difference (cm) [95 % CI] | ADMN is |",
             "|---|---|---|---|---|---|"]
    for kind, per_budget in comps.items():
        for b, cell in per_budget.items():
            for other, ci in cell.items():
                if other == "reference":
                    continue
                lines.append(f"| {kind} | {b} | {cell['reference']} | {other} | "
                             f"{ci['diff_cm']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}] | "
                             f"{verdict(ci)} |")
    return [*lines, ""]


def to_markdown(res: dict) -> str:
    budgets, total = res["budgets"], res["total_blocks"]
    lines = [f"# `{res['recipe']}`: Table 1 ({res['split']} split)", "", protocol_text(res), ""]
    for kind, table in res["tables"].items():
        lines += [f"## {kind} noise", ""]
        head = "| policy | " + " | ".join(f"L={b} ({b}/{total})" for b in budgets) + " |"
        lines += [head, "|---" * (len(budgets) + 1) + "|"]
        for name, row in table.items():
            cells = [cell_text(row[str(b)]) if str(b) in row else "—" for b in budgets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += premise_lines(res)
    lines += comparison_lines(res)
    lines += bound_lines(res)
    lines += goal_lines(res)
    alloc = res.get("allocation") or {}
    if alloc:
        lines += [f"## Allocation at L={alloc['budget']} as one modality's noise grows", "",
                  "Mean blocks per modality (others clean):", ""]
        for mod, sw in alloc["sweeps"].items():
            pairs = ", ".join(f"σ={s:g}: {'/'.join(f'{v:.1f}' for v in r)}"
                              for s, r in zip(sw["sigma"], sw["blocks"], strict=True))
            lines.append(f"- noisy {mod}: {pairs}")
        lines.append("")
    lines += baseline_lines(res)
    return "\n".join(lines)


def cell_text(cell: dict) -> str:
    """`30.4 [29.9, 30.9] cm / 0.530`."""
    ci = cell.get("ci95")
    band = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
    return f"{cell['error_cm']:.1f}{band} cm / {cell['gflops']:.3f}"


def bound_lines(res: dict) -> list[str]:
    """Naive and ADMN against the best static allocation and the per-sample oracle."""
    bounds = res.get("bounds") or {}
    rows = []
    for kind, families in bounds.items():
        table = res["tables"].get(kind, {})
        for family, per_budget in families.items():
            for b, cell in per_budget.items():
                naive = table.get("naive", {}).get(b, {}).get("error_cm")
                admn = _cm(table.get("admn", {}).get(b, {}).get("error_cm"))
                if b not in table.get("admn", {}) and b in table.get("admn_universal", {}):
                    admn = f"{_cm(table['admn_universal'][b]['error_cm'])} (universal)"
                best, hind = cell["best_static"], cell.get("best_static_in_hindsight")
                hind_cell = "—" if hind is None else \
                    f"{hind['error_cm']:.1f} cm ({_blocks(hind['blocks'], family)})"
                per_pattern = cell.get("best_per_noise_pattern")
                pattern_cell = "—" if per_pattern is None else \
                    f"{per_pattern['error_cm']:.1f} cm ({per_pattern['patterns']})"
                rows.append(f"| {kind} | {b} | {family} ({cell['masks']}) | {_cm(naive)} | "
                            f"{admn} | {best['error_cm']:.1f} cm "
                            f"({_blocks(best['blocks'], family)}) | {pattern_cell} | "
                            f"{hind_cell} | {cell['oracle_cm']:.1f} cm |")
    if not rows:
        return []
    return ["## What allocation can gain", "",
            "Candidate allocations run on the same inputs: *splits*, every split of L into "
            "per-modality block counts (every other block first); *exhaustive*, every mask "
            "with block 0 on (where there are few). *Best static*: the candidate with the "
            "lowest mean error on the validation split, scored here on test. *Per noise "
            "pattern*: what a controller that judged the noise exactly could reach: for each "
            "pattern (per modality, how many nodes have sigma >= half its largest), the "
            "candidate best on the validation frames with that pattern (the patterns so "
            "chosen in brackets; the others take the best static one), scored here on test. "
            "*In hindsight*: "
            "the candidate best on these test inputs themselves (optimistic; for reference "
            "only). *Oracle*: per sample, the candidate with the lowest error against the "
            "ground truth: what choosing among the candidates per input could reach at best. "
            "Over every mask (exhaustive) no controller can beat it; a controller may beat the "
            "splits' oracle with masks that are not splits. Candidates are scored on the first "
            "corruption seed; naive and ADMN are the tables' means over every seed.", "",
            "| noise | L | candidates | naive | ADMN | best static (val) | per noise pattern "
            "(val) | in hindsight | oracle |", "|---" * 9 + "|", *rows, ""]


def _cm(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} cm"


def _blocks(blocks: list[list[int]], family: str) -> str:
    """Per-modality block counts for splits (`1/1/4`), block sets otherwise."""
    if family == "splits":
        return "/".join(str(len(b)) for b in blocks)
    return "/".join("{" + ",".join(map(str, b)) + "}" for b in blocks)


def goal_lines(res: dict) -> list[str]:
    """The recipe's goals (`eval.goals`), measured, each marked met or missed; at the lowest
    budget, plus what allocation could gain there (informational)."""
    goals = from_dict(EvalGoals, res.get("goals"))
    tables, budgets = res["tables"], res["budgets"]
    low = str(budgets[0])

    def err(kind: str, policy: str, b: str = low) -> float | None:
        return tables.get(kind, {}).get(policy, {}).get(b, {}).get("error_cm")

    def line(text: str, ok: bool, goal: str) -> str:  # ratios to 3 decimals: 1.155x misses 1.15x
        return f"- {text} (goal {goal}: {'met' if ok else 'missed'})"

    admn, ub = err("binary", "admn"), err("binary", "upper_bound")
    if admn is None or ub is None:
        return []
    out = ["## Goals", ""]
    clean = res.get("premise", {}).get("curves", {}).get("clean", {}).get("all")
    if clean:
        out.append(line(f"full model, clean inputs: {clean[-1]:.1f} cm",
                        clean[-1] <= goals.full_clean_cm, f"<= {goals.full_clean_cm:g} cm"))
    out.append(line(f"full model, binary noise: {ub:.1f} cm", ub <= goals.full_binary_cm,
                    f"<= {goals.full_binary_cm:g} cm"))
    for kind in tables:
        a, u = err(kind, "admn"), err(kind, "upper_bound")
        if a is None or u is None:
            continue
        limit = goals.admn_vs_full_binary if kind == "binary" else goals.admn_vs_full_other
        out.append(line(f"{kind} noise, ADMN at L={low} vs the full model: {a:.1f} / {u:.1f} "
                        f"cm = {a / u:.3f}x", a / u <= limit, f"<= {limit:g}x"))
    for base in ("naive", "random"):
        e = err("binary", base)
        if e is not None:
            out.append(line(f"binary noise, {base} at L={low} vs ADMN: {e:.1f} / {admn:.1f} cm "
                            f"= {e / admn:.3f}x", e / admn >= goals.baseline_vs_admn,
                            f">= {goals.baseline_vs_admn:g}x"))
    gaps = {}
    for b in map(str, budgets):
        u, a = err("binary", "admn_universal", b), err("binary", "admn", b)
        if u is not None and a is not None:
            gaps[b] = 100 * (u - a) / a
    if gaps:
        out.append(line("binary noise, universal vs per-budget controllers: " + ", ".join(
            f"L={b}: {g:+.1f} %" for b, g in gaps.items()),
            all(abs(g) <= goals.universal_within_pct for g in gaps.values()),
            f"within {goals.universal_within_pct:g} % at every budget"))
    naive = err("binary", "naive")
    for family, per_budget in res.get("bounds", {}).get("binary", {}).items():
        cell = per_budget.get(low)
        if naive is None or not cell:
            continue
        oracle, best = cell["oracle_cm"], cell["best_static"]
        out.append(f"- naive at L={low} vs the per-sample oracle over {family} "
                   f"({cell['masks']} masks): {naive:.1f} / {oracle:.1f} cm = "
                   f"{naive / oracle:.2f}x (the most choosing among them per input could gain)")
        out.append(f"- ADMN at L={low} vs the best static mask of {family} "
                   f"({_blocks(best['blocks'], family)}): {admn:.1f} / {best['error_cm']:.1f} cm "
                   f"= {admn / best['error_cm']:.2f}x")
        per_pattern = cell.get("best_per_noise_pattern")
        if per_pattern:
            out.append(f"- best static vs the best {family} mask per noise pattern at L={low}: "
                       f"{best['error_cm']:.1f} / {per_pattern['error_cm']:.1f} cm = "
                       f"{best['error_cm'] / per_pattern['error_cm']:.2f}x (what judging the "
                       f"noise exactly could gain over one allocation for all)")
    return [*out, ""]


def plot(res: dict, out_dir: Path) -> list[Path]:
    recipe, budgets = res["recipe"], res["budgets"]
    paths = []
    kinds = list(res["tables"])
    fig, axes = panel_row(len(kinds))
    for ax, kind in zip(axes, kinds, strict=True):
        for name, row in res["tables"][kind].items():
            xs = [b for b in budgets if str(b) in row]
            ys = [row[str(b)]["error_cm"] for b in xs]
            style = "--" if name == "upper_bound" else "-o"
            bars = [[max(0.0, y - row[str(b)]["ci95"][0]) for b, y in zip(xs, ys, strict=True)],
                    [max(0.0, row[str(b)]["ci95"][1] - y) for b, y in zip(xs, ys, strict=True)]] \
                if all("ci95" in row[str(b)] for b in xs) else None
            ax.errorbar(xs, ys, yerr=bars, fmt=style, label=name, markersize=4, capsize=2)
        splits = res.get("bounds", {}).get(kind, {}).get("splits", {})
        xs = [b for b in budgets if str(b) in splits]
        if xs:
            ax.plot(xs, [splits[str(b)]["best_static"]["error_cm"] for b in xs], ":",
                    label="best static split")
            ax.plot(xs, [splits[str(b)]["oracle_cm"] for b in xs], ":", label="split oracle")
        ax.set_title(f"{kind} noise (95 % CI)")
        ax.set_xlabel(f"budget L (blocks of {res['total_blocks']})")
        ax.set_ylabel("mean error (cm)")
        ax.set_xticks(budgets)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / f"{recipe}_error_vs_budget.png"))
    paths += [p for p in (plot_comparisons(res, out_dir), plot_premise(res, out_dir)) if p]

    alloc = res.get("allocation") or {}
    if alloc:
        mods = list(alloc["sweeps"])
        fig, axes = panel_row(len(mods), 4.5, 3.6)
        for ax, mod in zip(axes, mods, strict=True):
            sw = alloc["sweeps"][mod]
            for j, other in enumerate(mods):
                ax.plot(sw["sigma"], [r[j] for r in sw["blocks"]], "-o", markersize=4,
                        label=other)
            ax.set_title(f"noise on {mod} (L={alloc['budget']})")
            ax.set_xlabel(f"σ of {mod}")
            ax.set_ylabel("blocks allocated")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        paths.append(save_figure(fig, out_dir / f"{recipe}_allocation.png"))
    return paths


def plot_comparisons(res: dict, out_dir: Path) -> Path | None:
    """ADMN minus each other row (cm) with its 95 % interval, one panel per noise setting."""
    comps = res.get("comparisons") or {}
    if not comps:
        return None
    kinds = list(comps)
    fig, axes = panel_row(len(kinds))
    for ax, kind in zip(axes, kinds, strict=True):
        others = sorted({o for cell in comps[kind].values() for o in cell if o != "reference"})
        for j, other in enumerate(others):
            xs, ys, lo, hi = [], [], [], []
            for b, cell in comps[kind].items():
                if other in cell:
                    ci = cell[other]
                    xs.append(int(b) + 0.12 * (j - len(others) / 2))
                    ys.append(ci["diff_cm"])
                    lo.append(max(0.0, ci["diff_cm"] - ci["lo"]))  # rounding: never < 0
                    hi.append(max(0.0, ci["hi"] - ci["diff_cm"]))
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", markersize=3, capsize=2, label=other)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{kind} noise: ADMN minus row (95 % CI)")
        ax.set_xlabel("budget L")
        ax.set_ylabel("error difference (cm); < 0: ADMN better")
        ax.grid(alpha=0.3)
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=6)
    return save_figure(fig, out_dir / f"{res['recipe']}_comparisons.png")


def summary(res: dict) -> str:
    """What `admn eval` evaluated, printed before the report paths."""
    files = ", ".join(f"{n} ({h})" for n, h in res.get("weight_files", {}).items())
    return (f"[eval] evaluated {res['weights']}: {files}\n"
            f"[eval] on {res['samples']} frames of the '{res['split']}' split"
            f"{' (--quick subset)' if res.get('quick') else ''} x {res['noise_repeats']} "
            f"corruption seeds, budgets {res['budgets']}, noise {list(res['tables'])}; "
            f"choices tuned on {res['tune_samples']} frames of '{res['tune_split']}'")


def write_report(res: dict, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{res['recipe']}.md"
    md.write_text(to_markdown(res), encoding="utf-8")
    js = out_dir / f"{res['recipe']}.json"
    js.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    combined = plot_error_vs_gflops(res, out_dir)
    return [md, js, *plot(res, out_dir), *([combined] if combined else [])]
