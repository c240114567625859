"""Latency vs active blocks: measurement and summary, independent of the command line."""

from __future__ import annotations

import copy
import os
import time

import torch

from admn_ros.core.cost import CostModel
from admn_ros.engine.base import Engine
from admn_ros.engine.timing import percentile

PARTS = ("step_ms", "controller_ms", "controller_total_ms", "backbone_ms", "fusion_ms")
# Sensor rate of the GDTM nodes; the fusion node should keep up with 4x it at 1/4 of the
# blocks and with 1x it at full depth.
SENSOR_HZ = 15.0
QUARTER_RATE_FACTOR = 4.0
# Goals of the engine (issue 22): step(L/4) / step(full), the controller's share of the step
# at L/4 (its wait on the critical path), full-depth GFLOP/s over the single-thread GEMM peak.
GOAL_RATIO_QUARTER = 0.28
GOAL_CONTROLLER_SHARE = 0.03
GOAL_PEAK_SHARE = 0.60
# Square fp32 matmuls timed for the GEMM peak (the best GFLOP/s counts), and repeats each.
GEMM_SIZES = (256, 512, 1024)
GEMM_REPEATS = 5


def gemm_gflops(n: int, repeats: int = GEMM_REPEATS) -> float:
    """Best-of-`repeats` fp32 GFLOP/s of an n x n x n matmul on the CPU (current threads)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def gemm_peak(threads: list[int], sizes: tuple[int, ...] = GEMM_SIZES) -> dict[str, dict]:
    """fp32 GEMM peak of this machine per thread count: `{str(threads): {"gflops": best over
    sizes, "by_size": {n: gflops}}}`; torch's thread count is restored afterwards."""
    before = torch.get_num_threads()
    out = {}
    try:
        for t in threads:
            torch.set_num_threads(t)
            by_size = {str(n): round(gemm_gflops(n), 2) for n in sizes}
            out[str(t)] = {"gflops": max(by_size.values()), "by_size": by_size}
    finally:
        torch.set_num_threads(before)
    return out


def peak_threads() -> list[int]:
    """1 and all the cores this process may use (one entry on a single-core machine)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return sorted({1, n or 1})


def full_depth_throughput(engine: Engine, rows: list[dict], peak: dict[str, dict],
                          batch: int = 1) -> dict:
    """GFLOP/s of a full-depth step (backbones, controller and fusion, analytic FLOPs of
    `core.cost`) and its share of the single- and all-thread GEMM peaks. Like the peak (the
    best of a few matmuls), the share uses the fastest full-depth step, which background load
    on a shared machine inflates least; `full_depth_gflops_p50` is the median step's."""
    full = max(rows, key=lambda r: r["active_blocks"])
    flops = CostModel(engine.cfg).full_cost(include_controller=True) * batch
    best = flops / (full["step_ms_min"] * 1e-3) / 1e9
    out = {"full_depth_gflop": round(flops / 1e9, 4), "full_depth_gflops": round(best, 3),
           "full_depth_gflops_p50": round(flops / (full["step_ms_p50"] * 1e-3) / 1e9, 3)}
    for key, res in peak.items():
        label = "single_thread" if key == "1" else "all_threads"
        out[f"share_of_{label}_peak"] = round(best / res["gflops"], 4)
    return out


