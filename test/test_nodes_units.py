"""Node logic without spinning ROS: sync semantics, stamp rebuild, power mapping and sources,
decoding errors, corruptions, graph description and the launch file (stubbed launch_ros),
`admn run`'s node processes and its totals from diagnostics."""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
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
from admn_ros.nodes.supervise import cli_args
from admn_ros.nodes.sync import ApproximateSync, LatestWithin, SampleSync

ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000


# ------------------------------------------------------------------ approximate-time sync
def test_approximate_sync_pairs_within_slop_and_consumes():
    out, evicted = [], []
    sync = ApproximateSync(2, queue_size=5, slop_ns=10 * MS, callback=lambda *m: out.append(m),
                           on_evict=lambda i, s: evicted.append((i, s)))
    sync.add(0, 100 * MS, "a100")
    sync.add(1, 150 * MS, "b150")  # 50 ms apart: no set
    assert out == []
    sync.add(0, 147 * MS, "a147")  # 3 ms from b150: set, both removed
    assert out == [("a147", "b150")]
    assert not sync.queues[0] and not sync.queues[1]
    assert evicted == [(0, 100 * MS)]  # input 1 is past 100 ms: a100 can never pair


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


def test_latest_within_max_age_and_a_step_back():
    lw = LatestWithin(max_age_ns=300 * MS, slop_ns=10 * MS, min_period_ns=200 * MS)
    lw.add(0, "r0")
    lw.add(250 * MS, "r250")
    assert lw.pick(255 * MS)[1] == "r250"
    assert lw.pick(245 * MS)[1] == "r250"  # within slop ahead
    assert lw.pick(200 * MS)[1] == "r0"
    assert lw.pick(600 * MS) is None  # too old
    lw.add(10 * MS, "back")  # stepped back: the frames stamped after it are forgotten
    assert lw.pick(255 * MS)[1] == "back"
    with pytest.raises(ValueError, match="min_period"):
        LatestWithin(300 * MS, 10 * MS, 20 * MS)


def test_latest_within_settles_once_no_frame_can_still_arrive():
    lw = LatestWithin(max_age_ns=600 * MS, slop_ns=40 * MS, min_period_ns=200 * MS)
    assert not lw.settled(100 * MS, 100 * MS)  # nothing yet: the radar may still come
    lw.add(0, "r0")
    assert lw.settled(150 * MS, 150 * MS)  # the next frame comes after 200 ms: not in window
    assert not lw.settled(250 * MS, 250 * MS)  # a frame at 200..290 ms may still come
    assert lw.settled(250 * MS, 900 * MS)  # cameras are past max_age: stop waiting
    lw.add(250 * MS, "r250")
    assert lw.settled(250 * MS, 250 * MS) and lw.pick(250 * MS)[1] == "r250"


def test_sample_sync_cameras_plus_latest_radar():
    samples, drops = [], []
    keys = [(n, m) for n in ("n1", "n2") for m in ("rgb", "radar")]
    sync = SampleSync(keys, ("radar",), 5, 0.02, 0.3, 0.2, samples.append, drops.append)
    sync.add(("n1", "rgb"), 100 * MS, "c1")
    sync.add(("n2", "rgb"), 105 * MS, "c2")
    assert drops == [] and samples == []  # held: the radar of 105 ms may still come
    sync.add(("n1", "radar"), 60 * MS, "r1")
    sync.add(("n2", "radar"), 90 * MS, "r2")
    assert len(samples) == 1 and samples[0].stamp_ns == 105 * MS
    sync.add(("n1", "rgb"), 167 * MS, "c3")
    sync.add(("n2", "rgb"), 170 * MS, "c4")
    assert len(samples) == 2 and samples[1].stamp_ns == 170 * MS
    assert samples[1].msgs[("n1", "radar")] == "r1"
    sync.add(("n1", "rgb"), 50 * MS, "back")  # one topic stepping back: kept aside
    assert drops == [] and sync.guard.jumps == 0
    sync.add(("n2", "rgb"), 52 * MS, "back2")  # a second one with it: the clock jumped
    assert sync.guard.jumps == 1 and sync.held[0][0] == 52 * MS  # the new timeline's set


def test_sample_sync_drops_a_set_whose_radar_never_comes():
    samples, drops = [], []
    keys = [("n1", "rgb"), ("n1", "radar")]
    sync = SampleSync(keys, ("radar",), 5, 0.02, 0.3, 0.2, samples.append, drops.append)
    sync.add(("n1", "rgb"), 100 * MS, "c1")
    sync.add(("n1", "rgb"), 167 * MS, "c2")
    assert drops == [] and samples == []  # both held, waiting for the radar
    sync.add(("n1", "rgb"), 450 * MS, "c3")  # 350 ms later: the radar of 100 ms is overdue
    assert drops == ["radar_missing"] and samples == []


