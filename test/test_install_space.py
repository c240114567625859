"""The package as a ROS user runs it: every installed executable (`lib/admn_ros/<node>`, what
`ros2 run` and `ros2 launch` start) from a working directory outside the source tree, in an
environment made only of `install/setup.sh` and the venv; each comes up (its /diagnostics
arrives), publishes its /tf_static where it has one, and leaves on SIGINT with exit code 0 and
no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from admn_ros.data.bag import gdtm_to_bag
from admn_ros.data.testing import make_tiny_recording
from admn_ros.nodes.common import DIAGNOSTICS_QOS
from admn_ros.nodes.static_tf import TF_STATIC

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install"
VENV = ROOT / ".venv"
EXECUTABLES = ("bag_player", "controller", "corruption_injector", "frames", "fusion",
               "power_monitor")
UP_S = 240.0  # longest wait for every node's first diagnostics (torch imports on a busy CPU)
STOP_S = 30.0  # longest wait for an exit after SIGINT
TF_S = 30.0  # longest wait, after the last node reported, for the static transforms
# as tf2_ros's StaticListenerQoS: the latched messages of several broadcasters (frames node,
# bag player) arrive together; a depth of 1 would keep only the last of them
TF_STATIC_LISTENER_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
PASSED_ENV = ("HOME", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
              "OMP_NUM_THREADS")


def installed_env() -> dict[str, str]:
    """`. install/setup.sh` (what setup.bash sources) on top of the venv and the system."""
    if not (INSTALL / "setup.sh").is_file():
        pytest.fail(f"{INSTALL}/setup.sh missing: run `make setup`")
    base = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    base["PATH"] = f"{VENV}/bin:/usr/bin:/bin"
    out = subprocess.run(["bash", "-c", f". {INSTALL}/setup.sh && env -0"], env=base,
                         capture_output=True, text=True, check=True, cwd="/")
    return dict(line.split("=", 1) for line in out.stdout.split("\0") if "=" in line)


@pytest.fixture(scope="module")
def env():
    return installed_env()


def test_installed_modules_and_files_come_from_the_install_space(env, tmp_path):
    assert str(ROOT) not in env.get("PYTHONPATH", "").split(os.pathsep)
    probe = ("import admn_ros.paths as p, admn_ros.msg as m; "
             "print(p.__file__); print(m.__file__); print(p.share_dir())")
    out = subprocess.run([f"{VENV}/bin/python", "-c", probe], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(line).is_relative_to(INSTALL) for line in out), out
    assert Path(out[2]) == INSTALL / "admn_ros" / "share" / "admn_ros"
    for sub in ("config/nodes.yaml", "config/gdtm_tracking.rviz", "launch/gdtm_tracking.launch.py",
                "models/admn_demo.pt", "models/SHA256SUMS"):
        assert (Path(out[2]) / sub).is_file(), sub


class Listener(Node):
    """Collects the names on /diagnostics and the /tf_static messages."""

    def __init__(self) -> None:
        super().__init__("install_space_listener")
        self.reported: set[str] = set()
        self.tf_static: list[TFMessage] = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics,
                                 DIAGNOSTICS_QOS)
        self.create_subscription(TFMessage, TF_STATIC, self.tf_static.append,
                                 TF_STATIC_LISTENER_QOS)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.reported.update(s.name.split(":")[0] for s in msg.status)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("install_space")
    return gdtm_to_bag(make_tiny_recording(d, frames=10), d / "tiny.mcap", progress=False)


def static_frames(listener) -> list[set[tuple[str, str]]]:
    """(parent, child) pairs of each /tf_static message received."""
    return [{(t.header.frame_id, t.child_frame_id) for t in m.transforms}
            for m in listener.tf_static]


def has_static_tree(listener) -> bool:
    """world -> map and the live sensor nodes from the frames node, and the bag's own tree
    replayed by the player."""
    frames = static_frames(listener)
    live = {("world", "map")} | {("world", f"node{k}") for k in (1, 2, 3)}
    return any(live <= f for f in frames) and \
        any(("node1", "node1_color_optical_frame") in f for f in frames)


def test_every_installed_executable_starts_anywhere_and_stops_cleanly_on_sigint(
        env, bag, tmp_path):
    lib = INSTALL / "admn_ros" / "lib" / "admn_ros"
    assert sorted(p.name for p in lib.iterdir()) == sorted(EXECUTABLES)
    # relative parameter paths resolve against share/admn_ros, not the working directory
    extra = {"bag_player": ["-p", f"bag:={bag}", "-p", "loop:=true", "-p", "start_delay_s:=0.0"],
             "corruption_injector": ["-p", "schedule:=config/inject/demo_blind_rgb.yaml"],
             "power_monitor": ["-p", "source:=simulated",
                               "-p", "profile:=config/power/demo_steps.yaml"]}
    rclpy.init()
    listener = Listener()
    procs = {}
    try:
        for name in EXECUTABLES:
            procs[name] = subprocess.Popen(
                [str(lib / name), "--ros-args", *extra.get(name, [])], cwd=tmp_path, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True)
        expected = {f"admn_{name}" for name in EXECUTABLES}
        deadline = time.monotonic() + UP_S
        while not expected <= listener.reported and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs.values()):
                break
            rclpy.spin_once(listener, timeout_sec=0.2)
        deadline = time.monotonic() + TF_S  # the latched /tf_static of the nodes: on a busy
        while not has_static_tree(listener) and time.monotonic() < deadline:  # CPU, late
            rclpy.spin_once(listener, timeout_sec=0.1)
        exited = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        assert not exited, {n: procs[n].stderr.read() for n in exited}
        assert expected <= listener.reported, expected - listener.reported
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        results = {}
        for name, p in procs.items():
            try:
                _, err = p.communicate(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            results[name] = (p.returncode, err)
        listener.destroy_node()
        rclpy.try_shutdown()
    for name, (code, err) in results.items():
        assert code == 0, f"{name}: exit {code}\n{err}"
        assert "Traceback" not in err and "Exception ignored" not in err, f"{name}:\n{err}"
    assert has_static_tree(listener), static_frames(listener)
