"""The README cannot go stale: every command in its fenced blocks is run here or mapped to the
test that covers it, the make targets, `admn` subcommands and files it names exist, its graph
drawing is what `describe_graph` gives now, and its pictures come from a run's plots."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
from pathlib import Path

import pytest

from admn_ros.cli import SUBCOMMANDS
from admn_ros.nodes import graph_doc
from admn_ros.nodes.graph_doc import Endpoint, fold, mermaid, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# README commands this file runs, in this order, in a scratch directory
RUN_HERE = (
    "admn doctor",
    "admn generate runs/try/rec --frames 30 --seed 3",
    "admn bag from-gdtm runs/try/rec runs/try/rec.mcap",
)
# README commands too slow or too wide to run here -> what runs them ("file::test" or a file
# that contains the command)
COVERED = {
    "make demo": "test/test_nodes_graph.py::test_blinding_a_camera_moves_layers_away_from_rgb",
    "make test": ".ci/run",
    ". scripts/env.sh":
        "test/test_foundation_env.py::test_env_script_defaults_to_localhost_and_respects_caller",
    "admn run --bag runs/try/rec.mcap --out runs/try/out --budget 12":
        "test/test_nodes_graph.py::test_blinding_a_camera_moves_layers_away_from_rgb",
}
SHELL_FENCES = ("bash", "sh", "shell", "console")


def fenced_commands(text: str) -> list[str]:
    """Commands of the shell-fenced blocks: comments dropped, continuation lines joined."""
    out: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
        if lang not in SHELL_FENCES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if cmd:
                out.append(re.sub(r"\s+", " ", cmd))
    return out


def inline_code(text: str) -> list[str]:
    """Inline code spans outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def test_fenced_commands_are_parsed():
    text = "x\n```bash\na --b  # note\n\n# only a comment\nc \\\n  d\n```\n```mermaid\nno\n```\n"
    assert fenced_commands(text) == ["a --b", "c d"]


def test_every_readme_command_is_run_or_covered():
    commands = fenced_commands(README.read_text())
    unknown = [c for c in commands if c not in RUN_HERE and c not in COVERED]
    assert not unknown, (f"README commands no test accounts for: {unknown}; run them in "
                         f"RUN_HERE or map them to their test in COVERED ({__file__})")
    gone = [c for c in (*RUN_HERE, *COVERED) if c not in commands]
    assert not gone, f"no longer in the README, drop them from RUN_HERE / COVERED: {gone}"


@pytest.mark.parametrize("command", sorted(COVERED))
def test_covering_test_exists(command):
    path, _, name = COVERED[command].partition("::")
    text = (ROOT / path).read_text()
    if name:
        assert re.search(rf"^def {name}\(", text, flags=re.M), f"{COVERED[command]} not found"
    else:
        assert command in text, f"{path} does not run {command!r}"


@pytest.mark.ros
def test_readme_commands_run(tmp_path):
    for cmd in RUN_HERE:
        res = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=os.environ,
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, f"{cmd!r} failed:\n{res.stderr[-2000:]}"
    assert (tmp_path / "runs/try/rec/metadata.json").is_file()
    assert (tmp_path / "runs/try/rec.mcap").stat().st_size > 0


def test_make_targets_and_subcommands_named_exist():
    text = README.read_text()
    makefile = (ROOT / "Makefile").read_text()
    named = fenced_commands(text) + inline_code(text)
    targets = {m.group(1) for c in named for m in [re.match(r"make ([\w-]+)", c)] if m}
    subs = {m.group(1) for c in named for m in [re.match(r"admn ([\w-]+)", c)] if m}
    assert {"demo", "test"} <= targets
    missing = [t for t in targets if not re.search(rf"^{re.escape(t)}:", makefile, flags=re.M)]
    assert not missing, f"README names make targets the Makefile lacks: {missing}"
    unknown = sorted(subs - set(SUBCOMMANDS))
    assert not unknown, f"README names admn subcommands that do not exist: {unknown}"