def test_sample_sync_pairs_cameras_that_lag_seconds_behind_the_radar():
    """After a stall the few, small radar frames are taken in long before the camera backlog."""
    samples, drops = [], []
    keys = [("n1", "rgb"), ("n1", "radar")]
    sync = SampleSync(keys, ("radar",), 5, 0.04, 0.6, 0.22, samples.append, drops.append)
    for k in range(16):  # 4 s of radar first
        sync.add(("n1", "radar"), k * 250 * MS, f"r{k}")
    sync.add(("n1", "rgb"), 510 * MS, "c")
    assert drops == [] and samples[0].msgs[("n1", "radar")] == "r2"


def radar_case_frames():
    """Cameras of two nodes at 15 Hz, radar of each at 4 Hz with its own phase."""
    frames = [(("n1", "rgb"), t * 67 * MS) for t in range(1, 30)]
    frames += [(("n2", "rgb"), t * 67 * MS + 3 * MS) for t in range(1, 30)]
    frames += [(("n1", "radar"), 30 * MS + t * 250 * MS) for t in range(8)]
    frames += [(("n2", "radar"), 130 * MS + t * 250 * MS) for t in range(8)]
    return frames


def arrival_order(frames, rng, max_delay_ms: int) -> list:
    """Frames in the order a node may handle them: each topic in order (as DDS keeps it),
    topics interleaved by random delays of up to `max_delay_ms`."""
    arrival, last = [], {}
    for key, t in sorted(frames, key=lambda f: f[1]):
        last[key] = max(last.get(key, 0), t + int(rng.integers(0, max_delay_ms)) * MS)
        arrival.append((last[key], key, t))
    return [(key, t) for _, key, t in sorted(arrival, key=lambda a: a[0])]


def run_sync(frames) -> list:
    keys = [("n1", "rgb"), ("n2", "rgb"), ("n1", "radar"), ("n2", "radar")]
    samples = []
    sync = SampleSync(keys, ("radar",), 10, 0.04, 0.6, 0.2, samples.append, lambda r: None)
    for key, t in frames:
        sync.add(key, t, (key, t))
    return samples


@pytest.mark.parametrize("seed", range(5))
def test_controller_sync_and_fusion_buffer_pick_the_same_radar_in_any_order(seed):
    """Radar and camera callbacks interleave differently in the two nodes; both must still
    pick the same frames (same stamps) for every sample."""
    frames = radar_case_frames()
    rng = np.random.default_rng(seed)
    reference = run_sync(sorted(frames, key=lambda f: f[1]))
    samples = run_sync(arrival_order(frames, rng, 80))
    assert len(reference) >= 25
    assert [s.stamps for s in samples] == [s.stamps for s in reference]
    keys = [("n1", "rgb"), ("n2", "rgb"), ("n1", "radar"), ("n2", "radar")]
    buf = StampedBuffer(keys, ("radar",), 40 * MS, 600 * MS, 200 * MS, keep=60)
    for key, t in arrival_order(frames, rng, 80):
        buf.add(key, t, (key, t))
    for sample in samples:
        rebuilt = buf.assemble(sample.stamp_ns)
        assert rebuilt and rebuilt.stamps == sample.stamps


