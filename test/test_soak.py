"""A short `admn soak` (under a minute of looping replay with corruption and fuzzing): no
node lost, memory bounded after the warm-up, the malformed frames counted by reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


def test_short_soak_keeps_every_node_with_bounded_memory(tmp_path):
    if not (ROOT / "models" / "admn_demo.pt").exists():
        pytest.skip("models/ has no default weights (make train writes them)")
    res = subprocess.run([sys.executable, "-m", "admn_ros.cli", "soak", "--duration", "55",
                          "--frames", "40", "--sample-s", "5", "--warmup-s", "25",
                          "--max-growth", "0.25", "--out", str(tmp_path), "--no-plot"],
                         capture_output=True, text=True, timeout=400, env=os.environ)
    result = json.loads((tmp_path / "soak.json").read_text())
    v = result["verdict"]
    assert res.returncode == 0, (v, res.stderr[-3000:])
    assert v["ok"] and not v["lost_nodes"]
    assert {"admn_controller", "admn_fusion", "admn_bag_player"} <= set(v["nodes"])
    assert all(n["flat"] for n in v["nodes"].values() if n)
    dropped = result["samples"][-1]["nodes"]["admn_controller"]["dropped"]
    for reason in ("bad_encoding", "bad_size", "nan_depth", "bad_stamp"):
        assert dropped.get(reason, 0) >= 1, (reason, dropped)
    assert result["samples"][-1]["nodes"]["admn_fusion"].get("poses", 0) >= 1
