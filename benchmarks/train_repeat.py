"""Run one training stage of a recipe twice with the same seed and threads; compare the
validation errors (docs/ARCHITECTURE.md, "Determinism to expect").

    python benchmarks/train_repeat.py --config config/train/demo.yaml --epochs 2 --steps 60

Each run goes to `<out>/run_a` and `<out>/run_b` (the recipe's data, model and seed; only the
stage's epochs and steps per epoch are shortened); prints each run's final validation metrics
and their relative difference, and writes `<out>/repeat.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from admn_ros.train.config import load_train_config
from admn_ros.train.main import run_stage
from admn_ros.train.provenance import cpu_name
from admn_ros.train.state import load_training_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--stage", default="backbone", choices=("mae", "backbone"),
                        help="stage to repeat (one job, trained from scratch)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the stage")
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch")
    parser.add_argument("--out", default="runs/repeat", help="output folder")
    args = parser.parse_args()

    finals = []
    for name in ("run_a", "run_b"):
        cfg = load_train_config(args.config)
        st = dataclasses.replace(cfg.stage(args.stage), epochs=args.epochs,
                                 max_steps_per_epoch=args.steps)
        cfg = dataclasses.replace(cfg, out_dir=str(Path(args.out) / name),
                                  **{args.stage.replace("-", "_"): st})
        outputs = run_stage(cfg, args.stage)
        if len(outputs) != 1:
            raise SystemExit(f"train_repeat: expected one output of stage {args.stage}, got "
                             f"{[str(p) for p in outputs]} (epochs 0 in the recipe?)")
        state = load_training_state(outputs[0].parent / outputs[0].stem / "checkpoint.pt")
        finals.append({k: v for k, v in state["history"][-1].items() if k.startswith("val_")})
    a, b = finals
    diff = {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-9) for k in a if k in b}
    res = {"config": args.config, "stage": args.stage, "epochs": args.epochs,
           "steps_per_epoch": args.steps, "threads": torch.get_num_threads(),
           "cpu": cpu_name(), "torch": torch.__version__,
           "run_a": a, "run_b": b, "relative_difference": diff}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "repeat.json").write_text(json.dumps(res, indent=1) + "\n")
    for k, d in diff.items():
        print(f"{k}: {a[k]:.3f} vs {b[k]:.3f} ({100 * d:.2f} %)")


if __name__ == "__main__":
    main()
