"""`scripts/gpu_check.sh --dry-run` runs end to end on the CPU (tiny config) and writes valid
JSON and a markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from admn_ros.engine.gpu_check import markdown_rows

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_valid_json(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), str(tmp_path), "--dry-run"],
                          env=env, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert report["versions"]["torch"] == __import__("torch").__version__
    tiny = report["configs"]["tiny"]
    assert set(tiny["backends"]) == {"eager", "compile"}
    for r in tiny["backends"].values():
        assert r["startup_s"] > 0 and r["rows"][0]["step_ms_p50"] > 0
        assert [row["active_blocks"] for row in r["rows"]] == [3, 4, 9]  # 1/4 = 1/2 = 4 of 9
    assert "tensorrt" in tiny["skipped"]  # not installed here: said so, not silently dropped
    assert set(tiny["precision_error_vs_fp32"]) == {"bf16"}
    assert tiny["compile_speedup_full_depth"] > 0
    md = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert md[0].startswith("| date | GPU |") and len(md) == 4  # header, rule, 2 rows
    assert "fallback" not in md[3]
    # a compiled part that fell back to eager is named in the JSON and flagged in its row
    tiny["backends"]["compile"]["info"]["eager_fallback_parts"] = "stem.rgb, fusion"
    assert "| compile (eager fallback: 2 parts) |" in markdown_rows(report)[1]


def test_gpu_check_usage_error_is_one_line():
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("usage:")
