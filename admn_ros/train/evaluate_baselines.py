"""Competing methods (DynMM, MMExit, M2SN) in `admn eval`: knob sweeps against ADMN.

Budgets do not map one-to-one between the methods, so each method's knob is swept
(`eval.<method>.sweep`) and every point reports the mean localisation error, the measured
GFLOPs per sample (the method's own `flops`, counted with the core CostModel parts, gate /
navigator / every evaluated exit included) and the wall-clock latency per sample (ms, the
method's eval forward on the eval batches, divided by the batch size). Optionally
(`eval.<method>.budgets`) the knob is calibrated with `knob_for_budget` to ADMN's GFLOPs at a
budget L (naive-mask cost + controller) on the validation split, then run on the test split.

Each noise setting uses the same fixed corruption seed and batch order as the Table-1 loop,
so the methods see the very same corrupted inputs as the ADMN rows. A method whose checkpoint
(`<run>/<method>.pt`) is absent is skipped with a printed note.

Result: `{"<noise>": {"<method>": [{"knob", "error_cm", "gflops", "latency_ms"
(, "budget")}]}}` under the report's `baselines` key; `baseline_lines` writes the markdown
section (each point against ADMN's error at the nearest budget whose GFLOPs are <= the
point's) and `plot_error_vs_gflops` the combined error-vs-compute plot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from admn_ros.core.baselines import load_baseline_checkpoint
from admn_ros.core.baselines.common import knob_for_budget
from admn_ros.core.baselines.mmexit import predicted_std
from admn_ros.core.config import ModelConfig, config_diff
from admn_ros.core.cost import CostModel
from admn_ros.core.model import downsample
from admn_ros.core.noise import corrupt
from admn_ros.core.policies import make_policy
from admn_ros.train.bootstrap import paired_block_bootstrap
from admn_ros.train.bootstrap import verdict as paired_verdict
from admn_ros.train.config import BASELINE_STAGES, KNOBS, BaselineEval, TrainConfig
from admn_ros.train.figures import panel_row, save_figure
from admn_ros.train.runner import eval_order, noise_generator

METHOD_LABELS = {"dynmm": "DynMM", "mmexit": "MMExit", "m2sn": "M2SN"}
ERRORS = "_errors"  # a point's per-frame errors, for the paired intervals (not in the JSON)
# ADMN rows a baseline point is compared with, in order of preference per budget
ADMN_REFERENCE = ("admn", "admn_universal")


def noisy_batches(cfg: TrainConfig, model_cfg: ModelConfig, split, order: Tensor,
                  kind_index: int, kind: str) -> Iterator[tuple[dict, dict, Tensor]]:
    """(inputs, lowres, target) per eval batch, corrupted exactly as in the Table-1 loop
    (same seed per noise setting, same batches in the same order)."""
    gen = noise_generator(cfg.eval.noise_seed, kind_index, 0)
    bs = cfg.eval.batch_size
    for i in range(0, len(order), bs):
        batch = split.batch(order[i:i + bs], torch.device("cpu"))
        x = corrupt(batch["inputs"], cfg.noise, kind, gen).inputs
        yield x, downsample(x, model_cfg.controller.img_size), batch["target"]


def load_method(path: Path, method: str, model_cfg: ModelConfig) -> torch.nn.Module:
    """The method's checkpoint; ValueError for another method's file or another model."""
    try:
        ck = load_baseline_checkpoint(path, kind=method)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    diff = config_diff(ck.model_config, model_cfg)
    if diff:
        raise ValueError(f"{path}: {method} was trained for another model config "
                         f"(differs in {diff})")
    return ck.module.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def calibrate(module, method: str, batches: list[tuple[dict, dict, Tensor]],
              budget_flops: float) -> float:
    """The knob whose mean FLOPs over all `batches` is the largest within `budget_flops`
    (ValueError "budget: <Method> cannot meet ..." when even its cheapest point exceeds it)."""
    if method == "mmexit":  # per-sample std at every exit, then bisection on the threshold
        std = torch.cat([torch.stack([predicted_std(p, module.cfg.uncertainty)
                                      for p in module._all_exits(x)], 1)
                         for x, _, _ in batches])

        def mean_flops(thr: float) -> float:
            return float(module.exit_flops[module.first_exit(std, thr).cpu()].mean())

        return knob_for_budget(mean_flops, budget_flops, "MMExit", "threshold_cm", 0.0,
                               math.inf, increasing=False)
    lowres = {m: torch.cat([lr[m] for _, lr, _ in batches]) for m in batches[0][1]}
    return module.knob_for_budget(lowres, budget_flops)


@torch.no_grad()
def run_point(module, method: str, batches, knob: float) -> dict[str, float]:
    """Mean error (cm), GFLOPs and latency (ms per sample) of one operating point."""
    err = flops = seconds = 0.0
    n = 0
    errors = []
    for x, lowres, target in batches:
        device = target.device
        _sync(device)
        t0 = time.perf_counter()
        out = module(x, None if method == "mmexit" else lowres, knob)
        _sync(device)
        seconds += time.perf_counter() - t0
        e = (out.pred.mean - target).norm(dim=-1)
        errors.append(e)
        err += float(e.sum())
        flops += float(out.flops.sum())
        n += len(target)
    return {"knob": float(knob), "error_cm": round(err / n, 2),
            "gflops": round(flops / n / 1e9, 4), "latency_ms": round(1e3 * seconds / n, 3),
            ERRORS: torch.cat(errors)}


def admn_budget_flops(model_cfg: ModelConfig, lowres: dict[str, Tensor], budget: int) -> float:
    """What ADMN spends at budget L: L backbone blocks + fusion + controller, per sample."""
    mask = make_policy("naive", model_cfg)(lowres, budget)
    return float(CostModel(model_cfg).costs(mask, include_controller=True).mean())


def evaluate_baselines(cfg: TrainConfig, model_cfg: ModelConfig, split, order: Tensor,
                       run_dir: Path, noise_settings: tuple[str, ...],
                       progress: bool = True, tune_split=None) -> dict:
    """{noise: {method: [point, ...]}} for every method with a sweep and a checkpoint. Knobs
    calibrated to ADMN budgets are found on `tune_split` (val; required for `budgets`) and
    then run on `split`."""
    from tqdm import tqdm

    methods = {}
    for method in BASELINE_STAGES:
        ev: BaselineEval = getattr(cfg.eval, method)
        if not ev.sweep and not ev.budgets:
            continue
        path = run_dir / f"{method}.pt"
        if not path.is_file():
            print(f"[eval] {method}: no checkpoint {path}; skipped (train it with "
                  f"`admn train {method} --config ...`)")
            continue
        methods[method] = (load_method(path, method, model_cfg), ev)
    out: dict[str, dict[str, list[dict]]] = {}
    if not methods:
        return out
    for k, kind in enumerate(noise_settings):
        # every point re-reads the batches (same corruption) instead of holding the split
        def batches(k: int = k, kind: str = kind):
            return noisy_batches(cfg, model_cfg, split, order, k, kind)

        out[kind] = {}
        for method, (module, ev) in methods.items():
            points = [run_point(module, method, batches(), knob)
                      for knob in tqdm(ev.sweep, desc=f"eval {kind} {method}",
                                       disable=not progress, leave=False)]
            if ev.budgets:
                if tune_split is None or tune_split.name == "test":
                    raise ValueError(f"eval.{method}.budgets: expected the knob calibrated on "
                                     f"a validation split, got "
                                     f"{getattr(tune_split, 'name', None)!r}")
                tune_order = eval_order(len(tune_split), cfg.eval.tune_samples)
                held = list(noisy_batches(cfg, model_cfg, tune_split, tune_order, k, kind))
                test_batches = list(batches())
                for b in ev.budgets:
                    target = admn_budget_flops(model_cfg, held[0][1], b)
                    try:
                        knob = calibrate(module, method, held, target)
                    except ValueError as exc:
                        raise ValueError(f"eval.{method}.budgets: L={b} "
                                         f"({target / 1e9:.4g} GFLOPs): {exc}") from None
                    points.append(dict(run_point(module, method, test_batches, knob),
                                       budget=b, knob_tuned_on=tune_split.name))
            out[kind][method] = points
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def admn_reference(table: dict, budgets: list[int]) -> list[tuple[int, str, float, float]]:
    """[(budget, row, error_cm, gflops)] of ADMN per budget (per-budget controller, else the
    universal one), sorted by GFLOPs."""
    ref = []
    for b in budgets:
        for name in ADMN_REFERENCE:
            cell = table.get(name, {}).get(str(b))
            if cell:
                ref.append((b, name, cell["error_cm"], cell["gflops"]))
                break
    return sorted(ref, key=lambda r: r[3])


def matched(ref: list[tuple[int, str, float, float]], gflops: float
            ) -> tuple[int, str, float, float] | None:
    """ADMN's point at the nearest budget with GFLOPs <= `gflops` (None: none that cheap)."""
    cheaper = [r for r in ref if r[3] <= gflops]
    return cheaper[-1] if cheaper else None


