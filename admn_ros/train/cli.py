"""`admn train STAGE --config FILE [--resume] [--time-budget MIN]` (also under `torchrun`).

A stage trains exactly the recipe's steps on any machine; `--time-budget` caps each job's wall
clock for quick experiments, and a job it stops records "stopped at step N of M".
"""

from __future__ import annotations

import argparse
import sys

from admn_ros.train.config import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="training stage")
    parser.add_argument("--config", required=True, help="recipe YAML (config/train/*.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue every job of the stage from its last checkpoint")
    parser.add_argument("--only", nargs="*", metavar="JOB",
                        help="run only these jobs (e.g. controller_L6 controller_universal)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                        help="stop each job after MIN minutes of wall clock (quick experiments; "
                             "the outputs then record that they stopped early)")


def run(args: argparse.Namespace) -> int:
    from admn_ros.train import distributed as D
    from admn_ros.train.config import load_train_config
    from admn_ros.train.engine import NonFiniteLossError
    from admn_ros.train.main import run_stage

    try:
        cfg = load_train_config(args.config)
        run_stage(cfg, args.stage, resume=args.resume, jobs=args.only,
                  time_budget_min=args.time_budget)
    except (ValueError, NonFiniteLossError) as exc:
        print(f"admn train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        D.cleanup()
    return 0
