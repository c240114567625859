"""`admn bench --quick` writes JSON in the fixed schema and a docs row."""

from __future__ import annotations

import json

import pytest
import yaml
from test_engine_fixtures import TINY

from admn_ros.cli import main
from admn_ros.engine.bench import budgets_to_measure, summarize
from admn_ros.engine.timing import percentile

ROW_KEYS = {"active_blocks", "step_ms_p50", "step_ms_p95", "controller_ms_p50",
            "backbone_ms_p50", "fusion_ms_p50"}


def test_bench_quick_writes_valid_json_and_doc_row(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out, doc = tmp_path / "bench.json", tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    assert main(["bench", "--quick", "--backend", "eager", "--config", str(cfg),
                 "--out", str(out), "--doc", str(doc)]) == 0
    data = json.loads(out.read_text())
    for key, typ in [("machine", str), ("date", str), ("torch", str), ("backend", str),
                     ("device", str), ("total_blocks", int), ("rows", list)]:
        assert isinstance(data[key], typ), key
    assert data["backend"] == "eager" and data["device"] == "cpu" and data["total_blocks"] == 9
    ls = [r["active_blocks"] for r in data["rows"]]
    assert ls[0] == 3 and ls[-1] == 9 and ls == sorted(ls)
    for row in data["rows"]:
        assert set(row) >= ROW_KEYS
        times = ROW_KEYS - {"active_blocks"}
        assert all(isinstance(row[k], float) and row[k] >= 0 for k in times)
    assert "fixed_overhead_ms" in data and "goals" in data
    peak = data["gemm_peak_gflops"]["1"]
    assert peak["gflops"] > 0 and set(peak["by_size"]) == {"256", "512", "1024"}
    assert 0 < data["share_of_single_thread_peak"] == pytest.approx(
        data["full_depth_gflops"] / peak["gflops"], abs=2e-4)
    text = doc.read_text()
    assert text.count("| eager | cpu |") == 1 and "bench-rows:end" in text


def test_budgets_and_summary():
    assert budgets_to_measure(3, 24, quick=True) == [3, 6, 12, 24]
    assert budgets_to_measure(3, 5, quick=False) == [3, 4, 5]
    rows = [{"active_blocks": b, "step_ms_p50": float(b), "step_ms_p95": float(b),
             "controller_ms_p50": 0.1, "ratio_to_full": b / 24, "controller_share": 0.1 / b}
            for b in (3, 6, 24)]
    s = summarize(rows, 24)
    assert s["quarter_blocks"] == 6 and s["fixed_overhead_ms"] == 3.0
    assert s["goals"]["ratio_quarter_le_0.28"]  # 6 ms / 24 ms
    assert s["goals"]["controller_share_quarter_le_0.03"]  # 0.1 ms / 6 ms
    peak_goal = "full_depth_ge_0.6_of_single_thread_peak"
    assert peak_goal not in s["goals"]  # not measured
    assert summarize(rows, 24, peak_share=0.7)["goals"][peak_goal]
    assert not summarize(rows, 24, peak_share=0.5)["goals"][peak_goal]
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
