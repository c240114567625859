"""`admn run`: the ROS graph of `describe_graph` on a bag, here, without launch_ros.

Every node of the description runs in its own process, exactly as `ros2 launch` starts it:
`python -m admn_ros.nodes.<executable>_node` with the parameter files, overrides and
remappings of its graph entry (`supervise`), in this environment (domain id, discovery
range). This process only records: a recorder node writes the outputs to DIR/output.mcap and
keeps each node's last /diagnostics. The player starts once every other node has reported
(and the injector, if any, has its readers), and itself waits for its readers. When the
player reports the bag played and the outputs have drained, the nodes get SIGINT (each
publishes its final totals), and summary.json and the plots are written from the recording
and those totals. A node that fails makes the run fail with that node's own message.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from admn_ros.nodes.graph import GraphOptions, NodeSpec, describe_graph
from admn_ros.nodes.supervise import Children, node_command

if TYPE_CHECKING:
    from admn_ros.nodes.recorder import Recorder

DRAIN_S = 3.0  # wall seconds without new output after the bag ended -> done ...
LOST_S = 30.0  # ... once the readers have every frame, or after this long without output
READERS = ("controller", "fusion")  # they report `received`: every frame must reach them
SETTLE_S = 0.5  # after the nodes stopped: let the recorder take their final diagnostics
POLL_S = 0.1
PLAYER = "bag_player"


class NodeFailedError(RuntimeError):
    """A node process exited with an error; the message is the node's own."""


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
    parser.add_argument("--offline", action="store_true",
                        help="evaluation replay: localise every sample however late (no "
                             "freshness drops, no deadline budget); default: real time")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="wall seconds before giving up")
    parser.add_argument("--no-plots", action="store_true", help="skip the two PNG plots")
    parser.add_argument("--namespace", default="",
                        help="namespace of the graph (car2: /car2/admn/pose, ...); default root")


def options(args: argparse.Namespace) -> GraphOptions:
    return GraphOptions(bag=str(Path(args.bag).resolve()), weights=args.weights,
                        controller_weights=args.controller_weights,
                        budget=str(args.budget), budget_profile=args.budget_profile,
                        backend=args.backend, rate=args.rate, inject=args.inject,
                        namespace=args.namespace, offline=args.offline)


def wait_until(cond: Callable[[], bool], children: Children, deadline: float) -> bool:
    """Poll `cond()` until true (True) or the deadline (False); a failed node raises."""
    while not cond():
        if (child := children.failed()) is not None:
            raise NodeFailedError(f"{child.name}: {child.error()}")
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def play(args: argparse.Namespace, specs: list[NodeSpec], recorder: Recorder,
         children: Children, tmp: Path) -> bool:
    """Start the nodes, then the player; return once the bag has played and the outputs have
    drained (True) or at the timeout (False). Leaves the nodes running."""
    deadline = time.monotonic() + args.timeout
    graph = [s for s in specs if s.executable != PLAYER]
    for spec in graph:
        children.start(spec.name, node_command(spec, tmp))
    up = wait_until(lambda: all(ready(recorder.diagnostics(s.name)) for s in graph),
                    children, deadline)
    if not up:
        return False
    recorder.rec.extra["graph_cpu_s_at_start"] = round(sum(  # start-up, before the replay
        float((recorder.diagnostics(s.name) or {}).get("cpu_s", 0.0)) for s in graph), 2)
    player = next(s for s in specs if s.executable == PLAYER)
    children.start(player.name, node_command(player, tmp))
    idle = Idle(recorder)

    readers = [s.name for s in graph if s.executable in READERS]

    def played() -> bool:
        status = recorder.diagnostics(player.name) or {}
        ended = status.get("done") == "1" or children.exited(player.name) == 0
        frames = int(status.get("frames", 0))
        caught_up = all(int((recorder.diagnostics(n) or {}).get("received", 0)) >= frames
                        for n in readers)
        return ended and idle() and (caught_up or idle.for_s() > LOST_S)

    return wait_until(played, children, deadline)


def ready(status: dict[str, str] | None) -> bool:
    """A node is up once it has reported, and says `ready` if it has a say."""
    return status is not None and status.get("ready", "1") == "1"


class Idle:
    """True once the recorder has seen no new output for DRAIN_S seconds."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder, self.count, self.since = recorder, -1, time.monotonic()

    def __call__(self) -> bool:
        return self.for_s() > DRAIN_S

    def for_s(self) -> float:
        """Seconds since the recorder last saw new output."""
        count = self.recorder.count()
        if count != self.count:
            self.count, self.since = count, time.monotonic()
        return time.monotonic() - self.since


def interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM: leave like Ctrl-C, through the clean-up


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from admn_ros.nodes.recorder import Recorder

    if not Path(args.bag).exists():
        print(f"admn run: bag not found: {args.bag} (make one with `admn generate DIR` and "
              f"`admn bag from-gdtm DIR OUT.mcap`)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = describe_graph(options(args))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started ignoring it
    signal.signal(signal.SIGTERM, interrupt)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C: KeyboardInterrupt
    recorder = Recorder(out / "output.mcap", namespace=args.namespace, parameter_overrides=[
        Parameter("use_sim_time", Parameter.Type.BOOL, True)])
    executor = SingleThreadedExecutor()
    executor.add_node(recorder)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        with tempfile.TemporaryDirectory(prefix="admn_run_") as tmp, Children() as children:
            try:
                finished = play(args, specs, recorder, children, Path(tmp))
            except NodeFailedError as exc:
                print(f"admn run: {exc}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print("admn run: interrupted; nodes stopped", file=sys.stderr)
                return 130
            children.stop()  # SIGINT: every node publishes its final totals
            time.sleep(SETTLE_S)
        rec = recorder.finish({s.executable: s.name for s in specs})
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        recorder.close()  # a failed or interrupted run keeps what it recorded
        recorder.destroy_node()
        rclpy.try_shutdown()
    timed_out = not finished
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
