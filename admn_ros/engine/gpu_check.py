"""One-command GPU check (`scripts/gpu_check.sh OUT_DIR`, `make gpu-check`): what the engine
does on this machine's GPU, written as `OUT_DIR/gpu_check.json` and `OUT_DIR/gpu_check.md`.

Needs only the tracked files, Python, torch (and PyYAML); no network, no ROS. Per model config
(`demo`, `vitb16`) and backend (`eager`, `compile` with CUDA graphs, `tensorrt` when installed):
start-up time (construction + warm-up; TensorRT: cold build and warm-cache load), step latency
at L = min, 1/4, 1/2 and all blocks, the issue-22 ratios; per config the fp16/bf16 output error
vs fp32 (eager), and compile's speed-up over eager at full depth. Items that would overrun the
time budget are skipped and say so.

`--dry-run` (and any machine without CUDA) runs the same path on the CPU with the tiny config
in seconds: CI checks that it writes valid JSON.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.engine.base import one_line
from admn_ros.engine.bench import budgets_to_measure, measure, precision_errors, summarize
from admn_ros.engine.factory import backend_unavailable_reason, make_backend

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"demo": ROOT / "config/model/demo.yaml", "vitb16": ROOT / "config/model/vitb16.yaml"}
DRY_CONFIGS = {"tiny": ROOT / "config/model/tiny.yaml"}
BUDGET_S = 420.0  # the whole check stays under 8 minutes with start-up and writing
# An item is started only when at least this many seconds of the budget are left.
MIN_LEFT_S = {"eager": 20.0, "compile": 120.0, "tensorrt": 150.0}
BACKEND_ORDER = ("eager", "compile", "tensorrt")
WARMUP, REPEATS = 3, 20
GOAL_COMPILE_SPEEDUP = 3.0  # compile >= 3x eager at batch 1, vitb16, full depth
HEAD_INIT_STD = 0.02  # random head (the core zero-initialises it) so errors are measurable


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": str(torch.backends.cudnn.version()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "capability": (".".join(map(str, torch.cuda.get_device_capability()))
                       if torch.cuda.is_available() else None),
    }
    for mod in ("triton", "torch_tensorrt", "tensorrt"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # absent or broken: recorded as such, the check goes on
            out[mod] = None
    return out


def modules(config: Path) -> tuple[ADMN, Controller]:
    """Random-init model and controller (latency does not depend on weight values)."""
    cfg = load_model_config(config)
    torch.manual_seed(0)
    model, controller = ADMN(cfg), Controller(cfg)
    for lin in (model.head.mean, model.head.tril):
        torch.nn.init.normal_(lin.weight, std=HEAD_INIT_STD)
    return model, controller


def bench_one(backend: str, model: ADMN, controller: Controller, device: str,
              options: dict, warmup: int, repeats: int) -> dict:
    """Start-up and latency of one backend (quick set of L)."""
    engine = make_backend(backend, copy.deepcopy(model), copy.deepcopy(controller),
                          device=device, **options)
    lo, hi = engine.budget_range
    budgets = budgets_to_measure(lo, hi, quick=True)
    startup = engine.warmup(1, budgets, repeats=1)
    rows = measure(engine, budgets, 1, warmup, repeats)
    return {"backend": engine.name, "info": engine.describe(), "startup_s": round(startup, 2),
            "rows": rows, **summarize(rows, engine.cfg.total_blocks)}


def run_backend(res: dict, name: str, backend: str, modules_: tuple[ADMN, Controller],
                device: str, dry: bool, deadline: float, cache_dir: Path) -> None:
    """Measure one backend on one config into `res` (or say in `res["skipped"]` why not)."""
    model, controller = modules_
    options: dict = {"compiler": "eager"} if dry and backend == "compile" else {}
    if backend == "tensorrt":
        reason = backend_unavailable_reason("tensorrt", device)
        if reason is not None:
            res["skipped"][backend] = reason
            return
        options = {"cache_dir": cache_dir / name}
    left = deadline - time.perf_counter()
    if left < (0.0 if dry else MIN_LEFT_S[backend]):
        res["skipped"][backend] = f"time budget ({left:.0f} s left)"
        return
    print(f"[{name}] {backend} ...", flush=True)
    try:
        r = bench_one(backend, model, controller, device, options,
                      *((1, 3) if dry else (WARMUP, REPEATS)))
        if backend == "tensorrt":  # second start: engines come from the cache just built
            warm = make_backend(backend, copy.deepcopy(model), copy.deepcopy(controller),
                                device=device, **options)
            r["startup_warm_cache_s"] = round(warm.warmup(1, repeats=1), 2)
        res["backends"][backend] = r
    except Exception as exc:  # one failing backend must not hide the others' results
        res["skipped"][backend] = f"failed: {one_line(exc)}"
        return
    if backend == "eager":
        fp32 = make_backend("eager", copy.deepcopy(model), copy.deepcopy(controller),
                            device=device)
        lower = ["fp16", "bf16"] if torch.device(device).type == "cuda" else ["bf16"]
        res["precision_error_vs_fp32"] = precision_errors(
            fp32, lambda m, c, p: make_backend("eager", m, c, device=device, precision=p), lower)
    eager, compiled = res["backends"].get("eager"), res["backends"].get("compile")
    if backend == "compile" and eager is not None:
        speedup = eager["rows"][-1]["step_ms_p50"] / compiled["rows"][-1]["step_ms_p50"]
        res["compile_speedup_full_depth"] = round(speedup, 3)
        res["goal_compile_speedup_ge_3"] = speedup >= GOAL_COMPILE_SPEEDUP


def markdown_rows(report: dict) -> list[str]:
    rows = []
    for name, res in report["configs"].items():
        for backend, r in res["backends"].items():
            by_l = {row["active_blocks"]: row for row in r["rows"]}
            lo, q, hi = min(by_l), r["quarter_blocks"], max(by_l)
            steps = "/".join(f"{by_l[b]['step_ms_p50']:.2f}" for b in (lo, q, hi))
            warm = r.get("startup_warm_cache_s")
            fallback = r["info"].get("eager_fallback_parts")
            if fallback:
                backend += f" (eager fallback: {len(fallback.split(', '))} parts)"
            rows.append(
                f"| {report['date'][:16]} | {report['versions']['gpu'] or 'CPU (dry run)'} "
                f"| {report['versions']['torch']} | {name} | {backend} | {r['info']['precision']} "
                f"| {lo}/{q}/{hi} | {steps} | {r['ratio_quarter_to_full']:.3f} "
                f"| {r['controller_share_quarter']:.1%} | {r['startup_s']:.1f}"
                f"{'' if warm is None else f' ({warm:.1f} warm cache)'} "
                f"| {res.get('compile_speedup_full_depth', '-')} |")
    return rows


MD_HEADER = (
    "| date | GPU | torch | config | backend | precision | L min/¼/full "
    "| step p50 ms min/¼/full | ratio ¼/full | controller share ¼ | start-up s "
    "| compile / eager at full depth |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path, help="directory for gpu_check.json / gpu_check.md")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny config, dynamo-only compile: checks the path in seconds")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.dry_run:
        print("note: no CUDA device here; dry run on the CPU with the tiny config")
    device = "cpu" if dry else "cuda"
    if dry:
        torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dry_run": dry, "device": device,
              "machine": platform.node(), "versions": versions(), "configs": {}}
    deadline = t0 + BUDGET_S
    configs = DRY_CONFIGS if dry else CONFIGS
    models = {name: modules(config) for name, config in configs.items()}
    for name, config in configs.items():
        report["configs"][name] = {"config": str(config.relative_to(ROOT)), "backends": {},
                                   "skipped": {}}
    # cheapest first across configs, written after each item: a kill leaves what was measured
    with tempfile.TemporaryDirectory() as tmp:  # TensorRT engine cache: cold, then warm
        for backend in BACKEND_ORDER:
            for name in configs:
                run_backend(report["configs"][name], name, backend, models[name], device, dry,
                            deadline, Path(tmp))
                report["wall_s"] = round(time.perf_counter() - t0, 1)
                md = write_report(report, args.out_dir)
    print(md + f"wrote {args.out_dir / 'gpu_check.json'} and gpu_check.md "
          f"in {report['wall_s']} s")
    return 0


def write_report(report: dict, out_dir: Path) -> str:
    """`gpu_check.json` and `gpu_check.md` (returned) in `out_dir`."""
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    md = "\n".join([MD_HEADER, *markdown_rows(report)]) + "\n"
    (out_dir / "gpu_check.md").write_text(md)
    return md


if __name__ == "__main__":
    sys.exit(main())
