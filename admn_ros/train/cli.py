"""`admn train STAGE --config FILE [--resume]` (also under `torchrun --nproc_per_node N`)."""

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


def run(args: argparse.Namespace) -> int:
    from admn_ros.train import distributed as D
    from admn_ros.train.config import load_train_config
    from admn_ros.train.engine import NonFiniteLossError
    from admn_ros.train.main import run_stage

    try:
        cfg = load_train_config(args.config)
        run_stage(cfg, args.stage, resume=args.resume, jobs=args.only)
    except (ValueError, NonFiniteLossError) as exc:
        print(f"admn train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        D.cleanup()
    return 0