def budgets_to_measure(lo: int, hi: int, quick: bool) -> list[int]:
    """Every L from lo to hi; quick: lo, 1/4 of hi, 1/2 of hi and hi."""
    if not quick:
        return list(range(lo, hi + 1))
    return sorted({lo, max(lo, hi // 4), max(lo, hi // 2), hi})


def measure(engine: Engine, budgets: list[int], batch: int = 1, warmup: int = 5,
            repeats: int = 30, seed: int = 0) -> list[dict]:
    """p50/p95 of each part of `engine.step` per budget. Budgets are interleaved in every
    repeat so background load on a shared machine spreads evenly over all L."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup/repeats: expected >= 0 / >= 1, got {warmup} / {repeats}")
    inputs = engine.example_inputs(batch, seed)
    for _ in range(warmup):
        for budget in budgets:
            engine.step(inputs, budget)
    samples = {b: {p: [] for p in PARTS} for b in budgets}
    blocks = {}
    for _ in range(repeats):
        for budget in budgets:
            res = engine.step(inputs, budget)
            for p in PARTS:
                samples[budget][p].append(res.timings[p])
            blocks[budget] = float(res.mask.sum((1, 2)).float().mean())
    rows = []
    for budget in budgets:
        s = samples[budget]
        row = {"active_blocks": budget, "mean_active_blocks": blocks[budget]}
        for p in PARTS:
            row[f"{p}_p50"] = round(percentile(s[p], 50), 4)
            row[f"{p}_p95"] = round(percentile(s[p], 95), 4)
        row["step_ms_mean"] = round(sum(s["step_ms"]) / len(s["step_ms"]), 4)
        row["step_ms_min"] = round(min(s["step_ms"]), 4)
        rows.append(row)
    full = rows[-1]["step_ms_p50"]
    for row in rows:
        row["ratio_to_full"] = round(row["step_ms_p50"] / full, 4)
        row["controller_share"] = round(row["controller_ms_p50"] / row["step_ms_p50"], 4)
        row["hz_p50"] = round(1e3 / row["step_ms_p50"], 2)
    return rows


def summarize(rows: list[dict], total_blocks: int, peak_share: float | None = None) -> dict:
    """Fixed overhead, the 1/4-depth ratio and controller share, and the goals (the share of
    the single-thread GEMM peak at full depth, when measured, too)."""
    by_l = {r["active_blocks"]: r for r in rows}
    lo, hi = min(by_l), max(by_l)
    quarter = min(by_l, key=lambda b: (abs(b - total_blocks / 4), b))
    q, full = by_l[quarter], by_l[hi]
    quarter_budget_ms = 1e3 / (SENSOR_HZ * QUARTER_RATE_FACTOR)
    full_budget_ms = 1e3 / SENSOR_HZ
    return {
        "fixed_overhead_ms": by_l[lo]["step_ms_p50"],
        "fixed_overhead_blocks": lo,
        "quarter_blocks": quarter,
        "ratio_quarter_to_full": q["ratio_to_full"],
        "controller_share_quarter": q["controller_share"],
        "goals": {
            f"ratio_quarter_le_{GOAL_RATIO_QUARTER}": q["ratio_to_full"] <= GOAL_RATIO_QUARTER,
            f"controller_share_quarter_le_{GOAL_CONTROLLER_SHARE}":
                q["controller_share"] <= GOAL_CONTROLLER_SHARE,
            **({} if peak_share is None else
               {f"full_depth_ge_{GOAL_PEAK_SHARE}_of_single_thread_peak":
                peak_share >= GOAL_PEAK_SHARE}),
            f"keeps_up_{QUARTER_RATE_FACTOR * SENSOR_HZ:g}hz_at_quarter_p95":
                q["step_ms_p95"] <= quarter_budget_ms,
            f"keeps_up_{SENSOR_HZ:g}hz_at_full_p95": full["step_ms_p95"] <= full_budget_ms,
        },
    }


@torch.inference_mode()
def precision_errors(engine_fp32: Engine, make_engine, precisions: list[str], batch: int = 1,
                     seed: int = 1) -> dict[str, dict[str, float]]:
    """Output error of lower precisions vs fp32 at full depth. `make_engine(model, controller,
    precision)` builds an engine of the same backend from copies of the fp32 modules."""
    inputs = engine_fp32.example_inputs(batch, seed)
    full = torch.ones(engine_fp32.cfg.num_modalities, engine_fp32.depth, dtype=torch.bool)
    ref = engine_fp32.run(inputs, full)
    out = {}
    for precision in precisions:
        eng = make_engine(copy.deepcopy(engine_fp32.model),
                          None if engine_fp32.controller is None
                          else copy.deepcopy(engine_fp32.controller), precision)
        pred = eng.run(inputs, full)
        out[precision] = {
            "mean_abs_err_cm": float((pred.mean - ref.mean).abs().max()),
            "scale_tril_rel_err": float((pred.scale_tril - ref.scale_tril).abs().max()
                                         / ref.scale_tril.abs().max()),
        }
    return out
