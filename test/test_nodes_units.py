"""Node logic without spinning ROS: sync semantics, stamp rebuild, power mapping and sources,
decoding errors, corruptions, graph description and the launch file (stubbed launch_ros)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from admn_ros.nodes.graph import GraphOptions, describe_graph, topic_remappings
from admn_ros.nodes.images import InputError, decode
from admn_ros.nodes.inject import Corruption, corrupt_frame, load_schedule
from admn_ros.nodes.power import (
    BudgetMapper,
    Ina3221Source,
    RaplSource,
    SimulatedSource,
    detect_source,
)
from admn_ros.nodes.samples import StampedBuffer
from admn_ros.nodes.sync import ApproximateSync, LatestWithin, SampleSync

ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000


# ------------------------------------------------------------------ approximate-time sync
def test_approximate_sync_pairs_within_slop_and_consumes():
    out = []
    sync = ApproximateSync(2, queue_size=5, slop_ns=10 * MS, callback=lambda *m: out.append(m))
    sync.add(0, 100 * MS, "a100")
    sync.add(1, 150 * MS, "b150")  # 50 ms apart: no set
    assert out == []
    sync.add(0, 147 * MS, "a147")  # 3 ms from b150: set, both removed
    assert out == [("a147", "b150")]
    assert 147 * MS not in sync.queues[0] and not sync.queues[1]
    sync.add(1, 104 * MS, "b104")  # pairs with the still-queued a100
    assert out[-1] == ("a100", "b104")


def test_approximate_sync_prefers_closest_and_bounds_queues():
    out = []
    sync = ApproximateSync(2, queue_size=2, slop_ns=20 * MS, callback=lambda *m: out.append(m))
    sync.add(1, 95 * MS, "b95")
    sync.add(1, 99 * MS, "b99")
    sync.add(1, 200 * MS, "b200")  # queue size 2: b95 is dropped
    assert sorted(sync.queues[1]) == [99 * MS, 200 * MS]
    sync.add(0, 100 * MS, "a100")
    assert out == [("a100", "b99")]


def test_approximate_sync_spread_must_be_below_slop():
    out = []
    sync = ApproximateSync(3, queue_size=5, slop_ns=10 * MS, callback=lambda *m: out.append(m))
    sync.add(0, 100 * MS, 0)
    sync.add(1, 108 * MS, 1)
    sync.add(2, 92 * MS, 2)  # each within 10 ms of the new one, but spread 16 ms
    assert out == []
    sync.add(2, 104 * MS, 3)
    assert out == [(0, 1, 3)]


def test_latest_within_max_age_and_backwards_clock():
    lw = LatestWithin(max_age_ns=300 * MS, slop_ns=10 * MS)
    lw.add(0, "r0")
    lw.add(250 * MS, "r250")
    assert lw.pick(255 * MS)[1] == "r250"
    assert lw.pick(245 * MS)[1] == "r250"  # within slop ahead
    assert lw.pick(200 * MS)[1] == "r0"
    assert lw.pick(600 * MS) is None  # too old
    lw.add(10 * MS, "loop")  # clock jumped back: old frames forgotten
    assert lw.pick(255 * MS)[1] == "loop"


def test_sample_sync_cameras_plus_latest_radar():
    samples, drops = [], []
    keys = [(n, m) for n in ("n1", "n2") for m in ("rgb", "radar")]
    sync = SampleSync(keys, ("radar",), 5, 0.02, 0.3, samples.append, drops.append)
    sync.add(("n1", "rgb"), 100 * MS, "c1")
    sync.add(("n2", "rgb"), 105 * MS, "c2")
    assert drops == ["radar_missing"] and samples == []
    sync.add(("n1", "radar"), 60 * MS, "r1")
    sync.add(("n2", "radar"), 90 * MS, "r2")
    sync.add(("n1", "rgb"), 167 * MS, "c3")
    sync.add(("n2", "rgb"), 170 * MS, "c4")
    assert len(samples) == 1 and samples[0].stamp_ns == 170 * MS
    assert samples[0].msgs[("n1", "radar")] == "r1"
    sync.add(("n1", "rgb"), 50 * MS, "back")
    assert drops[-1] == "clock_backwards"


def test_stamped_buffer_rebuilds_the_controllers_sample():
    keys = [("n1", "rgb"), ("n2", "rgb"), ("n1", "radar")]
    buf = StampedBuffer(keys, ("radar",), 20 * MS, 300 * MS, keep=4)
    buf.add(("n1", "rgb"), 100 * MS, "a")
    buf.add(("n1", "radar"), 40 * MS, "r")
    assert buf.assemble(105 * MS) is None  # n2 may still come
    buf.add(("n2", "rgb"), 105 * MS, "b")
    s = buf.assemble(105 * MS)
    assert s.msgs == {("n1", "rgb"): "a", ("n2", "rgb"): "b", ("n1", "radar"): "r"}
    buf.add(("n2", "rgb"), 170 * MS, "late")
    buf.add(("n1", "rgb"), 168 * MS, "c")
    assert buf.assemble(135 * MS) is False  # n2 moved past the window: never complete
    assert buf.add(("n1", "rgb"), 10 * MS, "x") is False  # backwards clock resets


# ------------------------------------------------------------------ power
def test_budget_mapper_hysteresis_and_dwell():
    m = BudgetMapper([0.0, 3.0, 6.0], [6, 12, 24], hysteresis_w=0.5, min_dwell_s=1.0)
    assert m.update(7.0, 0.0) == 24
    assert m.update(5.8, 1.5) == 24  # within hysteresis of the 6 W threshold
    assert m.update(5.0, 2.0) == 12
    assert m.update(10.0, 2.5) == 12  # dwell: too soon after the last change
    assert m.update(10.0, 3.1) == 24
    assert m.update(6.2, 4.5) == 24
    assert m.update(-5.0, 6.0) == 6
    assert m.update(3.2, 8.0) == 6  # must clear 3.0 + 0.5
    assert m.update(3.6, 9.0) == 12
    with pytest.raises(ValueError, match="ascending"):
        BudgetMapper([3.0, 0.0], [6, 12], 0.0, 0.0)


def fake_sysfs(tmp_path: Path) -> Path:
    hw = tmp_path / "class/hwmon/hwmon3"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    for k, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400)],
                                        1):
        (hw / f"in{k}_label").write_text(label)
        (hw / f"in{k}_input").write_text(str(mv))
        (hw / f"curr{k}_input").write_text(str(ma))
    rapl = tmp_path / "class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("1000000")
    return tmp_path


def test_sysfs_readers_on_a_fake_tree(tmp_path):
    root = fake_sysfs(tmp_path)
    r = Ina3221Source(root, limit_w=15.0).read(0.0)
    assert r.power_w == pytest.approx(5.0 * 1.2 + 5.0 * 0.4) and r.headroom_w == pytest.approx(7.0)
    rapl = RaplSource(root, limit_w=30.0)
    assert rapl.read(0.0) is None
    (root / "class/powercap/intel-rapl:0/energy_uj").write_text("6000000")  # +5 J in 0.5 s
    assert rapl.read(0.5).power_w == pytest.approx(10.0)
    assert detect_source("auto", str(root), 15.0, "").name == "ina3221"
    with pytest.raises(FileNotFoundError):
        Ina3221Source(tmp_path / "nothing", 15.0)


def test_simulated_profile_steps(tmp_path):
    prof = ROOT / "config/power/demo_steps.yaml"
    src = SimulatedSource(prof)
    first = src.read(100.0)
    assert first.source == "simulated" and first.headroom_w > 0
    assert src.read(100.0 + 17.0).power_limit_w < first.power_limit_w
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [{power_w: 3}]\n")
    with pytest.raises(ValueError, match="steps"):
        SimulatedSource(bad)


# ------------------------------------------------------------------ decoding, corruption
class Img:
    def __init__(self, arr, encoding):
        self.height, self.width = arr.shape[:2]
        self.encoding, self.is_bigendian = encoding, 0
        self.step = arr.shape[1] * (arr.shape[2] if arr.ndim == 3 else 1) * arr.itemsize
        self.data = arr.tobytes()


def test_decode_reasons():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200
    assert decode("rgb", Img(rgb, "bgr8"))[0, 0, 2] == 200
    with pytest.raises(InputError) as e:
        decode("rgb", Img(rgb, "yuv422"))
    assert e.value.reason == "bad_encoding"
    short = Img(rgb, "rgb8")
    short.data = short.data[:10]
    with pytest.raises(InputError) as e:
        decode("rgb", short)
    assert e.value.reason == "bad_size"
    depth = np.full((4, 4), np.nan, np.float32)
    with pytest.raises(InputError) as e:
        decode("depth", Img(depth, "32FC1"))
    assert e.value.reason == "nan_depth"
    with pytest.raises(InputError) as e:
        decode("radar", Img(np.zeros((8, 4), np.float32), "32FC1"))
    assert e.value.reason == "empty_radar"
    assert decode("depth", Img(np.full((2, 2), 1.5, np.float32), "32FC1"))[0, 0] == 1500


def test_inject_schedule_and_corruption(tmp_path):
    sched = load_schedule(ROOT / "config/inject/demo_blind_rgb.yaml")
    assert sched and all(c.modality == "rgb" for c in sched)
    assert sched[0].active(sched[0].start_s) and not sched[0].active(sched[0].end_s)
    g = torch.Generator().manual_seed(0)
    img = np.full((16, 16, 3), 128, np.uint8)
    noisy = corrupt_frame(img, "rgb", Corruption("node1", "rgb", "gaussian", 3.0, 0, 1), 6000, g)
    assert noisy.dtype == np.uint8 and noisy.std() > 50
    depth = np.full((8, 8), 2000, np.uint16)
    dark = corrupt_frame(depth, "depth", Corruption("n", "depth", "dropout", 1, 0, 1), 6000, g)
    assert dark.dtype == np.uint16 and not dark.any()
    bad = tmp_path / "bad.yaml"
    bad.write_text("corruptions: [{node: node1, modality: lidar, kind: gaussian, start_s: 0, "
                   "end_s: 1}]\n")
    with pytest.raises(ValueError, match="modality"):
        load_schedule(bad)


# ------------------------------------------------------------------ graph + launch file
def test_graph_description_entries():
    specs = describe_graph(GraphOptions(bag="x.mcap", inject="config/inject/demo_blind_rgb.yaml",
                                        budget="12", backend="eager"))
    names = [s.name for s in specs]
    assert names == ["admn_power_monitor", "admn_controller", "admn_fusion",
                     "admn_corruption_injector", "admn_bag_player"]
    by = {s.name: s for s in specs}
    assert by["admn_power_monitor"].parameters[1]["manual_budget"] == 12
    assert by["admn_bag_player"].parameters[1]["image_topic_prefix"] == "/raw"
    assert by["admn_fusion"].parameters[1] == {"use_sim_time": True, "backend": "eager",
                                                "sensor_reliability": "reliable"}
    live = describe_graph(GraphOptions(topics=str(ROOT / "config/topics/realsense_ti.yaml")))
    assert "admn_bag_player" not in [s.name for s in live]
    # replay: every recorded frame counts (reliable); live: a late frame is worthless
    assert {s.parameters[1]["sensor_reliability"] for s in live if s.name != "admn_power_monitor"
            } == {"best_effort"}
    remaps = dict(live[1].remappings)
    assert remaps["/node1/camera/color/image_raw"].startswith("/")
    assert topic_remappings("") == []


def load_launch_with_stubs(monkeypatch):
    """Import the launch file with minimal `launch` / `launch_ros` stand-ins."""
    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration(Action):
        def perform(self, context):
            return context.launch_configurations[self.args[0]]

    launch = types.ModuleType("launch")
    launch.LaunchDescription = lambda actions: actions
    launch.actions = types.ModuleType("launch.actions")
    launch.conditions = types.ModuleType("launch.conditions")
    launch.substitutions = types.ModuleType("launch.substitutions")
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "ExecuteProcess"):
        setattr(launch.actions, name, type(name, (Action,), {}))
    launch.conditions.IfCondition = type("IfCondition", (Action,), {})
    launch.substitutions.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    launch_ros.actions = types.ModuleType("launch_ros.actions")
    launch_ros.actions.Node = type("Node", (Action,), {})
    for mod in (launch, launch.actions, launch.conditions, launch.substitutions, launch_ros,
                launch_ros.actions):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    spec = importlib.util.spec_from_file_location(
        "gdtm_tracking_launch", ROOT / "launch/gdtm_tracking.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_builds_one_node_per_description_entry(monkeypatch):
    module = load_launch_with_stubs(monkeypatch)
    actions = module.generate_launch_description()
    declared = {a.args[0] for a in actions if type(a).__name__ == "DeclareLaunchArgument"}
    assert {"bag", "weights", "budget", "backend", "rate", "rviz", "inject"} <= declared
    ctx = types.SimpleNamespace(launch_configurations={
        "bag": "/data/x.mcap", "weights": "", "budget": "simulated", "budget_profile": "",
        "backend": "auto", "rate": "0.5", "rviz": "true", "inject": "", "topics": "",
        "player": "admn"})
    (opaque,) = [a for a in actions if type(a).__name__ == "OpaqueFunction"]
    built = opaque.kwargs["function"](ctx)
    nodes = [a for a in built if type(a).__name__ == "Node"]
    specs = describe_graph(module.options_from(ctx))
    rviz = [n for n in nodes if n.kwargs["executable"] == "rviz2"]
    graph = [n for n in nodes if n.kwargs["package"] == "admn_ros"]
    assert len(rviz) == 1 and len(graph) == len(specs)
    for node, spec in zip(graph, specs, strict=True):
        assert node.kwargs["executable"] == spec.executable
        assert node.kwargs["name"] == spec.name
        assert node.kwargs["parameters"] == spec.parameters
        assert node.kwargs["remappings"] == spec.remappings


def test_allocator_full_budget_needs_no_controller_and_uncovered_budgets_are_errors():
    from admn_ros.core.config import load_model_config, to_dict
    from admn_ros.core.controller import Controller
    from admn_ros.nodes.allocation import Allocator

    base = to_dict(load_model_config(ROOT / "config/model/demo.yaml"))
    narrow = load_model_config({**base, "controller": {**base["controller"], "budget_min": 6,
                                                       "budget_max": 12}})
    torch.manual_seed(0)
    alloc = Allocator(narrow, None, {8: Controller(narrow).eval()})
    x = {m: torch.rand(1, 3, narrow.in_chans[m], 64, 64) for m in narrow.modalities}
    full = alloc(x, narrow.total_blocks)
    assert full.controller == "upper_bound" and bool(full.active.all())
    part = alloc(x, 10)
    assert part.controller == "learned-L8" and int(part.active.sum()) == 10
    with pytest.raises(ValueError, match="no shipped controller covers it"):
        alloc(x, 20)
    with pytest.raises(ValueError, match="impossible"):
        alloc(x, narrow.total_blocks + 1)