def attach_intervals(res: dict, admn_errors: dict[str, dict[int, Tensor]], ev) -> None:
    """Each point gets `vs_admn`: its error minus ADMN's at the matched budget on the same frames
    and corruptions (first seed), with a paired block-bootstrap 95 % interval; the per-frame
    errors are dropped from the result."""
    for kind, methods in (res.get("baselines") or {}).items():
        ref = admn_reference(res["tables"].get(kind, {}), res["budgets"])
        for points in methods.values():
            for p in points:
                errors = p.pop(ERRORS)
                r = matched(ref, p["gflops"])
                if r is None or r[0] not in admn_errors.get(kind, {}):
                    continue
                ci = paired_block_bootstrap(errors, admn_errors[kind][r[0]],
                                            ev.bootstrap_block, ev.bootstrap_samples)
                p["vs_admn"] = dict(ci, budget=r[0], row=r[1])


def point_verdict(p: dict, admn_cm: float) -> tuple[str, float, str]:
    """("wins" | "loses" | "level", gap in cm, table cell) of one point against ADMN's error
    `admn_cm` at matched compute: by its paired interval (`vs_admn`) where it has one, else by
    the sign of the gap between the two mean errors."""
    ci = p.get("vs_admn")
    if ci is None:
        gap = p["error_cm"] - admn_cm
        verdict = "wins" if gap < 0 else "loses" if gap > 0 else "level"
        return verdict, gap, f"{verdict} by {abs(gap):.1f} cm"
    gap = ci["diff_cm"]
    verdict = {"better": "wins", "worse": "loses"}.get(paired_verdict(ci), "level")
    return verdict, gap, f"{verdict}: {gap:+.1f} cm [{ci['lo']:+.1f}, {ci['hi']:+.1f}]"


