"""`admn eval --config FILE [--data DIR] [--out DIR] [--weights RUN_DIR] [--quick]`: Table 1.

Default: every frame of the test split x the recipe's corruption seeds, paired block-bootstrap
intervals; `--quick`: a small evenly spaced subset for development (the report says so).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="recipe YAML (config/train/*.yaml)")
    parser.add_argument("--data", default=None, help="recording to evaluate (default: recipe's)")
    parser.add_argument("--out", default=None,
                        help="report folder (default: the recipe's results_dir, docs/results)")
    parser.add_argument("--weights", default=None,
                        help="run folder with admn.pt + controller*.pt (default: the recipe's "
                             "out_dir if trained, else the shipped models/)")
    parser.add_argument("--quick", action="store_true",
                        help="evaluate eval.quick_samples frames only (development; the "
                             "report says it is a subset)")


def run(args: argparse.Namespace) -> int:
    from admn_ros.train.config import load_train_config
    from admn_ros.train.evaluate import evaluate, summary, write_report

    try:
        cfg = load_train_config(args.config)
        res = evaluate(cfg, args.data, args.weights, quick=args.quick)
        paths = write_report(res, args.out or cfg.path(cfg.results_dir))
        print(summary(res))
    except (ValueError, FileNotFoundError) as exc:
        print(f"admn eval: error: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(f"[eval] wrote {p}")
    return 0