def test_stamped_buffer_rebuilds_the_controllers_sample():
    keys = [("n1", "rgb"), ("n2", "rgb"), ("n1", "radar")]
    buf = StampedBuffer(keys, ("radar",), 20 * MS, 300 * MS, 200 * MS, keep=4)
    buf.add(("n1", "rgb"), 100 * MS, "a")
    buf.add(("n1", "radar"), 40 * MS, "r")
    assert buf.assemble(105 * MS) is None  # n2 may still come
    buf.add(("n2", "rgb"), 105 * MS, "b")
    s = buf.assemble(105 * MS)
    assert s.msgs == {("n1", "rgb"): "a", ("n2", "rgb"): "b", ("n1", "radar"): "r"}
    buf.add(("n2", "rgb"), 170 * MS, "late")
    buf.add(("n1", "rgb"), 168 * MS, "c")
    assert buf.assemble(135 * MS) is False  # n2 moved past the window: never complete
    assert buf.assemble(170 * MS).msgs[("n1", "radar")] == "r"  # next radar: >= 240 ms
    buf.add(("n1", "rgb"), 234 * MS, "d")
    buf.add(("n2", "rgb"), 236 * MS, "e")
    assert buf.assemble(236 * MS) is None  # a radar frame at 240..256 ms may still come
    buf.add(("n1", "radar"), 290 * MS, "r2")
    assert buf.assemble(236 * MS).msgs[("n1", "radar")] == "r"
    assert buf.add(("n1", "rgb"), 10 * MS, "x") == []  # one topic back: kept aside
    assert buf.add(("n2", "rgb"), 12 * MS, "y") == ["clock_backwards"]  # two: a clock jump
    assert dict(buf.frames[("n1", "rgb")]) == {10 * MS: "x"}  # the new timeline goes on
    assert buf.assemble(236 * MS) is None


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
    # VDD_IN is the module total (Orin NX/Nano): the rail inside it is not added
    assert r.power_w == pytest.approx(5.0 * 1.2) and r.headroom_w == pytest.approx(9.0)
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
    assert decode("rgb", Img(rgb, "bgr8")).array[0, 0, 2] == 200
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
    assert decode("depth", Img(np.full((2, 2), 1.5, np.float32), "32FC1")).array[0, 0] == 1500


def test_inject_schedule_and_corruption(tmp_path):
    sched = load_schedule(ROOT / "config/inject/demo_blind_rgb.yaml")
    assert sched and all(c.modality == "rgb" for c in sched)
    assert sched[0].active(sched[0].start_s) and not sched[0].active(sched[0].end_s)
    g = torch.Generator().manual_seed(0)
    img = np.full((16, 16, 3), 128, np.uint8)
    noisy = corrupt_frame(img, "rgb", Corruption("node1", "rgb", "gaussian", 3.0, 0, 1), 6000, g)
    assert noisy.dtype == np.uint8 and noisy.std() > 50
    # on the model's grid: constant over each 4 x 4 cell of a 64 x 64 frame at grid 16
    frame = np.full((64, 64, 3), 128, np.uint8)
    cells = corrupt_frame(frame, "rgb", Corruption("node1", "rgb", "gaussian", 0.1, 0, 1), 6000,
                          g, noise_grid=16)
    assert (cells[::4, ::4] == cells[3::4, 3::4]).all() and cells.std() > 10
    depth = np.full((8, 8), 2000, np.uint16)
    dark = corrupt_frame(depth, "depth", Corruption("n", "depth", "dropout", 1, 0, 1), 6000, g)
    assert dark.dtype == np.uint16 and not dark.any()
    bad = tmp_path / "bad.yaml"
    bad.write_text("corruptions: [{node: node1, modality: lidar, kind: gaussian, start_s: 0, "
                   "end_s: 1}]\n")
    with pytest.raises(ValueError, match="modality"):
        load_schedule(bad)


# ------------------------------------------------------------------ graph + launch file
def test_graph_description_entries(tmp_path):
    specs = describe_graph(GraphOptions(bag="x.mcap", inject="config/inject/demo_blind_rgb.yaml",
                                        budget="12", backend="eager"))
    names = [s.name for s in specs]
    frames = ["admn_frames"] if importlib.util.find_spec("tf2_msgs") else []
    assert names == ["admn_power_monitor", "admn_controller", "admn_fusion",
                     "admn_corruption_injector", *frames, "admn_bag_player"]
    by = {s.name: s for s in specs}
    assert by["admn_power_monitor"].parameters[1]["manual_budget"] == 12
    assert by["admn_bag_player"].parameters[1]["image_topic_prefix"] == "raw/"
    assert by["admn_corruption_injector"].parameters[1]["input_prefix"] == "raw/"
    # the replay starts once every sensor topic's readers are matched (late ones miss frames)
    assert by["admn_bag_player"].parameters[1]["min_subscribers"] == 1  # the injector
    assert by["admn_corruption_injector"].parameters[1]["min_subscribers"] == 2
    plain = describe_graph(GraphOptions(bag="x.mcap"))
    assert plain[-1].parameters[1]["min_subscribers"] == 2  # controller and fusion
    assert by["admn_fusion"].parameters[1] == {"use_sim_time": True, "backend": "eager",
                                                "sensor_reliability": "reliable"}
    live = describe_graph(GraphOptions(topics=str(ROOT / "config/topics/realsense_ti.yaml")))
    assert "admn_bag_player" not in [s.name for s in live]
    # replay: every recorded frame counts (reliable); live: a late frame is worthless
    assert {s.parameters[1]["sensor_reliability"] for s in live
            if s.name not in ("admn_power_monitor", "admn_frames")
            } == {"best_effort"}
    remaps = dict(live[1].remappings)
    assert remaps["node1/camera/color/image_raw"].startswith("/")
    assert topic_remappings("") == []
    # at the root nothing moves; in a namespace every node goes there with /clock and tf
    assert all(not s.namespace and not set(dict(s.remappings)) & {"/clock", "/tf_static"}
               for s in plain)
    car2 = describe_graph(GraphOptions(bag="x.mcap", namespace="car2"))
    for spec in car2:
        assert spec.namespace == "car2"
        assert ("/clock", "clock") in spec.remappings and ("/tf_static", "tf_static") in \
            spec.remappings
        assert "-r" in (args := cli_args(spec, tmp_path)) and "__ns:=/car2" in args


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
        "player": "admn", "namespace": ""})
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


