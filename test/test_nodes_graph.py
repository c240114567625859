"""`admn run` end to end over the real RMW on tiny generated bags: stamps, budgets,
budget steps, bad inputs, missing weights, corruption moving layers (default weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from admn_ros.core.checkpoint import save_checkpoint
from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.data.bag import gdtm_to_bag
from admn_ros.data.testing import make_tiny_recording
from admn_ros.nodes.recorder import typestore_with_admn

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
FRAME_NS = 1_000_000_000 // 15
FRAMES = 40  # camera frame sets in the tiny bag
RADAR_PERIOD_NS = 1_000_000_000 // 4  # longest a sample waits for its radar to settle


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("nodes_graph")
    rec = make_tiny_recording(d, frames=FRAMES)
    bag = gdtm_to_bag(rec, d / "tiny.mcap", progress=False)
    torch.manual_seed(0)
    cfg = load_model_config(ROOT / "config/model/demo.yaml")
    save_checkpoint(d / "admn.pt", ADMN(cfg))
    save_checkpoint(d / "controller_L12.pt", Controller(cfg), meta={"budget": 12})
    return d, bag


def admn_run(out: Path, bag: Path, *extra: str, weights: Path | None = None,
             timeout: float = 150) -> subprocess.CompletedProcess:
    """`admn run` offline (every sample localised, budgets as given: what these tests count;
    the real-time behaviour is tested in test_nodes_realtime.py)."""
    args = [sys.executable, "-m", "admn_ros.cli", "run", "--bag", str(bag), "--out", str(out),
            "--rate", "0.5", "--offline", "--no-plots", *extra]
    if weights is not None:
        args += ["--weights", str(weights / "admn.pt"),
                 "--controller-weights", str(weights / "controller_L12.pt")]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=os.environ)


def read_outputs(path: Path, ns: str = "") -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=typestore_with_admn()) as r:
        for conn, _, raw in r.messages():
            if conn.topic in (f"{ns}/admn/pose", f"{ns}/admn/allocation", f"{ns}/admn/budget"):
                out.setdefault(conn.topic.removeprefix(ns), []).append(
                    r.deserialize(raw, conn.msgtype))
    return out


def ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def stepped_run(work):
    d, bag = work
    prof = d / "step.yaml"
    prof.write_text("steps:\n  - {t: 0.0, power_limit_w: 20.0, power_w: 6.0}\n"
                    "  - {t: 1.2, power_limit_w: 10.0, power_w: 6.0}\n")
    out = d / "stepped"
    res = admn_run(out, bag, "--budget-profile", str(prof), weights=d)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, read_outputs(out / "output.mcap"), json.loads((out / "summary.json").read_text())


def test_every_sample_gives_one_allocation_and_one_pose_with_its_stamp(stepped_run):
    _, msgs, summary = stepped_run
    allocs = [ns(m) for m in msgs["/admn/allocation"]]
    poses = [ns(m) for m in msgs["/admn/pose"]]
    # every camera set of the bag is a sample; at most the last one may still wait for its
    # radar when the bag ends (counted as end_of_bag), nothing else is lost
    assert summary["samples_synced"] >= FRAMES - 1
    assert summary["samples_synced"] + sum(summary["dropped"].values()) == FRAMES
    assert set(summary["dropped"]) <= {"end_of_bag", "unfinished"}
    assert summary["frames_received"] == {"controller": summary["frames_in"],
                                          "fusion": summary["frames_in"]}
    assert summary["allocations_out"] == len(allocs) == summary["samples_synced"]
    assert len(set(allocs)) == len(allocs)
    assert sorted(poses) == sorted(allocs) and summary["poses_out"] == len(poses)
    assert all(m.header.frame_id == "map" and m.pose.pose.position.z == 0.0
               for m in msgs["/admn/pose"])  # REP 103: z up, the car on the floor
    for key in ("frames_in", "poses_out", "dropped", "mean_error_cm", "mean_active_layers",
                "budget_changes", "latency_ms", "controller_ms_p50", "backbone_ms_p50"):
        assert key in summary
    assert summary["mean_error_cm"] is not None and summary["latency_ms"]["p50"] is not None
    assert summary["backbone_ms_p50"] is not None


def test_allocations_have_exactly_the_budgets_blocks(stepped_run):
    _, msgs, _ = stepped_run
    for m in msgs["/admn/allocation"]:
        active = np.array(m.active).reshape(len(m.modalities), m.layers_per_modality)
        assert active.sum() == m.budget and active[:, 0].all()


def test_budget_step_reaches_allocations_within_one_frame(stepped_run):
    _, msgs, summary = stepped_run
    budgets = sorted((ns(m), m.layers) for m in msgs["/admn/budget"])
    assert summary["budget_changes"] >= 1 and {b for _, b in budgets} == {24, 8}
    t_step = next(t for t, b in budgets if b == 8)
    allocs = [(ns(m), m.budget) for m in msgs["/admn/allocation"]]
    after = [b for t, b in allocs if t > t_step + FRAME_NS]
    assert after and set(after) == {8}
    # a sample is allocated once its radar has settled (at most one radar period after its
    # stamp), with the budget in force then; anything older ran on the old budget
    before = [b for t, b in allocs if t < t_step - RADAR_PERIOD_NS]
    assert before and set(before) == {24}


def write_bad_bag(src: Path, dst: Path) -> None:
    """The tiny bag with bad frames spliced in, a radar topic silent for a while, and its
    first 2 s replayed (clock jump)."""
    ts = typestore_with_admn()
    with AnyReader([src]) as r, Writer(dst.with_suffix(""), version=9,
                                       storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=ts)
                 for c in r.connections if c.msgtype.startswith(("sensor", "geometry"))}
        items = [(c, t, raw) for c, t, raw in r.messages() if c.topic in conns]
        n_rgb = 0
        last_t = items[-1][1]
        for c, t, raw in items:
            msg = r.deserialize(raw, c.msgtype)
            if c.topic == "/node1/camera/color/image_raw":
                n_rgb += 1
                if n_rgb == 8:
                    msg.encoding = "yuv422"  # wrong encoding
                elif n_rgb == 12:
                    msg.data = msg.data[:100]  # wrong size
            if c.topic == "/node2/camera/depth/image_raw" and n_rgb == 16:
                h, w_ = msg.height, msg.width
                msg.encoding, msg.step = "32FC1", w_ * 4
                msg.data = np.full(h * w_, np.nan, np.float32).view(np.uint8)  # NaN depth
            if c.topic == "/node3/radar/range_doppler" and 1 <= (n_rgb // 10) <= 1:
                msg.data = np.zeros(len(msg.data), np.uint8)  # empty radar frame
            if c.topic == "/node2/radar/range_doppler" and 22 <= n_rgb < 36:
                continue  # missing topic: node 2's radar is silent for ~1 s (> max age)
            w.write(conns[c.topic], t, ts.serialize_cdr(msg, c.msgtype))
        # replay the first two seconds after the end: header stamps jump backwards
        t0 = items[0][1]
        for c, t, raw in items:
            if t - t0 < 2_000_000_000:
                w.write(conns[c.topic], last_t + 200_000_000 + (t - t0), raw)
    (inner,) = dst.with_suffix("").glob("*.mcap")
    inner.replace(dst)


BAD_INPUT_REASONS = ("bad_encoding", "bad_size", "nan_depth", "empty_radar", "radar_missing",
                     "bad_budget")
# sets of the old timeline when the clock jumps back, and the last set when the bag ends
SET_REASONS = ("clock_backwards", "end_of_bag", "unfinished")


def test_bad_inputs_are_dropped_counted_and_nodes_stay_alive(work):
    d, bag = work
    bad = d / "bad.mcap"
    write_bad_bag(bag, bad)
    out = d / "bad_run"
    res = admn_run(out, bad, "--budget", "999", weights=d)  # 999: an impossible budget
    assert res.returncode == 0, res.stderr[-3000:]  # no node failed
    summary = json.loads((out / "summary.json").read_text())
    dropped = summary["dropped"]
    for reason in BAD_INPUT_REASONS:  # each defect under its own name
        assert dropped.get(reason, 0) >= 1, (reason, dropped)
    assert set(dropped) <= {*BAD_INPUT_REASONS, *SET_REASONS}, dropped
    assert "impossible" in res.stderr
    # alive to the end: both took every frame, and every allocation still got its pose
    assert summary["frames_received"] == {"controller": summary["frames_in"],
                                          "fusion": summary["frames_in"]}
    assert summary["poses_out"] == summary["allocations_out"] >= 1
    msgs = read_outputs(out / "output.mcap")
    poses = [ns(m) for m in msgs["/admn/pose"]]
    assert sorted(poses) == sorted(ns(m) for m in msgs["/admn/allocation"])
    assert len(set(poses)) < len(poses)  # the replayed seconds were localised again: the
    # clock jump started the synchroniser over instead of stalling it


def fuzzer(*topics: str, seconds: float = 170) -> subprocess.Popen:
    """The fuzzing publisher (malformed frames at 20 Hz, stamped on the bag's clock)."""
    return subprocess.Popen([sys.executable, "-m", "admn_ros.nodes.fuzz", "--topics", *topics,
                             "--hz", "20", "--duration", str(seconds), "--ros-args", "-p",
                             "use_sim_time:=true"], stderr=subprocess.DEVNULL, env=os.environ)


FUZZ_REASONS = ("bad_encoding", "bad_size", "nan_depth", "nan_radar", "bad_stamp")


def test_a_fuzzing_publisher_costs_few_samples_and_each_kind_is_counted(work):
    d, bag = work
    fuzz = fuzzer("/node2/camera/color/image_raw:rgb", "/node1/camera/depth/image_raw:depth",
                  "/node3/radar/range_doppler:radar")
    try:
        res = admn_run(d / "fuzz_run", bag, "--budget", "12", weights=d)
    finally:
        fuzz.terminate()
        fuzz.wait(timeout=10)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((d / "fuzz_run" / "summary.json").read_text())
    assert summary["poses_out"] >= 0.85 * FRAMES, summary
    for reason in FUZZ_REASONS:
        assert summary["dropped"].get(reason, 0) >= 1, (reason, summary["dropped"])


def test_live_mode_every_published_set_ends_as_a_sample_or_a_counted_drop(work):
    """No bag, no /clock: a recording published as drivers do (wall-clock stamps, sensor-data
    QoS, 15 Hz) into the live graph."""
    d, bag = work
    res = subprocess.run([sys.executable, "-m", "admn_ros.nodes.live_check", "--bag", str(bag),
                          "--budget", "12", "--weights", str(d / "admn.pt"),
                          "--controller-weights", str(d / "controller_L12.pt")],
                         capture_output=True, text=True, timeout=300, env=os.environ)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    result = json.loads(res.stdout[res.stdout.index("{"):])
    assert result["published_sets"] == FRAMES
    assert result["unaccounted"] == 0 and result["held"] <= 1, result
    assert result["localised"] >= 1


def test_missing_weights_is_a_clear_error(work, tmp_path):
    _, bag = work
    res = admn_run(tmp_path / "out", bag, "--weights", str(tmp_path / "nope.pt"),
                   "--controller-weights", str(tmp_path / "nope_ctl.pt"), timeout=60)
    assert res.returncode == 2
    assert "nope" in res.stderr and "make train" in res.stderr


def noise_following_controller(dst: Path) -> Path:
    """The shipped L12 controller with a strong noise prior (logits -= 10 x its trained noise
    head's judgement). The shipped controllers have none (chosen on val, docs/ARCHITECTURE.md):
    on the demo backbone they keep one allocation for every input."""
    from admn_ros.core.checkpoint import load_checkpoint
    from admn_ros.train.config import replace_controller

    shipped = load_checkpoint(ROOT / "models/controller_demo_L12.pt", kind="controller").module
    ctrl = Controller(replace_controller(shipped.cfg, noise_prior=10.0))
    missing, unexpected = ctrl.load_state_dict(shipped.state_dict(), strict=False)
    assert missing == ["noise_prior"] and not unexpected
    save_checkpoint(dst, ctrl)
    return dst


def test_blinding_a_camera_moves_layers_away_from_rgb(work):
    """The controller node judges the injected corruption on the live frames: a blinded camera
    loses blocks (the shipped trained noise head, with a prior that acts on its judgement)."""
    d, _ = work
    ctrl = noise_following_controller(d / "controller_follows_noise.pt")
    rec = make_tiny_recording(d, frames=90, seed=3)
    bag = gdtm_to_bag(rec, d / "blind.mcap", progress=False)
    sched = d / "blind.yaml"
    sched.write_text("corruptions:\n  - {node: node1, modality: rgb, kind: gaussian, "
                     "strength: 3.0, start_s: 3.0, end_s: 6.0}\n")
    out = d / "blind_run"
    res = admn_run(out, bag, "--budget", "12", "--inject", str(sched), "--weights",
                   str(ROOT / "models/admn_demo.pt"), "--controller-weights", str(ctrl),
                   timeout=170)
    assert res.returncode == 0, res.stderr[-3000:]
    allocs = read_outputs(out / "output.mcap")["/admn/allocation"]
    t0 = min(ns(m) for m in allocs)
    rgb = {True: [], False: []}
    for m in allocs:
        t = (ns(m) - t0) / 1e9
        inside = 3.3 <= t < 6.0
        if inside or t < 2.8 or t > 6.5:
            rgb[inside].append(sum(m.active[: m.layers_per_modality]))
    assert np.mean(rgb[True]) < np.mean(rgb[False])


def shifted_bag(src: Path, dst: Path, offset_ns: int) -> Path:
    """The bag with every header stamp (and record time) moved by `offset_ns`."""
    ts = typestore_with_admn()
    with AnyReader([src]) as r, Writer(dst.with_suffix(""), version=9,
                                       storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=ts)
                 for c in r.connections if c.msgtype.startswith(("sensor", "geometry"))}
        for c, t, raw in r.messages():
            if c.topic in conns:
                msg = r.deserialize(raw, c.msgtype)
                sec, nsec = divmod(ns(msg) + offset_ns, 1_000_000_000)
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
                w.write(conns[c.topic], t + offset_ns, ts.serialize_cdr(msg, c.msgtype))
    (inner,) = dst.with_suffix("").glob("*.mcap")
    inner.replace(dst)
    return dst


