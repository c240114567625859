"""Latency of the backbone set (M modalities x S nodes, batch 1) at every budget L.

Not a test. Prints a table and writes docs/results/backbone_depth.md.

    PYTHONPATH=. python benchmarks/bench_backbone_depth.py [--config config/model/demo.yaml]
        [--repeats 30]   (PYTHONPATH not needed after `. scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch

from admn_ros.core.config import load_model_config
from admn_ros.core.cost import CostModel
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.policies import make_policy

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "config/model/demo.yaml"))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs/results/backbone_depth.md"))
    args = ap.parse_args()

    cfg = load_model_config(args.config)
    torch.manual_seed(0)
    model = ADMN(cfg).eval()
    cost = CostModel(cfg)
    s = cfg.backbone.img_size
    inputs = {m: torch.rand(1, cfg.num_nodes, cfg.in_chans[m], s, s) for m in cfg.modalities}
    lowres = downsample(inputs, cfg.controller.img_size)
    naive = make_policy("naive", cfg)  # earliest blocks first, split evenly

    rows = []
    with torch.inference_mode():
        for budget in range(cfg.num_modalities, cfg.total_blocks + 1):
            active = naive(lowres, budget)[0]  # [M, D]
            bb = median_ms(lambda a=active: model.encode_all(inputs, a), args.warmup, args.repeats)
            full = median_ms(lambda a=active: model(inputs, a), args.warmup, args.repeats)
            rows.append((budget, bb, full, cost.cost(active) / 1e9))
            print(f"L={budget:3d}  backbones {bb:7.2f} ms  full model {full:7.2f} ms  "
                  f"{rows[-1][3]:.3f} GFLOPs", flush=True)

    by_l = {r[0]: r for r in rows}
    total = cfg.total_blocks
    quarter = max(cfg.num_modalities, round(total / 4))
    ratio = by_l[quarter][1] / by_l[total][1]
    ratio_full = by_l[quarter][2] / by_l[total][2]
    b = cfg.backbone
    lines = [
        "# Backbone latency vs active blocks",
        "",
        f"- config: `{Path(args.config).resolve().relative_to(ROOT)}` "
        f"({cfg.num_modalities} modalities x {cfg.num_nodes} nodes, img {b.img_size}, "
        f"patch {b.patch_size}, width {b.embed_dim}, heads {b.num_heads}, "
        f"depth {b.depth} -> {total} blocks)",
        f"- machine: {platform.platform()}, {cpu_name()}, "
        f"{torch.get_num_threads()} torch threads",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- torch: {torch.__version__}; eager, `torch.inference_mode`, batch 1, "
        f"{args.warmup} warm-up + median of {args.repeats}",
        "- masks: `naive` policy (L split evenly, earliest blocks first)",
        "- backbones = `ADMN.encode_all` (all M x S views, real skipping); "
        "full model = + input checks, fusion and head",
        "",
        f"**latency(L = {quarter}) / latency(L = {total}) = {ratio:.2f}** (backbones; "
        f"goal <= 0.33), {ratio_full:.2f} for the full model.",
        "",
        "| L | backbones ms (p50) | full model ms (p50) | GFLOPs (analytic) |",
        "|---:|---:|---:|---:|",
        *(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.3f} |" for r in rows),
        "",
        "Note: the machine is shared with other jobs; medians are robust but not isolated.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"ratio L={quarter}/L={total}: {ratio:.2f} (backbones), {ratio_full:.2f} (full)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
