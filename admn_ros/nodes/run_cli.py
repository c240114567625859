"""`admn run`: the ROS graph of `describe_graph` on a bag, here, without launch_ros.

All nodes run in this process on one MultiThreadedExecutor (one thread per node at most at a
time), talking over the real RMW; each node gets exactly the parameter files, overrides and
remappings of its graph entry, as `ros2 launch` would pass them. A recorder writes the outputs
to DIR/output.mcap; when the bag has ended and the graph has drained, summary.json and the
plots are written and the command returns.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from admn_ros.nodes.graph import GraphOptions, NodeSpec, describe_graph

DRAIN_S = 3.0  # wall seconds without new output after the bag ended -> done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="rosbag2 to replay (.mcap, .db3 or dir)")
    parser.add_argument("--out", default="runs/latest", help="output directory")
    parser.add_argument("--budget-profile", default="",
                        help="simulated power profile (config/power/*.yaml)")
    parser.add_argument("--budget", default="simulated",
                        help="budget source (auto | ina3221 | jtop | nvml | rapl | simulated) "
                             "or a number of layers (manual)")
    parser.add_argument("--inject", default="", help="corruption schedule (config/inject/*.yaml)")
    parser.add_argument("--backend", default="", help="eager | compile | tensorrt | auto")
    parser.add_argument("--weights", default="", help="ADMN checkpoint (default: models/)")
    parser.add_argument("--controller-weights", nargs="*", default=None,
                        help="controller checkpoint(s) (default: models/)")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="wall seconds before giving up")
    parser.add_argument("--no-plots", action="store_true", help="skip the two PNG plots")


def cli_args(spec: NodeSpec, tmp: Path) -> list[str]:
    """--ros-args for one node: its params files (dicts written to YAML, as launch_ros does)
    and remappings."""
    args = ["--ros-args"]
    for i, p in enumerate(spec.parameters):
        if isinstance(p, dict):
            f = tmp / f"{spec.name}_{i}.yaml"
            f.write_text(yaml.safe_dump({spec.name: {"ros__parameters": p}}))
            p = f
        args += ["--params-file", str(p)]
    for src, dst in spec.remappings:
        args += ["-r", f"{src}:={dst}"]
    return args


def options(args: argparse.Namespace) -> GraphOptions:
    return GraphOptions(bag=str(Path(args.bag).resolve()), weights=args.weights,
                        controller_weights=args.controller_weights,
                        budget=str(args.budget), budget_profile=args.budget_profile,
                        backend=args.backend, rate=args.rate, inject=args.inject)


def start_nodes(specs: list[NodeSpec], tmp: Path) -> dict:
    nodes = {}
    for spec in specs:
        cls = importlib.import_module(spec.module).NODE
        nodes[spec.executable] = cls(cli_args=cli_args(spec, tmp))
    return nodes


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from admn_ros.nodes.models import WeightsError
    from admn_ros.nodes.recorder import Recorder

    if not Path(args.bag).exists():
        print(f"admn run: bag not found: {args.bag} (make one with `admn generate DIR` and "
              f"`admn bag from-gdtm DIR OUT.mcap`)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = describe_graph(options(args))
    rclpy.init()
    nodes: dict = {}
    executor = MultiThreadedExecutor(num_threads=len(specs) + 1)
    try:
        with tempfile.TemporaryDirectory(prefix="admn_run_") as tmp:
            try:
                recorder = Recorder(out / "output.mcap", parameter_overrides=[
                    Parameter("use_sim_time", Parameter.Type.BOOL, True)])
                nodes = start_nodes(specs, Path(tmp))
            except (WeightsError, FileNotFoundError, ValueError) as exc:
                print(f"admn run: {exc}", file=sys.stderr)
                return 2
            for node in [recorder, *nodes.values()]:
                executor.add_node(node)
            player = nodes["bag_player"]
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            deadline = time.monotonic() + args.timeout
            last_count, last_change = -1, time.monotonic()
            while rclpy.ok() and time.monotonic() < deadline:
                time.sleep(0.1)
                count = recorder.count()
                if count != last_count:
                    last_count, last_change = count, time.monotonic()
                if player.done and time.monotonic() - last_change > DRAIN_S:
                    break
            timed_out = time.monotonic() >= deadline
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            rec = recorder.finish(nodes, specs)
    finally:
        executor.shutdown(timeout_sec=1.0)
        for node in nodes.values():
            node.destroy_node()
        rclpy.try_shutdown()
    from admn_ros.nodes.summary import plot_allocation, plot_trajectory, summarise, write_summary

    rec.extra.update(rate=args.rate, timed_out=timed_out, bag=str(args.bag))
    summary = summarise(rec)
    path = write_summary(out, summary)
    plots = []
    if not args.no_plots:
        plots = [plot_trajectory(rec, out / "trajectory.png", sensors=rec.extra.get("sensors")),
                 plot_allocation(rec, out / "allocation.png")]
    print(yaml.safe_dump(summary, sort_keys=False, default_flow_style=None).rstrip())
    print(f"summary: {path}")
    for p in plots:
        print(f"plot: {p}")
    print(f"record: {out / 'output.mcap'}")
    return 1 if timed_out else 0
