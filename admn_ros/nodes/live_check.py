"""Every frame accounted for, in live mode: the graph as on the car (no bag, no /clock,
best-effort sensors), a recording replayed into it as drivers publish (`live_replay`), and
the nodes' final /diagnostics compared with what was published.

    python -m admn_ros.nodes.live_check --bag rec.mcap [--sets 300] [--budget 6]

Published camera sets = localised + counted drops (+ at most one still held) is the goal;
the JSON printed says how far a run is from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from admn_ros.nodes.graph import SENSOR_READERS, GraphOptions, describe_graph
from admn_ros.nodes.summary import FUSION_REASONS
from admn_ros.nodes.supervise import Children, node_command

STARTUP_S = 120.0  # longest wait for the nodes' first diagnostics (weights load)
SETTLE_S = 4.0  # wall seconds without change in the totals -> the graph is done
POLL_S = 0.5


def accounting(published_sets: int, ctl: dict[str, str], fus: dict[str, str]) -> dict:
    """The sets' fates from the controller's and fusion node's last diagnostics."""
    ctl_drops = {k.removeprefix("dropped."): int(v) for k, v in ctl.items()
                 if k.startswith("dropped.")}
    fus_drops = {k.removeprefix("dropped."): int(v) for k, v in fus.items()
                 if k.startswith("dropped.") and k.removeprefix("dropped.") in FUSION_REASONS}
    localised = int(fus.get("poses", 0))
    drops = sum(ctl_drops.values()) + sum(fus_drops.values()) + int(fus.get("waiting", 0))
    held = int(ctl.get("held", 0))
    return {"published_sets": published_sets, "localised": localised, "drops": drops,
            "held": held, "unaccounted": published_sets - localised - drops - held,
            "localised_share": round(localised / published_sets, 4) if published_sets else None,
            "dropped": {"controller": ctl_drops, "fusion": fus_drops},
            "frames_lost": {"controller": int(ctl.get("frames_lost", 0)),
                            "fusion": int(fus.get("frames_lost", 0))},
            "samples": int(ctl.get("samples", 0)),
            "allocations": int(ctl.get("allocations", 0))}


def outcomes(values: dict[str, str]) -> dict[str, str]:
    """The counters that say what became of the sets (not CPU time or worker ages, which move
    on while the graph is idle)."""
    return {k: v for k, v in values.items()
            if k in ("samples", "allocations", "poses", "held", "waiting")
            or k.startswith("dropped.")}


def run_live(bag: Path, sets: int = 0, rate: float = 1.0, budget: str = "6",
             weights: str = "", controller_weights: list[str] | None = None,
             timeout_s: float = 600.0) -> dict:
    """Run the live graph on `bag` replayed as drivers publish; returns `accounting`."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from admn_ros.nodes.soak import Listener

    specs = describe_graph(GraphOptions(weights=weights, controller_weights=controller_weights,
                                        budget=budget))
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    listener = Listener()
    deadline = time.monotonic() + timeout_s
    try:
        with tempfile.TemporaryDirectory(prefix="admn_live_") as tmp, Children() as children:
            for spec in specs:
                children.start(spec.name, node_command(spec, Path(tmp)))
            names = [s.name for s in specs]
            up_by = min(deadline, time.monotonic() + STARTUP_S)
            while not all(listener.get(n) for n in names):
                if (child := children.failed()) is not None:
                    raise RuntimeError(f"{child.name}: {child.error()}")
                if time.monotonic() > up_by:
                    raise TimeoutError("the nodes did not report in time")
                time.sleep(POLL_S)
            replay = subprocess.run(
                [sys.executable, "-m", "admn_ros.nodes.live_replay", "--bag", str(bag),
                 "--rate", str(rate), "--sets", str(sets), "--start-after", "1.0",
                 "--min-subscribers", str(SENSOR_READERS)],
                capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
            if replay.returncode != 0:
                raise RuntimeError(f"live_replay: {replay.stderr.strip()[-500:]}")
            published = json.loads(replay.stdout.strip().splitlines()[-1])["sets"]
            last, since = None, time.monotonic()
            while time.monotonic() - since < SETTLE_S and time.monotonic() < deadline:
                now = tuple(outcomes(listener.get(n)) for n in ("admn_controller", "admn_fusion"))
                if now != last:
                    last, since = now, time.monotonic()
                time.sleep(POLL_S)
            children.stop()  # SIGINT: every node publishes its final totals
            time.sleep(1.0)
        return accounting(published, listener.get("admn_controller"),
                          listener.get("admn_fusion"))
    finally:
        listener.close()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admn_ros.nodes.live_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bag", required=True, help="rosbag2 with the sensor topics")
    parser.add_argument("--sets", type=int, default=0, help="camera sets; 0 = all")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor")
    parser.add_argument("--budget", default="6", help="layers (or a power source)")
    parser.add_argument("--weights", default="", help="ADMN checkpoint (default: models/)")
    parser.add_argument("--controller-weights", nargs="*", default=None,
                        help="controller checkpoint(s) (default: models/)")
    args = parser.parse_args(argv)
    if not Path(args.bag).exists():
        print(f"live_check: bag not found: {args.bag}", file=sys.stderr)
        return 2
    try:
        result = run_live(Path(args.bag), args.sets, args.rate, args.budget, args.weights,
                          args.controller_weights)
    except (RuntimeError, TimeoutError) as exc:
        print(f"live_check: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0 if result["unaccounted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