# ------------------------------------------------------------------ admn run: processes, totals
def test_admn_run_starts_exactly_the_nodes_parameters_and_remappings_of_the_description(
        tmp_path, monkeypatch):
    """`admn run` starts one process per graph entry, graph first and the player last, each
    with its module and the --ros-args of its entry (what `ros2 launch` would pass)."""
    import yaml

    from admn_ros.nodes import run_cli
    from admn_ros.nodes.supervise import node_command

    opt = GraphOptions(bag="x.mcap", inject="config/inject/demo_blind_rgb.yaml", budget="12",
                       topics=str(ROOT / "config/topics/realsense_ti.yaml"))
    specs = describe_graph(opt)

    class Recorder:  # every node has reported, the player is done, nothing new recorded
        rec = types.SimpleNamespace(extra={})

        def diagnostics(self, name):
            return {"done": "1"}

        def count(self):
            return 0

    class Children:
        def __init__(self):
            self.started = []

        def start(self, name, cmd):
            self.started.append((name, cmd))

        def failed(self):
            return None

        def exited(self, name):
            return None

    monkeypatch.setattr(run_cli, "DRAIN_S", 0.0)
    children = Children()
    args = types.SimpleNamespace(timeout=30.0)
    assert run_cli.play(args, specs, Recorder(), children, tmp_path)
    assert [name for name, _ in children.started] == [s.name for s in specs]
    assert specs[-1].executable == "bag_player"
    for (_, cmd), spec in zip(children.started, specs, strict=True):
        assert cmd == node_command(spec, tmp_path)
        assert cmd[1:3] == ["-m", f"admn_ros.nodes.{spec.executable}_node"]
        ros_args = cmd[cmd.index("--ros-args") + 1:]
        files = [ros_args[i + 1] for i, a in enumerate(ros_args) if a == "--params-file"]
        remaps = [ros_args[i + 1] for i, a in enumerate(ros_args) if a == "-r"]
        assert len(files) == len(spec.parameters)
        for f, p in zip(files, spec.parameters, strict=True):
            if isinstance(p, dict):
                assert yaml.safe_load(Path(f).read_text()) == {spec.name: {"ros__parameters": p}}
            else:
                assert f == str(p)
        assert remaps == [f"{a}:={b}" for a, b in spec.remappings]
    assert any(spec.remappings for spec in specs)


def test_every_node_module_runs_as_its_executable():
    for spec in describe_graph(GraphOptions(bag="x.mcap", inject="x.yaml")):
        source = Path(importlib.util.find_spec(spec.module).origin).read_text()
        assert 'if __name__ == "__main__":' in source and "sys.exit(main())" in source


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_children_report_a_failed_node_with_its_own_message():
    from admn_ros.nodes.supervise import Children

    echoed = []
    with Children(echo=echoed.append) as children:
        c = children.start("admn_fusion", child(
            "import sys; print('loading', file=sys.stderr); "
            "print('error: weights not found at nope.pt', file=sys.stderr); sys.exit(2)"))
        c.proc.wait()
        assert children.failed() is c and children.exited("admn_fusion") == 2
        assert c.error() == "error: weights not found at nope.pt"
    assert "loading\n" in echoed  # the nodes' logs still reach the user


