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

from admn_ros.core.config import ModelConfig
from admn_ros.core.controller import Controller
from admn_ros.core.cost import CostModel
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.noise import add_gaussian_noise, corrupt
from admn_ros.core.policies import make_policy
from admn_ros.train.allocation_bounds import (
    AllocationScores,
    exhaustive_candidates,
    num_masks,
    split_candidates,
)
from admn_ros.train.config import TrainConfig, default_budgets, validate
from admn_ros.train.data import load_split
from admn_ros.train.evaluate_baselines import (
    baseline_lines,
    evaluate_baselines,
    plot_error_vs_gflops,
)
from admn_ros.train.figures import save_figure
from admn_ros.train.runner import CachingRunner

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


def load_models(cfg: TrainConfig, model_cfg: ModelConfig, weights: str | None) -> EvalModels:
    """From the recipe's run folder when it has `admn.pt` (or `weights` = a run folder),
    else the shipped default weights in `models_dir`."""
    from admn_ros.core.checkpoint import load_checkpoint
    from admn_ros.train.weights import check_compatible, load_default_weights

    run = Path(weights) if weights else cfg.path(cfg.out_dir)
    if (run / "admn.pt").exists():
        model = load_checkpoint(run / "admn.pt", into=ADMN(model_cfg), kind="admn").module
        out = EvalModels(model.eval(), source=str(run))
        for p in sorted(run.glob("controller*.pt")):
            c = load_checkpoint(p, kind="controller")
            check_compatible(c.model_config, model_cfg, p)
            _assign(out, p.stem[len("controller"):].lstrip("_"), c.module.eval())
        return out
    dw = load_default_weights(cfg.path(cfg.models_dir), cfg.recipe, model_cfg)
    out = EvalModels(dw.model, source=str(cfg.path(cfg.models_dir)))
    for key, c in dw.controllers.items():
        _assign(out, key, c)
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
            *[f"single_{m}" for m in model_cfg.modalities]]