def baseline_lines(res: dict) -> list[str]:
    """Per noise setting: each method's points, each against ADMN at matched compute, and an
    automatic one-line verdict per method."""
    base = res.get("baselines") or {}
    if not base:
        return []
    lines = ["## Competing methods vs ADMN at matched compute", "",
             "Each point is one knob setting (DynMM / M2SN: λ; MMExit: exit threshold in cm) "
             "on the same corrupted test inputs. GFLOPs are each method's measured mean "
             "(gate / navigator / evaluated exits included); latency is the method's eval "
             "forward per sample on this machine (batched). ADMN column: ADMN's error at the "
             "nearest budget whose GFLOPs are <= the point's (per-budget controller, else the "
             "universal one), so ADMN never gets more compute than the method. vs ADMN: the "
             "method's error minus ADMN's on the same frames (first corruption seed) and its "
             "95 % paired block-bootstrap interval [lo, hi]; a win or loss counts only where "
             "the interval excludes 0, else the point is level.", ""]
    for kind, methods in base.items():
        ref = admn_reference(res["tables"].get(kind, {}), res["budgets"])
        lines += [f"### {kind} noise", "",
                  "| method | knob | error (cm) | GFLOPs | latency (ms) | ADMN at <= GFLOPs "
                  "| vs ADMN |", "|---|---|---|---|---|---|---|"]
        verdicts = []
        for method, points in methods.items():
            knob_name = KNOBS[method][0]
            wins, losses, cheaper, best = 0, 0, 0, None
            for p in points:
                r = matched(ref, p["gflops"])
                knob = f"{knob_name}={p['knob']:.4g}" + (f" (L={p['budget']})"
                                                         if "budget" in p else "")
                if r is None:
                    cmp_cell, vs = "— (cheaper than every ADMN budget)", "—"
                    cheaper += 1
                else:
                    b, row, e, g = r
                    cmp_cell = f"{e:.1f} cm / {g:.3f} (L={b}, {row})"
                    verdict, gap, vs = point_verdict(p, e)
                    wins += verdict == "wins"
                    losses += verdict == "loses"
                    if verdict == "wins" and (best is None or gap < best[0]):
                        best = (gap, knob, b)
                lines.append(f"| {method} | {knob} | {p['error_cm']:.1f} | {p['gflops']:.3f} | "
                             f"{p['latency_ms']:.2f} | {cmp_cell} | {vs} |")
            label = METHOD_LABELS[method]
            level = len(points) - wins - losses - cheaper
            text = (f"- {label}: better than ADMN at matched compute in {wins} of "
                    f"{len(points)} points, worse in {losses}, level in {level}")
            if cheaper:
                text += f", {cheaper} cheaper than every ADMN budget (not compared)"
            if best is not None:
                text += (f"; largest win at {best[1]}: {best[0]:+.1f} cm against ADMN at "
                         f"L={best[2]} (paired)")
            verdicts.append(text + ".")
        lines += ["", *verdicts, ""]
    return lines