def test_children_stop_with_sigint_then_kill_and_leave_none_behind():
    from admn_ros.nodes.supervise import Children

    polite = ("import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); "
              "print('up', file=sys.stderr, flush=True); time.sleep(60)")
    stubborn = ("import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "print('up', file=sys.stderr, flush=True); time.sleep(60)")
    children = Children(echo=lambda line: None)
    a = children.start("polite", child(polite))
    b = children.start("stubborn", child(stubborn))
    for c in (a, b):  # both have installed their handlers
        while not c.tail and c.proc.poll() is None:
            time.sleep(0.01)
    children.stop(timeout_s=1.0)
    assert a.proc.returncode == 0  # SIGINT: a clean exit
    assert b.proc.returncode == -signal.SIGKILL  # ignored SIGINT: killed


def test_children_stop_on_an_exception():
    from admn_ros.nodes.supervise import Children

    with pytest.raises(RuntimeError), Children(echo=lambda line: None) as children:
        c = children.start("sleeper", child("import time; time.sleep(60)"))
        raise RuntimeError("admn run failed")
    assert c.proc.poll() is not None


def test_run_record_from_the_nodes_last_diagnostics():
    from admn_ros.nodes.summary import RunRecord, apply_diagnostics, summarise

    rec = RunRecord()
    apply_diagnostics(rec, {
        "bag_player": {"frames": "3063", "messages": "3513", "done": "1"},
        "controller": {"samples": "450", "allocations": "447", "received": "3063",
                       "held": "1", "dropped.radar_missing": "2",
                       "dropped.bad_encoding": "1"},
        "fusion": {"received": "3060", "poses": "445", "waiting": "1",
                   "backbone_ms_p50": "40.2", "sensor_positions": "[1.0, 2.0, 3.0]",
                   "dropped.no_sample": "1", "dropped.bad_encoding": "1",
                   "dropped.model_error": "1"},
        "corruption_injector": {"windows": '[{"start_ns": 1, "end_ns": 2, "label": "x"}]'},
    })
    assert rec.frames_in == 3063 and rec.samples_synced == 450
    # fusion's own reasons only (the controller counted the bad frame already); an
    # allocation still waiting at the end is a sample without a pose
    # (and a camera set still waiting for its radar when the bag ended is counted as such)
    assert rec.dropped == {"radar_missing": 2, "bad_encoding": 1, "no_sample": 2,
                           "model_error": 1, "end_of_bag": 1}
    assert rec.extra["frames_received"] == {"controller": 3063, "fusion": 3060}
    assert rec.extra["sensors"] == [1.0, 2.0, 3.0] and rec.windows[0]["label"] == "x"
    assert summarise(rec)["backbone_ms_p50"] == 40.2
    empty = RunRecord()
    apply_diagnostics(empty, {"fusion": {"backbone_ms_p50": "nan"}})
    assert summarise(empty)["backbone_ms_p50"] is None and empty.frames_in == 0


def test_summary_compares_block_shares_inside_and_outside_injections():
    from admn_ros.nodes.summary import RunRecord, summarise

    def alloc(stamp: int, rgb: int, radar: int) -> dict:  # 2 modalities x 4 blocks
        return {"stamp_ns": stamp, "budget": rgb + radar, "controller_ms": 1.0,
                "active": [1] * rgb + [0] * (4 - rgb) + [1] * radar + [0] * (4 - radar)}

    rec = RunRecord(modalities=["rgb", "radar"], layers_per_modality=4,
                    windows=[{"start_ns": 10, "end_ns": 20, "label": "node1/rgb"}],
                    allocations=[alloc(0, 4, 4), alloc(5, 2, 2), alloc(10, 1, 3),
                                 alloc(15, 1, 1), alloc(20, 2, 2), alloc(25, 3, 1)])
    inj = summarise(rec)["injected"]
    assert inj["windows"] == ["node1/rgb"]
    # compared at equal budget only: the all-blocks allocation at 8 is not a reference
    assert inj["by_budget"] == {
        "2": {"samples_inside": 1, "share_inside": {"rgb": 0.5, "radar": 0.5},
              "samples_outside": 0, "share_outside": {}},
        "4": {"samples_inside": 1, "share_inside": {"rgb": 0.25, "radar": 0.75},
              "samples_outside": 3, "share_outside": {"rgb": 0.583, "radar": 0.417}}}
    assert summarise(RunRecord(modalities=["rgb"], allocations=[alloc(0, 1, 0)]))["injected"] == {}


def test_parameter_table_in_docs_matches_the_declarations():
    from admn_ros.nodes.params_doc import DOC, main, render

    text = (ROOT / DOC).read_text()
    assert text == render(), "stale: python -m admn_ros.nodes.params_doc --write"
    assert main(["--check"]) == 0
    # every declared parameter has its row, live ones marked (a sample of each kind)
    assert "| `policy` | `\"learned\"` |  | live |" in text
    assert "| `weights` | `\"models/admn_demo.pt\"` |  | read-only |" in text
