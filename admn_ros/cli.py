"""The `admn` command: one entry point, one module per subcommand.

Each subcommand lives next to the code it drives and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when
their subcommand runs, so `admn doctor` works even when torch or ROS is broken.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("admn_ros.doctor", "check python, torch, rclpy, rmw, messages, CUDA/TensorRT"),
    "generate": ("admn_ros.data.generate_cli", "write a synthetic GDTM-layout recording"),
    "bag": ("admn_ros.data.bag_cli", "convert GDTM-layout recordings to/from rosbag2 MCAP"),
    "train": ("admn_ros.train.cli", "run a training stage from a recipe"),
    "eval": ("admn_ros.train.eval_cli", "Table-1-style evaluation report"),
    "run": ("admn_ros.nodes.run_cli", "run the ROS graph on a bag and summarise"),
    "bench": ("admn_ros.engine.bench_cli", "latency vs active layers benchmark"),
    "soak": ("admn_ros.nodes.soak", "the graph on a looping recording under fuzzing; memory, "
                                    "drops, latency over time"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog="admn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