def plot_error_vs_gflops(res: dict, out_dir: Path) -> Path | None:
    """One panel per noise setting: ADMN, upper bound, naive and random rows of Table 1 and
    every method's sweep, error against GFLOPs."""
    base = res.get("baselines") or {}
    if not base:
        return None
    kinds = list(res["tables"])
    fig, axes = panel_row(len(kinds))
    for ax, kind in zip(axes, kinds, strict=True):
        table = res["tables"][kind]
        for name in ("admn", "admn_universal", "naive", "random"):
            row = table.get(name, {})
            pts = [(row[str(b)]["gflops"], row[str(b)]["error_cm"])  # in budget order
                   for b in res["budgets"] if str(b) in row]
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", markersize=4, label=name)
        ub = next(iter(table.get("upper_bound", {}).values()), None)
        if ub:
            ax.plot([ub["gflops"]], [ub["error_cm"]], "k*", markersize=9, label="upper_bound")
        for method, points in base.get(kind, {}).items():
            pts = sorted(points, key=lambda p: p["gflops"])
            ax.errorbar([p["gflops"] for p in pts], [p["error_cm"] for p in pts],
                        yerr=interval_bars(pts), fmt="--s", markersize=4, capsize=2,
                        label=method)
        ax.set_title(f"{kind} noise (bars: 95 % CI of method - ADMN)")
        ax.set_xlabel("GFLOPs per sample (measured)")
        ax.set_ylabel("mean error (cm)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    return save_figure(fig, out_dir / f"{res['recipe']}_error_vs_gflops.png")


def interval_bars(points: list[dict]) -> list[list[float]]:
    """[below, above] error-bar lengths: each point's paired interval of its error minus
    ADMN's at matched compute, drawn around the point (0 where it has none)."""
    def half(p: dict, side: str) -> float:
        ci = p.get("vs_admn")
        if not ci:
            return 0.0
        return max(0.0, ci["diff_cm"] - ci["lo"] if side == "lo" else ci["hi"] - ci["diff_cm"])
    return [[half(p, "lo") for p in points], [half(p, "hi") for p in points]]
