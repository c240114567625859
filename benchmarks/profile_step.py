"""torch.profiler view of one engine step: the operators that cost the most, at 1/4 depth and
at full depth. Not a test; the top rows before and after a change go in docs/BENCHMARKS.md.

    python benchmarks/profile_step.py [--config config/model/demo.yaml] [--backend eager]
        [--steps 20] [--top 12]          (after `. scripts/env.sh`)

Random-init weights (operator costs do not depend on weight values), batch 1, one torch
thread per Python thread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.engine import make_backend

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config/model/demo.yaml")
    ap.add_argument("--backend", default="eager")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_model_config(args.config)
    torch.manual_seed(0)
    engine = make_backend(args.backend, ADMN(cfg), Controller(cfg), device="cpu", num_threads=1)
    inputs = engine.example_inputs(1)
    lo, hi = engine.budget_range
    for budget in (max(lo, hi // 4), hi):
        for _ in range(5):
            engine.step(inputs, budget)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                engine.step(inputs, budget)
        print(f"\n=== L = {budget} of {hi}: {args.steps} steps, self CPU time per operator ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