def camera_stamps(bag: Path) -> set[int]:
    with AnyReader([bag]) as r:
        return {ns(r.deserialize(raw, c.msgtype)) for c, _, raw in r.messages()
                if c.topic.endswith("color/image_raw")}


def test_two_graphs_in_two_namespaces_on_one_domain_do_not_cross(work):
    d, bag = work
    bags = {"car1": bag, "car2": shifted_bag(bag, d / "later.mcap", 1000 * 1_000_000_000)}
    args = [[sys.executable, "-m", "admn_ros.cli", "run", "--bag", str(b), "--out",
             str(d / ns_), "--rate", "0.5", "--offline", "--no-plots", "--namespace", ns_,
             "--budget", "12",
             "--weights", str(d / "admn.pt"), "--controller-weights",
             str(d / "controller_L12.pt")] for ns_, b in bags.items()]
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ) for a in args]  # at the same time
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    for ns_, b in bags.items():
        summary = json.loads((d / ns_ / "summary.json").read_text())
        own, other = camera_stamps(b), camera_stamps(bags["car2" if ns_ == "car1" else "car1"])
        poses = {ns(m) for m in read_outputs(d / ns_ / "output.mcap", f"/{ns_}")["/admn/pose"]}
        assert poses and poses <= own and not poses & other  # its own bag, only
        # every frame of its own bag reached its readers, none of the other graph's
        assert summary["frames_received"] == {"controller": summary["frames_in"],
                                              "fusion": summary["frames_in"]}
        assert summary["poses_out"] == summary["allocations_out"] == len(poses)
