"""Set-up, environment and `admn doctor`: the ground every other test stands on."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _doctor(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "admn_ros.cli", "doctor"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_ros_discovery_stays_on_localhost():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 0 < int(os.environ["ROS_DOMAIN_ID"]) < 233


def test_env_script_defaults_to_localhost_and_respects_caller():
    script = f". {ROOT}/scripts/env.sh && echo $ROS_AUTOMATIC_DISCOVERY_RANGE $RMW_IMPLEMENTATION"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROS_")}
    out = subprocess.run(["bash", "-c", script], env=clean, capture_output=True, text=True)
    assert out.stdout.split() == ["LOCALHOST", "rmw_fastrtps_cpp"]
    chosen = dict(clean, ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET")
    out = subprocess.run(["bash", "-c", script], env=chosen, capture_output=True, text=True)
    assert out.stdout.split()[0] == "SUBNET"


def test_doctor_passes_on_a_set_up_machine():
    result = _doctor(os.environ.copy())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "messages" in result.stdout and "MISSING" not in result.stdout


def test_doctor_names_missing_messages():
    # Same environment without the colcon install: the generated messages are not importable.
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if "install" not in p
    )
    result = _doctor(env)
    assert result.returncode == 1
    assert "MISSING messages" in result.stdout
    assert "make setup" in result.stdout


def _tree_digest(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_setup_twice_changes_nothing():
    # make test has just run set-up; running it again must find every step done.
    before = _tree_digest(ROOT / "install", ROOT / ".venv" / ".admn-setup")
    freeze_before = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True,
                                   text=True).stdout
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("setup: ")][:-1]
    assert steps and all(line.endswith("up to date") for line in steps), result.stdout
    assert _tree_digest(ROOT / "install", ROOT / ".venv" / ".admn-setup") == before
    freeze_after = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True,
                                  text=True).stdout
    assert freeze_after == freeze_before


def test_setup_failure_names_step_and_log(tmp_path):
    # A broken interpreter stops set-up at the first step, naming it; nothing is stamped.
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT,
                            env=dict(os.environ, PYTHON=str(tmp_path / "no-python3.11")),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAILED at step 'python'" in result.stderr
