"""Child processes of `admn run`: one per node of the graph, as `ros2 launch` starts them.

Each node runs `python -m admn_ros.nodes.<executable>_node --ros-args ...` with the parameter
files and remappings of its graph entry, in the caller's environment (ROS_DOMAIN_ID, discovery
range). Their stderr is passed through line by line and its tail kept, so a node that fails
(missing weights, bad parameter) makes `admn run` fail with that node's own message. Stopping
sends SIGINT, waits, then kills; children also get SIGTERM should `admn run` itself die
(Linux parent-death signal), so none is left behind. No ROS here.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from admn_ros.nodes.graph import NodeSpec

STOP_TIMEOUT_S = 10.0  # SIGINT -> exit; after this the child is killed
TAIL_LINES = 20
PR_SET_PDEATHSIG = 1


def cli_args(spec: NodeSpec, tmp: Path) -> list[str]:
    """--ros-args for one node: its params files (dicts written to YAML, as launch_ros does),
    namespace and remappings."""
    args = ["--ros-args"]
    ns = spec.namespace.strip("/")
    for i, p in enumerate(spec.parameters):
        if isinstance(p, dict):
            f = tmp / f"{spec.name}_{i}.yaml"  # keyed by the node's full name
            key = f"/{ns}/{spec.name}" if ns else spec.name
            f.write_text(yaml.safe_dump({key: {"ros__parameters": p}}))
            p = f
        args += ["--params-file", str(p)]
    if ns:
        args += ["-r", f"__ns:=/{ns}"]
    for src, dst in spec.remappings:
        args += ["-r", f"{src}:={dst}"]
    return args


def node_command(spec: NodeSpec, tmp: Path) -> list[str]:
    """The command line of one node: its executable's module, its --ros-args."""
    return [sys.executable, "-m", spec.module, *cli_args(spec, tmp)]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    pump: threading.Thread | None = None

    def error(self) -> str:
        """The child's last stderr line (where a node states why it stopped)."""
        if self.pump is not None:
            self.pump.join(timeout=2.0)  # the lines written before it exited
        lines = [line for line in self.tail if line.strip()]
        return lines[-1].strip() if lines else f"exited with code {self.proc.returncode}"


class Children:
    """Started node processes; a context manager that always stops them."""

    def __init__(self, echo: Callable[[str], None] = sys.stderr.write) -> None:
        self.children: dict[str, Child] = {}
        self.echo = echo

    def start(self, name: str, cmd: list[str]) -> Child:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, bufsize=1, preexec_fn=_die_with_parent)
        child = Child(name, proc)
        child.pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.pump.start()
        self.children[name] = child
        return child

    def _pump(self, child: Child) -> None:
        for line in child.proc.stderr:
            child.tail.append(line)
            self.echo(line)

    def exited(self, name: str) -> int | None:
        """The exit code of `name`, None while it runs."""
        return self.children[name].proc.poll()

    def failed(self) -> Child | None:
        """The first child that exited with an error, if any."""
        return next((c for c in self.children.values()
                     if c.proc.poll() not in (None, 0)), None)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGINT every running child, wait up to `timeout_s` in all, kill what is left."""
        running = [c for c in self.children.values() if c.proc.poll() is None]
        for c in running:
            c.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for c in running:
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
