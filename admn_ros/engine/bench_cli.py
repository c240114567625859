"""`admn bench`: latency vs active blocks for every backend present, JSON + a row in the docs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import time
from pathlib import Path

import torch

from admn_ros.core.config import config_diff, load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.engine.bench import (
    budgets_to_measure,
    full_depth_throughput,
    gemm_peak,
    measure,
    peak_threads,
    precision_errors,
    summarize,
)
from admn_ros.engine.factory import (
    BACKENDS,
    available_backends,
    backend_unavailable_reason,
    default_device,
    make_backend,
    resolve_backend,
)
from admn_ros.paths import share_dir

ROOT = share_dir()
DEFAULT_CONFIG = ROOT / "config" / "model" / "demo.yaml"
MODELS_DIR = ROOT / "models"
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
ROWS_BEGIN, ROWS_END = "<!-- bench-rows:begin -->", "<!-- bench-rows:end -->"
DOC_HEADER = (
    "| date | machine | torch | backend | device | precision | threads | L min/¼/full "
    "| step p50 ms min/¼/full | ratio ¼/full | controller share ¼ | fixed overhead ms "
    "| load 1 min | JSON | full depth / 1-thread GEMM peak |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
# std of the random head used with random-init weights (the core zero-initialises it, which
# would make every output equal and the fp16/bf16 error check meaningless)
HEAD_INIT_STD = 0.02
QUICK = {"warmup": 2, "repeats": 5}
FULL = {"warmup": 10, "repeats": 50}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="all", choices=["all", *BACKENDS],
                        help="backend to measure (default: every backend present here)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: benchmarks/results/bench_<host>_<time>.json)")
    parser.add_argument("--quick", action="store_true",
                        help="few repeats and L values (min, 1/4, 1/2, all); no docs row unless "
                             "--doc is given")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="model config YAML")
    parser.add_argument("--weights", type=Path, default=None,
                        help="ADMN checkpoint (default: a matching one in models/, else random "
                             "init; latency does not depend on weight values)")
    parser.add_argument("--controller", type=Path, default=None,
                        help="controller checkpoint (default: a matching one in models/)")
    parser.add_argument("--device", default=None, help="cpu | cuda[:N] (default: cuda if present)")
    parser.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"],
                        help="default: fp16 for tensorrt, fp32 otherwise")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads on CPU (default 1: at batch 1 the ops are too small "
                             "to gain from more; 0 leaves torch's default)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--doc", type=Path, default=None,
                        help=f"markdown file to append a row to (default {DOC.relative_to(ROOT)})")
    parser.add_argument("--no-doc", action="store_true", help="do not append a docs row")
    parser.add_argument("--no-overlap", action="store_true",
                        help="controller and mask-independent work one after the other (default "
                             "on CPU: the controller on a second thread meanwhile)")


# ------------------------------------------------------------------------------- model loading
def _find_checkpoint(kind: str, cfg) -> Path | None:
    from admn_ros.core.checkpoint import read_checkpoint

    for path in sorted(MODELS_DIR.glob("*.pt")) if MODELS_DIR.is_dir() else []:
        try:
            data = read_checkpoint(path)
        except (ValueError, OSError, RuntimeError):
            continue
        if data["kind"] == kind and not config_diff(load_model_config(data["model_config"]), cfg):
            return path
    return None


def load_modules(args) -> tuple[ADMN, Controller, str]:
    """Model and controller from checkpoints when there are any, else random init."""
    from admn_ros.core.checkpoint import load_checkpoint

    cfg = load_model_config(args.config)
    torch.manual_seed(0)
    model, controller = ADMN(cfg), Controller(cfg)
    notes = []
    for kind, module, path in (("admn", model, args.weights),
                               ("controller", controller, args.controller)):
        path = path or _find_checkpoint(kind, cfg)
        if path is None:
            notes.append(f"{kind}: random init")
            if kind == "admn":  # the untrained head is constant; make outputs input-dependent
                for lin in (model.head.mean, model.head.tril):  # for the precision check
                    torch.nn.init.normal_(lin.weight, std=HEAD_INIT_STD)
            continue
        load_checkpoint(path, into=module, kind=kind)
        notes.append(f"{kind}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    weights = "; ".join(notes)
    if "random init" in weights:
        print(f"note: {weights} (no matching checkpoint in models/; latency does not depend "
              "on weight values)")
    return model, controller, weights


# ------------------------------------------------------------------------------- one backend
def bench_backend(name: str, args, model: ADMN, controller: Controller, device: str,
                  threads: int | None, peak: dict[str, dict] | None) -> dict:
    plan = QUICK if args.quick else FULL
    warmup = plan["warmup"] if args.warmup is None else args.warmup
    repeats = plan["repeats"] if args.repeats is None else args.repeats
    t0 = time.perf_counter()
    engine = make_backend(name, model, controller, device=device, precision=args.precision,
                          num_threads=threads, overlap=not args.no_overlap)
    lo, hi = engine.budget_range
    budgets = budgets_to_measure(lo, hi, args.quick)
    startup_s = engine.warmup(args.batch, budgets, repeats=1)
    print(f"[{name}] start-up + warm-up {startup_s:.1f} s; measuring L = {budgets[0]}.."
          f"{budgets[-1]} ({len(budgets)} values) x {repeats} repeats", flush=True)
    rows = measure(engine, budgets, args.batch, warmup, repeats)
    throughput = {} if not peak else full_depth_throughput(engine, rows, peak, args.batch)
    result = {
        "backend": engine.name,
        "device": str(engine.device),
        "precision": engine.precision,
        "backend_info": engine.describe(),
        "total_blocks": engine.cfg.total_blocks,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "overlap": engine.overlap,
        "warmup": warmup,
        "repeats": repeats,
        "startup_s": round(startup_s, 3),
        "wall_s": round(time.perf_counter() - t0, 2),
        "rows": rows,
        **throughput,
        **summarize(rows, engine.cfg.total_blocks,
                    throughput.get("share_of_single_thread_peak")),
    }
    lower = ["fp16", "bf16"] if engine.device.type == "cuda" else ["bf16"]
    if engine.name != "tensorrt" and engine.precision == "fp32":
        result["precision_error_vs_fp32"] = precision_errors(
            engine, lambda m, c, p: make_backend(name, m, c, device=device, precision=p),
            lower, args.batch)
    return result


# ------------------------------------------------------------------------------- outputs
def doc_row(res: dict, meta: dict, json_path: Path) -> str:
    by_l = {r["active_blocks"]: r for r in res["rows"]}
    lo, q, hi = min(by_l), res["quarter_blocks"], max(by_l)
    step = "/".join(f"{by_l[b]['step_ms_p50']:.2f}" for b in (lo, q, hi))
    shown = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path.name
    backend = res["backend"] + ("" if res.get("overlap", True) else " (no overlap)")
    return (f"| {meta['date'][:16]} | {meta['machine']} | {meta['torch']} | {backend} "
            f"| {res['device']} | {res['precision']} | {res['threads']} | {lo}/{q}/{hi} "
            f"| {step} | {res['ratio_quarter_to_full']:.3f} "
            f"| {res['controller_share_quarter']:.1%} | {res['fixed_overhead_ms']:.2f} "
            f"| {meta['load_average'][0] if meta['load_average'] else '?'} | {shown} "
            f"| {_share(res)} |")


def _share(res: dict) -> str:
    share = res.get("share_of_single_thread_peak")
    return "-" if share is None else f"{share:.0%} ({res['full_depth_gflops']:.1f} GFLOP/s)"


def append_doc_rows(doc: Path, rows: list[str]) -> None:
    """Insert rows before the end marker of the results table (created if missing)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    if ROWS_END not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{ROWS_BEGIN}\n{DOC_HEADER}\n{ROWS_END}\n"
    head, tail = text.split(ROWS_END, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(head + "".join(r + "\n" for r in rows) + ROWS_END + tail, encoding="utf-8")


def machine_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{socket.gethostname()} ({cpu}, {os.cpu_count()} cores{gpu})"


def run(args: argparse.Namespace) -> int:
    device = args.device or default_device()
    if args.batch < 1:
        raise SystemExit(f"--batch: expected >= 1, got {args.batch}")
    if args.backend == "all":
        names = available_backends(device)
        skipped = {b: backend_unavailable_reason(b, device) for b in BACKENDS[:-1]
                   if b not in names}
    else:
        names = [resolve_backend(args.backend, device)]
        skipped = {}
        reason = backend_unavailable_reason(names[0], device)
        if reason:
            print(f"error: backend {names[0]!r} unavailable: {reason}")
            return 2
    for b, why in skipped.items():
        print(f"[{b}] skipped: {why}")
    threads = args.threads
    if threads is None and torch.device(device).type == "cpu":
        threads = 1
    threads = None if threads == 0 else threads
    model, controller, weights = load_modules(args)
    now = dt.datetime.now(dt.timezone.utc).astimezone()
    meta = {
        "machine": machine_name(),
        "date": now.isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": str(args.config),
        "weights": weights,
        "quick": args.quick,
        "load_average": list(_loadavg()),
    }
    peak = None
    if torch.device(device).type == "cpu":  # the machine's fp32 GEMM peak, in this same run
        peak = meta["gemm_peak_gflops"] = gemm_peak(peak_threads())
        print("fp32 GEMM peak (GFLOP/s): " + ", ".join(
            f"{t} thread(s) {r['gflops']:.1f}" for t, r in peak.items()), flush=True)
    results = {}
    for name in names:
        results[name] = bench_backend(name, args, model, controller, device, threads, peak)
        _print_table(results[name])
    primary = results[names[0]]
    out = {**meta, **{k: v for k, v in primary.items()}, "skipped": skipped,
           "backends": results}
    path = args.out or RESULTS_DIR / f"bench_{socket.gethostname()}_{now:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    doc = args.doc or (None if args.quick else DOC)
    if doc is not None and not args.no_doc:
        append_doc_rows(doc, [doc_row(r, meta, path) for r in results.values()])
        print(f"appended {len(results)} row(s) to {doc}")
    return 0


def _loadavg() -> tuple[float, ...]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


def _print_table(res: dict) -> None:
    print(f"[{res['backend']}] {res['device']} {res['precision']} threads={res['threads']}")
    print("   L  step p50  step p95  ctrl p50  backb p50  fusion p50  ratio  ctrl share")
    for r in res["rows"]:
        print(f"{r['active_blocks']:4d} {r['step_ms_p50']:9.2f} {r['step_ms_p95']:9.2f} "
              f"{r['controller_ms_p50']:9.2f} {r['backbone_ms_p50']:10.2f} "
              f"{r['fusion_ms_p50']:11.2f} {r['ratio_to_full']:6.3f} {r['controller_share']:10.1%}")
    print(f"fixed overhead (L={res['fixed_overhead_blocks']}): {res['fixed_overhead_ms']:.2f} ms; "
          f"L={res['quarter_blocks']}: ratio {res['ratio_quarter_to_full']:.3f}, controller "
          f"share {res['controller_share_quarter']:.1%}; goals {res['goals']}")
    if "full_depth_gflops" in res:
        print(f"full depth: {res['full_depth_gflops']:.1f} GFLOP/s = {_share(res)} of the "
              "single-thread fp32 GEMM peak")
