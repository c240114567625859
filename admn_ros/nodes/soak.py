"""`admn soak`: the graph on a looping recording, under corruption and fuzzing, for a while.

A generated recording (or `--bag`) is replayed in a loop through the full graph with the
corruption injector and a fuzzing publisher (`admn_ros.nodes.fuzz`) sending malformed frames
into the sensor topics. From the moment every node has reported, every `--sample-s` seconds
each node's resident memory (from /proc), its drops and the fusion node's latency are sampled
(the latter two from the nodes' /diagnostics). The run writes OUT/soak.json (samples +
verdict) and OUT/soak.png, and fails (exit 1) when a node was lost or a node's memory grew by
more than `--max-growth` after the warm-up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from admn_ros.engine.bench_cli import machine_name
from admn_ros.nodes.graph import GraphOptions, describe_graph
from admn_ros.nodes.run_cli import interrupt
from admn_ros.nodes.supervise import Children, node_command

FUZZ_TOPICS = ("/node2/camera/color/image_raw:rgb", "/node1/camera/depth/image_raw:depth",
               "/node3/radar/range_doppler:radar")
DEFAULT_SCHEDULE = "config/inject/demo_blind_rgb.yaml"
PAGE_KB = 1024
STARTUP_S = 300.0  # longest wait for every node's first diagnostics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=3600.0, help="wall seconds")
    parser.add_argument("--out", default="runs/soak", help="output directory")
    parser.add_argument("--bag", default="", help="recording to loop (default: generated)")
    parser.add_argument("--frames", type=int, default=150, help="frames of the generated one")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--budget", default="12", help="budget source or layers (admn run's)")
    parser.add_argument("--inject", default=DEFAULT_SCHEDULE,
                        help="corruption schedule; empty = no injector")
    parser.add_argument("--fuzz-hz", type=float, default=20.0,
                        help="malformed frames per second per fuzzed topic; 0 = no fuzzing")
    parser.add_argument("--sample-s", type=float, default=10.0, help="sampling period, s")
    parser.add_argument("--warmup-s", type=float, default=0.0,
                        help="memory after this is the reference (default: a tenth of the run)")
    parser.add_argument("--max-growth", type=float, default=0.05,
                        help="largest accepted memory growth of a node after the warm-up")
    parser.add_argument("--no-plot", action="store_true", help="skip soak.png")


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process (kB), None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // PAGE_KB
    except (OSError, ValueError, IndexError):
        return None


def make_bag(args: argparse.Namespace, out: Path) -> Path:
    """The recording to loop: `--bag`, or a generated one of `--frames` frames."""
    if args.bag:
        if not Path(args.bag).exists():
            raise FileNotFoundError(f"bag not found: {args.bag}")
        return Path(args.bag).resolve()
    from admn_ros.data.bag import gdtm_to_bag
    from admn_ros.data.generate import generate_recording

    rec = out / f"recording_{args.frames}f"
    if not (rec / "metadata.json").exists():
        generate_recording(rec, frames=args.frames)
    bag = out / f"recording_{args.frames}f.mcap"
    if not bag.exists():
        gdtm_to_bag(rec, bag, progress=False)
    return bag.resolve()


class Listener:
    """The last /diagnostics values of every node, by node name (rclpy, own thread)."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from admn_ros.nodes.common import DIAGNOSTICS_QOS

        self.last: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        self.node = rclpy.create_node("admn_soak")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.on_msg,
                                      DIAGNOSTICS_QOS)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def on_msg(self, msg) -> None:
        with self.lock:
            for st in msg.status:
                self.last[st.hardware_id.lstrip("/")] = {kv.key: kv.value for kv in st.values}

    def get(self, name: str) -> dict[str, str]:
        with self.lock:
            return dict(self.last.get(name, {}))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


def wait_up(children: Children, listener: Listener, names: list[str]) -> None:
    """Until every node of the graph has reported (loading weights takes a while); the soak's
    time starts then."""
    up_by = time.monotonic() + STARTUP_S
    while not all(listener.get(n) for n in names):
        if (child := children.failed()) is not None:
            raise RuntimeError(f"{child.name}: {child.error()}")
        if time.monotonic() > up_by:
            raise RuntimeError(f"the nodes did not report within {STARTUP_S:.0f} s")
        time.sleep(0.5)


def sample(children: Children, listener: Listener, t0: float) -> dict:
    """One row: per node its RSS, liveness and drop totals; the fusion node's latency."""
    row: dict = {"t_s": round(time.monotonic() - t0, 1), "nodes": {}}
    for name, child in children.children.items():
        diag = listener.get(name)
        row["nodes"][name] = {
            "alive": child.proc.poll() is None, "rss_kb": rss_kb(child.proc.pid),
            "dropped": {k.removeprefix("dropped."): int(v) for k, v in diag.items()
                        if k.startswith("dropped.")},
            **{k: float(diag[k]) for k in ("latency_ms_p95", "latency_ms_p50", "poses",
                                           "samples", "received", "frames_lost")
               if k in diag}}
    return row