def test_readme_links_and_pictures_exist():
    text = README.read_text()
    paths = re.findall(r"\]\(([^)#\s]+)[^)]*\)", text) + re.findall(r'src="([^"]+)"', text)
    local = [p for p in paths if "://" not in p]
    assert any(p.startswith("docs/img/") for p in local)
    missing = [p for p in local if not (ROOT / p).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 130, "move the longer parts to docs/"


# ---------------------------------------------------------------- the graph drawing
def ep(node: str, topic: str, publishes: bool, msg_type: str = "sensor_msgs/Image") -> Endpoint:
    return Endpoint(node, topic, msg_type, publishes)


def test_fold_merges_the_sensor_nodes_topics_only_when_all_agree():
    ends = ("sensor_msgs/Image", frozenset({"a"}), frozenset({"b"}))
    other = ("sensor_msgs/Image", frozenset({"a"}), frozenset({"c"}))
    topics = {f"/node{k}/cam": ends for k in (1, 2, 3)}
    topics |= {"/node1/radar": ends, "/node2/radar": ends, "/node3/radar": other}
    assert fold(topics) == {"/node{1,2,3}/cam": ends, "/node1/radar": ends,
                            "/node2/radar": ends, "/node3/radar": other}


def test_mermaid_draws_topics_types_budget_loop_and_names_the_rest():
    nodes = ["pm", "ctl", "fus"]
    eps = [ep("pm", "/admn/budget", True, "admn_ros/ComputeBudget"),
           ep("ctl", "/admn/budget", False, "admn_ros/ComputeBudget"),
           ep("ctl", "/admn/allocation", True, "admn_ros/LayerAllocation"),
           ep("fus", "/admn/allocation", False, "admn_ros/LayerAllocation"),
           *[ep(n, "/rosout", True, "rcl_interfaces/Log") for n in nodes],
           *[ep(n, "/diagnostics", True, "diagnostic_msgs/DiagnosticArray") for n in nodes]]
    text = mermaid(nodes, eps, "simulated")
    assert ('  n_pm --> t_admn_budget["/admn/budget<br/><i>admn_ros/ComputeBudget</i>"]:::topic'
            " --> n_ctl\n") in text
    assert "n_ctl & n_fus -. power draw .-> power_rails" in text
    assert "source: simulated" in text and ":::hw -. headroom .-> n_pm\n" in text
    assert "rosout" not in text and "t_diagnostics" not in text
    assert "`/diagnostics` (diagnostic_msgs/DiagnosticArray) from every node" in text


def test_replace_block_needs_both_markers():
    text = f"a\n{graph_doc.BEGIN}\nold\n{graph_doc.END}\nb\n"
    assert replace_block(text, "new\n", "x") == f"a\n{graph_doc.BEGIN}\nnew\n{graph_doc.END}\nb\n"
    with pytest.raises(ValueError, match="expected one"):
        replace_block("no markers", "new\n", "x")


@pytest.mark.ros
def test_readme_graph_is_what_describe_graph_gives():
    text = README.read_text()
    new = replace_block(text, graph_doc.demo_graph(), "README.md")
    diff = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                        "README.md", "generated"))
    assert new == text, f"the README's graph is stale: run `{graph_doc.REFRESH}`\n{diff}"


# ---------------------------------------------------------------- the pictures
def test_docs_img_copies_a_runs_plots_and_names_what_is_missing(tmp_path):
    run = tmp_path / "out"
    run.mkdir()
    for name in ("trajectory.png", "allocation.png", "summary.json"):
        (run / name).write_bytes(name.encode())
    env = {**os.environ, "FROM": str(run), "IMG_DIR": str(tmp_path / "img")}
    res = subprocess.run(["bash", str(ROOT / "scripts/docs_img.sh")], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "img/demo_trajectory.png").read_bytes() == b"trajectory.png"
    assert (tmp_path / "img/demo_allocation.png").read_bytes() == b"allocation.png"
    assert (tmp_path / "img/demo_summary.json").read_bytes() == b"summary.json"
    (run / "allocation.png").unlink()
    res = subprocess.run(["bash", str(ROOT / "scripts/docs_img.sh")], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "allocation.png not found" in res.stderr