@torch.no_grad()
def evaluate(cfg: TrainConfig, data_dir: str | Path | None = None,
             weights: str | None = None,
             progress: bool = True) -> dict:
    """Compute every table; returns the result dict (the schema of the eval JSON in the
    project's interface spec, plus extras)."""
    from tqdm import tqdm

    model_cfg = cfg.model_config()
    validate(cfg, model_cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    budgets = list(cfg.eval.budgets) or default_budgets(model_cfg.total_blocks)
    models = load_models(cfg, model_cfg, weights)
    check_budget_ranges(models, budgets)
    runner = CachingRunner(models.model)
    split = load_split(cfg.path(data_dir) if data_dir else cfg.path(cfg.data.root),
                       cfg.eval.split, model_cfg, cfg.data.min_samples)
    n = len(split) if cfg.eval.max_samples is None else min(len(split), cfg.eval.max_samples)
    order = torch.linspace(0, len(split) - 1, n).round().long().unique()
    cost = CostModel(model_cfg)
    m, d = model_cfg.num_modalities, model_cfg.depth
    single_max = m + d - 1
    ctrl_size = model_cfg.controller.img_size
    names = policy_names(model_cfg)

    tables: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    bounds: dict[str, dict[str, dict]] = {}
    splits = {b: split_candidates(m, d, b) for b in budgets}
    few = [b for b in budgets if cfg.eval.exhaustive_noise
           and num_masks(m, d, b) <= cfg.eval.exhaustive_max_masks]
    exhaustive = {b: exhaustive_candidates(m, d, b) for b in few}  # built once for all kinds
    for k, kind in enumerate(NOISE_SETTINGS):
        gen = torch.Generator().manual_seed(cfg.eval.noise_seed + 1009 * k)
        rand_policy = make_policy("random", model_cfg, seed=cfg.eval.random_seed)
        families = {"splits": splits}
        if kind in cfg.eval.exhaustive_noise and exhaustive:
            families["exhaustive"] = exhaustive
        scores = {name: AllocationScores(c) for name, c in families.items()}
        sums: dict[tuple[str, int], list[float]] = {}  # (policy, L) -> [err sum, flops sum, n]
        bs = cfg.eval.batch_size
        batches = range(0, len(order), bs)
        for i in tqdm(batches, desc=f"eval {kind}", disable=not progress, leave=False):
            batch = split.batch(order[i:i + bs], torch.device("cpu"))
            x = corrupt(batch["inputs"], cfg.noise, kind, gen).inputs
            lowres = downsample(x, ctrl_size)
            runner.new_batch()
            target, b = batch["target"], len(batch["target"])
            for name in names:
                for budget in budgets:
                    if name == "upper_bound" and budget != budgets[0]:
                        continue
                    if name.startswith("single_") and budget > single_max:
                        continue
                    with_ctrl = False
                    if name in ("admn", "admn_universal", "admn_ae"):
                        ctrl = controller_for(models, name, budget)
                        if ctrl is None:
                            continue
                        mask = ctrl(lowres, budget, sample=False).mask.bool()
                        with_ctrl = True
                    elif name == "random":
                        mask = rand_policy(lowres, budget)
                    elif name.startswith("single_"):
                        mask = make_policy(f"single:{name[7:]}", model_cfg)(lowres, budget)
                    else:
                        mask = make_policy(name, model_cfg)(lowres, budget)
                    pred = runner(x, mask)
                    err = (pred.mean - target).norm(dim=-1)
                    flops = cost.costs(mask, include_controller=with_ctrl)
                    acc = sums.setdefault((name, budget), [0.0, 0.0, 0])
                    acc[0] += float(err.sum())
                    acc[1] += float(flops.sum())
                    acc[2] += b
            for sc in scores.values():
                sc.add(runner, x, target)
        bounds[kind] = {name: sc.result() for name, sc in scores.items()}
        table: dict[str, dict[str, dict[str, float]]] = {}
        for name in names:
            row = {}
            for budget in budgets:
                key = (name, budgets[0] if name == "upper_bound" else budget)
                if key in sums:
                    e, f, cnt = sums[key]
                    row[str(budget)] = {"error_cm": round(e / cnt, 2),
                                        "gflops": round(f / cnt / 1e9, 3)}
            if row:
                table[name] = row
        tables[kind] = table

    allocation = allocation_sweep(models, cfg, model_cfg, split, order, budgets)
    run_dir = Path(weights) if weights else cfg.path(cfg.out_dir)
    baselines = evaluate_baselines(cfg, model_cfg, split, order, run_dir, NOISE_SETTINGS,
                                   progress)
    return {"recipe": cfg.recipe, "total_blocks": model_cfg.total_blocks, "budgets": budgets,
            "tables": tables, "bounds": bounds, "samples": len(order), "split": cfg.eval.split,
            "noise_seed": cfg.eval.noise_seed, "noise_levels": dict(cfg.noise.levels),
            "weights": models.source, "allocation": allocation,
            "controller_gflops": round(cost.controller_flops() / 1e9, 4),
            "baselines": baselines}


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
def to_markdown(res: dict) -> str:
    budgets, total = res["budgets"], res["total_blocks"]
    lines = [f"# `{res['recipe']}`: Table 1 (test split)", "",
             f"Mean localisation error (cm) / GFLOPs per sample, {res['samples']} samples of the "
             f"`{res['split']}` split, fixed corruption seed {res['noise_seed']}; weights: "
             f"`{res['weights']}`. Budgets are active backbone blocks out of {total}. GFLOPs "
             f"count backbones + fusion (+ controller, {res['controller_gflops']} GFLOPs, for "
             "the ADMN rows).", ""]
    for kind, table in res["tables"].items():
        lines += [f"## {kind} noise", ""]
        head = "| policy | " + " | ".join(f"L={b} ({b}/{total})" for b in budgets) + " |"
        lines += [head, "|---" * (len(budgets) + 1) + "|"]
        for name, row in table.items():
            cells = [f"{row[str(b)]['error_cm']:.1f} cm / {row[str(b)]['gflops']:.3f}"
                     if str(b) in row else "—" for b in budgets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
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
                best = cell["best_static"]
                rows.append(f"| {kind} | {b} | {family} ({cell['masks']}) | {_cm(naive)} | "
                            f"{admn} | {best['error_cm']:.1f} cm "
                            f"({_blocks(best['blocks'], family)}) | {cell['oracle_cm']:.1f} cm |")
    if not rows:
        return []
    return ["## What allocation can gain", "",
            "Candidate allocations run on the same inputs: *splits*, every split of L into "
            "per-modality block counts (every other block first); *exhaustive*, every mask "
            "with block 0 on (where there are few). *Best static*: the one candidate with the "
            "lowest mean error on these samples (tuned on them, so optimistic). *Oracle*: per "
            "sample, the candidate with the lowest error against the ground truth: what "
            "choosing among the candidates per input could reach at best. Over every mask "
            "(exhaustive) no controller can beat it; a controller may beat the splits' oracle "
            "with masks that are not splits.", "",
            "| noise | L | candidates | naive | ADMN | best static | oracle |", "|---" * 7 + "|",
            *rows, ""]


def _cm(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} cm"


def _blocks(blocks: list[list[int]], family: str) -> str:
    """Per-modality block counts for splits (`1/1/4`), block sets otherwise."""
    if family == "splits":
        return "/".join(str(len(b)) for b in blocks)
    return "/".join("{" + ",".join(map(str, b)) + "}" for b in blocks)


def goal_lines(res: dict) -> list[str]:
    """The demo's accuracy goals, measured (binary noise, lowest budget)."""
    t = res["tables"].get("binary", {})
    budgets = res["budgets"]
    low = str(budgets[0])

    def err(policy: str, b: str) -> float | None:
        return t.get(policy, {}).get(b, {}).get("error_cm")

    admn, ub = err("admn", low), err("upper_bound", low)
    if admn is None or ub is None:
        return []
    out = ["## Goals (binary noise)", "",
           f"- ADMN at L={low} vs upper bound: {admn:.1f} / {ub:.1f} cm = {admn / ub:.2f}x "
           f"(goal <= 1.25x)"]
    for base in ("naive", "random"):
        e = err(base, low)
        if e is not None:
            out.append(f"- {base} at L={low} vs ADMN: {e:.1f} / {admn:.1f} cm = {e / admn:.2f}x "
                       f"(goal >= 2x)")
    naive = err("naive", low)
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
    gaps = []
    for b in map(str, budgets):
        u, a = err("admn_universal", b), err("admn", b)
        if u is not None and a is not None:
            gaps.append(f"L={b}: {100 * (u - a) / a:+.1f} %")
    if gaps:
        out.append("- universal vs per-budget controllers: " + ", ".join(gaps)
                   + " (goal within 10 %)")
    return [*out, ""]


def plot(res: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipe, budgets = res["recipe"], res["budgets"]
    paths = []
    kinds = list(res["tables"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, row in res["tables"][kind].items():
            xs = [b for b in budgets if str(b) in row]
            ys = [row[str(b)]["error_cm"] for b in xs]
            style = "--" if name == "upper_bound" else "-o"
            ax.plot(xs, ys, style, label=name, markersize=4)
        splits = res.get("bounds", {}).get(kind, {}).get("splits", {})
        xs = [b for b in budgets if str(b) in splits]
        if xs:
            ax.plot(xs, [splits[str(b)]["best_static"]["error_cm"] for b in xs], ":",
                    label="best static split")
            ax.plot(xs, [splits[str(b)]["oracle_cm"] for b in xs], ":", label="split oracle")
        ax.set_title(f"{kind} noise")
        ax.set_xlabel(f"budget L (blocks of {res['total_blocks']})")
        ax.set_ylabel("mean error (cm)")
        ax.set_xticks(budgets)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    paths.append(save_figure(fig, out_dir / f"{recipe}_error_vs_budget.png"))

    alloc = res.get("allocation") or {}
    if alloc:
        mods = list(alloc["sweeps"])
        fig, axes = plt.subplots(1, len(mods), figsize=(4.5 * len(mods), 3.6), squeeze=False)
        for ax, mod in zip(axes[0], mods, strict=True):
            sw = alloc["sweeps"][mod]
            for j, other in enumerate(mods):
                ax.plot(sw["sigma"], [r[j] for r in sw["blocks"]], "-o", markersize=4,
                        label=other)
            ax.set_title(f"noise on {mod} (L={alloc['budget']})")
            ax.set_xlabel(f"σ of {mod}")
            ax.set_ylabel("blocks allocated")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        paths.append(save_figure(fig, out_dir / f"{recipe}_allocation.png"))
    return paths


def write_report(res: dict, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{res['recipe']}.md"
    md.write_text(to_markdown(res), encoding="utf-8")
    js = out_dir / f"{res['recipe']}.json"
    js.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    combined = plot_error_vs_gflops(res, out_dir)
    return [md, js, *plot(res, out_dir), *([combined] if combined else [])]