def verdict(rows: list[dict], warmup_s: float, max_growth: float) -> dict:
    """Memory growth per node after the warm-up, lost nodes, latency p95 first vs last tenth
    of the run (the first and last 10 minutes of an hour)."""
    names = sorted({n for r in rows for n in r["nodes"]})
    out: dict = {"nodes": {}, "lost_nodes": [], "ok": True}
    for name in names:
        series = [(r["t_s"], r["nodes"][name]) for r in rows if name in r["nodes"]]
        if not all(s["alive"] for _, s in series):
            out["lost_nodes"].append(name)
        rss = [(t, s["rss_kb"]) for t, s in series if s["rss_kb"] is not None and t >= warmup_s]
        entry: dict = {}
        if len(rss) >= 2:
            ref, values = rss[0][1], [v for _, v in rss]
            entry = {"rss_kb_after_warmup": ref, "rss_kb_last": values[-1],
                     "rss_kb_max": max(values),
                     "growth": round(max(abs(v - ref) for v in values) / ref, 4)}
            entry["flat"] = entry["growth"] <= max_growth
            out["ok"] &= entry["flat"]
        out["nodes"][name] = entry
    tenth = rows[-1]["t_s"] / 10 if rows else 0.0
    lat = [(r["t_s"], r["nodes"].get("admn_fusion", {}).get("latency_ms_p95")) for r in rows]
    lat = [(t, v) for t, v in lat if v is not None and not np.isnan(v)]
    first = [v for t, v in lat if t <= tenth]
    last = [v for t, v in lat if t >= rows[-1]["t_s"] - tenth] if rows else []
    out["latency_ms_p95_first_tenth"] = round(float(np.median(first)), 2) if first else None
    out["latency_ms_p95_last_tenth"] = round(float(np.median(last)), 2) if last else None
    out["ok"] &= not out["lost_nodes"]
    return out


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    names = sorted({n for r in rows for n in r["nodes"]})
    t = [r["t_s"] / 60 for r in rows]
    for name in names:
        rss = [r["nodes"].get(name, {}).get("rss_kb") for r in rows]
        axes[0].plot(t, [np.nan if v is None else v / 1024 for v in rss], label=name)
        drops = [sum(r["nodes"].get(name, {}).get("dropped", {}).values()) for r in rows]
        if any(drops):
            axes[2].plot(t, drops, label=name)
    axes[1].plot(t, [r["nodes"].get("admn_fusion", {}).get("latency_ms_p95", np.nan)
                     for r in rows], color="k")
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].set_ylabel("latency p95 (ms)")
    axes[2].set_ylabel("drops (cumulative)")
    axes[2].set_xlabel("minutes")
    for ax in (axes[0], axes[2]):
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("admn soak: memory, latency, drops")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def soak(args: argparse.Namespace, bag: Path, out: Path) -> dict:
    """Start the graph (player looping) and the fuzzer; sample until the duration is up."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    specs = describe_graph(GraphOptions(bag=str(bag), budget=str(args.budget),
                                        rate=args.rate, inject=args.inject))
    for spec in specs:
        if spec.executable == "bag_player":
            spec.parameters.append({"loop": True})
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    listener = Listener()
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="admn_soak_") as tmp, Children() as children:
            for spec in specs:
                children.start(spec.name, node_command(spec, Path(tmp)))
            if args.fuzz_hz > 0:
                children.start("admn_fuzz", [
                    sys.executable, "-m", "admn_ros.nodes.fuzz", "--topics", *FUZZ_TOPICS,
                    "--hz", str(args.fuzz_hz), "--ros-args", "-p", "use_sim_time:=true"])
            wait_up(children, listener, [s.name for s in specs])
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < args.duration:
                time.sleep(min(args.sample_s, max(0.0, args.duration - elapsed)))
                rows.append(sample(children, listener, t0))
                print(f"soak: {rows[-1]['t_s']:.0f} s: " + ", ".join(
                    f"{n} {s['rss_kb'] // 1024 if s['rss_kb'] else '-'} MiB"
                    for n, s in rows[-1]["nodes"].items()), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("soak: interrupted; writing what was sampled", file=sys.stderr)
    except RuntimeError as exc:
        print(f"admn soak: {exc}", file=sys.stderr)
    finally:
        listener.close()
        rclpy.try_shutdown()
    warmup = args.warmup_s or (rows[-1]["t_s"] / 10 if rows else 0.0)
    return {"machine": machine_name(), "date": datetime.date.today().isoformat(),
            "duration_s": rows[-1]["t_s"] if rows else 0.0, "rate": args.rate,
            "frames": args.frames if not args.bag else None, "bag": str(bag),
            "fuzz_hz": args.fuzz_hz, "inject": args.inject, "warmup_s": warmup,
            "verdict": verdict(rows, warmup, args.max_growth), "samples": rows}


def run(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.sample_s <= 0:
        print("admn soak: --duration and --sample-s must be > 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        bag = make_bag(args, out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"admn soak: {exc}", file=sys.stderr)
        return 2
    result = soak(args, bag, out)
    path = out / "soak.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["verdict"], indent=1))
    print(f"soak: {path}")
    if not args.no_plot and result["samples"]:
        print(f"plot: {plot(result['samples'], out / 'soak.png')}")
    return 0 if result["verdict"]["ok"] else 1
