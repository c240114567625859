"""Real time: workers with bounded queues, freshness and a catch-all; the deadline budget.

The pure classes run on a simulated clock (a step "takes" time by moving the clock); the
nodes run in this process with a test backend that sleeps. Behaviour only: no assertion on
how long anything took.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from admn_ros.nodes.common import node_defaults
from admn_ros.nodes.deadline import DeadlineBudget, StepTimes, budget_in_force, round_down
from admn_ros.nodes.images import InputError
from admn_ros.nodes.localise import Estimate
from admn_ros.nodes.sync import SyncedSample
from admn_ros.nodes.worker import ERROR, Health, Worker, torch_threads, worker_status

ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
PERIOD_NS = NS // 15
NODES = ("node1", "node2", "node3")
COVERED = [*range(6, 17), 24]  # the shipped universal controller's budgets, and full depth


class Clock:
    """A simulated clock in ns."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


class Counts:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, text: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


# ------------------------------------------------------------------ worker
def test_worker_catches_everything_per_job_and_keeps_running():
    drops, done = Counts(), []

    def handle(job: str) -> None:
        if job == "type":
            raise TypeError("buffer is too small")  # numpy on a truncated frame
        if job == "input":
            raise InputError("bad_size", "short frame")
        done.append(job)

    w: Worker[str] = Worker("t", handle, drops, lambda: 0, 10, 0)
    w.start()
    for job in ("a", "type", "b", "input", "c"):
        w.put(0, job)
    assert w.wait_idle(10.0)
    assert done == ["a", "b", "c"]
    assert drops.counts == {"error_TypeError": 1, "bad_size": 1}
    assert w.health().alive and worker_status(w, 5.0)[0] == 0
    w.stop()
    assert not w.health().alive and worker_status(w, 5.0)[0] == ERROR


def test_worker_skips_a_job_that_would_finish_late_while_a_newer_one_waits():
    clock, drops, done = Clock(), Counts(), []
    w: Worker[str] = Worker("t", done.append, drops, clock, 10, 133_000_000)
    w.step_ns = 50e6  # jobs take 50 ms
    clock.ns = 200_000_000
    w.put(100_000_000, "old")  # 100 ms old: 150 ms when done
    w.put(170_000_000, "new")  # 30 ms old
    while w.step():
        pass
    assert done == ["new"] and drops.counts == {"stale": 1}
    w.put(90_000_000, "alone")  # 110 ms old, nothing newer: its turn is still in time
    w.step()
    assert done == ["new", "alone"]


def test_worker_status_reports_a_stuck_job_as_error():
    assert Health(True, 3, oldest_s=9.0, busy_s=0.0).stuck(5.0)
    assert Health(True, 0, oldest_s=0.0, busy_s=9.0).stuck(5.0)
    assert not Health(True, 3, oldest_s=1.0, busy_s=1.0).stuck(5.0)
    never_started: Worker[int] = Worker("t", lambda j: None, Counts(), lambda: 0, 1, 0)
    level, message, values = worker_status(never_started, 5.0)
    assert level == ERROR and "dead" in message and values["worker_alive"] == 0


def test_flooding_a_worker_keeps_its_queue_bounded_and_counts_drops():
    drops = Counts()
    w: Worker[int] = Worker("t", lambda j: None, drops, lambda: 0, 8, 0)  # never started
    for i in range(1000):  # a topic at 10x the rate the worker takes
        w.put(i, i)
        if i % 10 == 0:
            w.step()
    assert w.health().queued <= 8
    assert drops.counts["queue_full"] == 1000 - 100 - w.health().queued


def test_torch_threads_share_the_cores():
    assert torch_threads(0, 2, cores=2) == 1
    assert torch_threads(0, 2, cores=16) == 8
    assert torch_threads(0, 4, cores=2) == 1
    assert torch_threads(3, 2, cores=2) == 3


# ------------------------------------------------------------------ deadline budget
def test_step_times_predict_unmeasured_budgets_from_the_measured_ones():
    st = StepTimes(window_s=10.0, min_samples=3)
    assert st.predict(8, 0.0) is None
    for _ in range(3):
        st.add(6, 20.0, 0.0)
    assert st.predict(12, 0.0) == pytest.approx(40.0)  # one count: scaled, an over-estimate
    for _ in range(3):
        st.add(12, 32.0, 0.0)
    assert st.predict(9, 0.0) == pytest.approx(26.0)  # a line through both
    assert st.predict(24, 0.0) == pytest.approx(56.0)
    assert st.predict(9, 11.0) is None  # forgotten after the window


def simulate(slow_ms, seconds: float, clock: Clock, worker: Worker, deadline: DeadlineBudget,
             covered: list[int], log: list) -> None:
    """15 Hz samples into `worker`; each step takes 1 + 2 ms per block plus `slow_ms` (the
    sleeping backend), on the simulated clock; the budget in force follows the deadline loop."""
    end = clock.ns + int(seconds * NS)
    next_sample = clock.ns
    while clock.ns < end:
        while next_sample <= clock.ns:
            worker.put(next_sample, next_sample)
            next_sample += PERIOD_NS
        if not worker.step():
            clock.ns = next_sample
        log.append(budget_in_force(24, deadline.layers, covered, (3, 24))[0])


def test_a_slowed_step_drops_stale_samples_and_steps_the_latency_budget_down_then_up():
    clock, drops, covered = Clock(), Counts(), COVERED
    steps = StepTimes(window_s=2.0, min_samples=3)
    deadline = DeadlineBudget(list(range(3, 25)), 1 / 15, 0.8, 0.2, 1.0, steps)
    slow = {"ms": 0.0}
    ages: list[float] = []

    def fusion_step(stamp: int) -> None:
        layers = budget_in_force(24, deadline.layers, covered, (3, 24))[0]
        ms = 1.0 + 2.0 * layers + slow["ms"]
        clock.ns += int(ms * 1e6)
        ages.append((clock.ns - stamp) / 1e6)
        steps.add(layers, ms, clock.ns / NS)
        deadline.update(layers, clock.ns / NS)

    worker: Worker[int] = Worker("fusion", fusion_step, drops, clock, 10, 2 * PERIOD_NS)
    budgets: list[int] = []
    simulate(0.0, 5.0, clock, worker, deadline, covered, budgets)
    fast_budget = budgets[-1]
    assert fast_budget >= 16 and not drops.counts  # 1 + 2 * 16 ms fits 53 ms: nothing dropped

    slow["ms"] = 120.0  # slowed on purpose: no budget fits the period any more
    done, ages_before = worker.done, len(ages)
    simulate(120.0, 5.0, clock, worker, deadline, covered, budgets)
    assert drops.counts.get("stale", 0) > 10  # dropped, not delayed ...
    assert max(ages[ages_before:]) < 2 * PERIOD_NS / 1e6 + 1.0 + 2 * 24 + 120.0  # ... bounded
    assert worker.done - done > drops.counts["stale"]  # every sample had its turn
    assert budgets[-1] == min(covered) < fast_budget  # stepped down to the minimum

    slow["ms"] = 0.0  # the slowdown ends
    stale = drops.counts["stale"]
    simulate(0.0, 10.0, clock, worker, deadline, covered, budgets)
    # stepped back up, to the largest covered budget within the margin (1 + 2 x 20 <= 42.7 ms)
    assert budgets[-1] == 16
    assert drops.counts["stale"] - stale <= 2  # the backlog of the slow phase at most


def test_the_budget_in_force_is_the_smaller_limit_rounded_to_a_covered_budget():
    covered = COVERED
    assert round_down(20, covered) == 16 and round_down(4, covered) == 6
    assert budget_in_force(24, 12, covered, (3, 24)) == (12, "deadline")
    assert budget_in_force(8, 12, covered, (3, 24)) == (8, "power")
    assert budget_in_force(24, 20, covered, (3, 24)) == (16, "deadline")
    assert budget_in_force(24, None, covered, (3, 24)) == (24, "power")
    assert budget_in_force(999, 12, covered, (3, 24)) == (999, "power")  # reported downstream


def sample_inputs_for(cfg) -> dict[str, torch.Tensor]:
    s = cfg.backbone.img_size
    chans = {"rgb": 3, "depth": 1, "radar": 1}
    return {m: torch.rand(1, len(cfg.nodes), chans[m], s, s) for m in cfg.modalities}


def test_every_budget_the_deadline_loop_can_publish_gets_a_learned_allocation():
    from admn_ros.nodes.allocation import Allocator
    from admn_ros.nodes.models import controller_budgets, load_controllers

    paths = node_defaults("admn_controller")["controller_weights"]
    assert paths == node_defaults("admn_power_monitor")["controller_weights"]
    covered, possible = controller_budgets(paths)
    universal, per_budget = load_controllers(paths)
    assert universal is not None  # the universal controller is the graph's default
    cfg = universal.cfg
    alloc = Allocator(cfg, universal, per_budget)
    levels = node_defaults("admn_power_monitor")["levels_layers"]
    publishable = {budget_in_force(power, latency, covered, possible)[0]
                   for power in levels for latency in range(possible[0], possible[1] + 1)}
    inputs = sample_inputs_for(cfg)
    for layers in sorted(publishable):
        out = alloc(inputs, layers)
        assert out.controller.startswith("learned") or (
            out.controller == "upper_bound" and layers == cfg.total_blocks), (layers, out)
        assert int(out.active.sum()) == layers


# ------------------------------------------------------------------ the nodes, in this process
class Img:
    """A sensor_msgs/Image look-alike (the decoders read these fields)."""

    def __init__(self, arr: np.ndarray, encoding: str) -> None:
        self.height, self.width = arr.shape[:2]
        self.encoding, self.is_bigendian = encoding, 0
        self.step = arr.shape[1] * (arr.shape[2] if arr.ndim == 3 else 1) * arr.itemsize
        self.data = arr.tobytes()


def make_sample(stamp: int) -> SyncedSample:
    """A synchronised sample as the nodes hold it: frames decoded on arrival."""
    from admn_ros.nodes.images import decode

    rng = np.random.default_rng(stamp % 1000)
    msgs = {}
    for n in NODES:
        msgs[(n, "rgb")] = Img(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "rgb8")
        msgs[(n, "depth")] = Img(rng.integers(500, 4000, (32, 32), dtype=np.uint16), "16UC1")
        msgs[(n, "radar")] = Img(rng.random((16, 16), dtype=np.float32) + 0.1, "32FC1")
    frames = {k: decode(k[1], m).array for k, m in msgs.items()}
    return SyncedSample(stamp, frames, dict.fromkeys(frames, stamp))


def truncated_rgb() -> Img:
    """An rgb8 frame whose data is shorter than its size says."""
    img = Img(np.zeros((32, 32, 3), np.uint8), "rgb8")
    img.data = img.data[:100]
    return img


@pytest.fixture
def ros():
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def cv_bridge_decoder(monkeypatch):
    """The decoder raises TypeError on a truncated frame, as cv_bridge's CvBridgeError does."""
    from admn_ros.nodes import images

    real = images._to_numpy

    def decode(msg):
        if len(msg.data) < msg.step * msg.height:
            raise TypeError("buffer is too small for requested array")
        return real(msg)

    monkeypatch.setattr(images, "_to_numpy", decode)


class Raising:
    """Stands in for a localiser or an allocator: its attributes, but every call raises."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def __call__(self, *args):
        raise TypeError("raised on purpose")


def fusion_job(node, stamp: int, layers: int | None = None):
    """A paired (stamp, sample, allocation) job of `layers` blocks (default all)."""
    from admn_ros.msg import LayerAllocation

    cfg = node.localiser.model.cfg
    active = np.zeros((cfg.num_modalities, cfg.depth), bool)
    for j in range(layers or cfg.total_blocks):  # block 0 of every modality first
        active[j % cfg.num_modalities, j // cfg.num_modalities] = True
    msg = LayerAllocation(modalities=list(cfg.modalities), layers_per_modality=cfg.depth,
                          active=active.flatten().tolist(), budget=int(active.sum()))
    return stamp, make_sample(stamp), msg


def test_a_type_error_in_a_job_is_counted_and_the_fusion_node_goes_on(ros, cv_bridge_decoder):
    from rclpy.parameter import Parameter

    from admn_ros.nodes.fusion_node import FusionNode

    node = FusionNode(parameter_overrides=[Parameter("max_age_s", value=0.0),
                                           Parameter("target_period_s", value=0.0)])
    try:
        real = node.localiser
        now = node.get_clock().now().nanoseconds
        assert node.arrivals(("node1", "rgb"), now, truncated_rgb()) is None  # counted on arrival
        for i in range(6):
            node.worker.put(i, fusion_job(node, i))
        assert node.worker.wait_idle(60.0)
        node.localiser = Raising(real)
        node.worker.put(6, fusion_job(node, 6))
        assert node.worker.wait_idle(60.0)
        node.localiser = real
        node.worker.put(7, fusion_job(node, 7))
        assert node.worker.wait_idle(60.0)
        drops = node.drops.snapshot()
        assert drops == {"bad_size": 1, "error_TypeError": 1}
        assert node.poses == 7  # every other sample, before and after
        assert node.worker.health().alive
    finally:
        node.destroy_node()


def test_a_type_error_in_a_job_is_counted_and_the_controller_node_goes_on(ros,
                                                                         cv_bridge_decoder):
    from rclpy.parameter import Parameter

    from admn_ros.nodes.controller_node import ControllerNode

    node = ControllerNode(parameter_overrides=[Parameter("max_age_s", value=0.0),
                                               Parameter("initial_budget", value=12)])
    try:
        now = node.get_clock().now().nanoseconds
        assert node.inputs.arrivals(("node1", "rgb"), now, truncated_rgb()) is None
        for _ in range(5):
            node.on_sample(make_sample(node.get_clock().now().nanoseconds))
        real = node.allocator
        assert node.worker.wait_idle(60.0)
        node.allocator = Raising(real)
        node.on_sample(make_sample(node.get_clock().now().nanoseconds))
        assert node.worker.wait_idle(60.0)
        node.allocator = real
        node.on_sample(make_sample(node.get_clock().now().nanoseconds))
        assert node.worker.wait_idle(60.0)
        assert node.drops.snapshot() == {"bad_size": 1, "error_TypeError": 1}
        assert node.stats["allocations"] == 6 and node.worker.health().alive
        assert real.budgets()  # learned: the universal controller chose the blocks
    finally:
        node.destroy_node()


class SleepingLocaliser:
    """The test backend: the fusion step sleeps `delay_s`, then returns a fixed estimate."""

    def __init__(self, model) -> None:
        self.model, self.backend, self.delay_s = model, "sleeping", 0.0

    def __call__(self, inputs, active) -> Estimate:
        time.sleep(self.delay_s)
        return Estimate(np.zeros(2), np.eye(2), self.delay_s * 1e3)


def test_fusion_node_with_a_sleeping_backend_drops_stale_samples_and_adapts_its_budget(ros):
    from rclpy.parameter import Parameter

    from admn_ros.nodes.fusion_node import FusionNode

    node = FusionNode(parameter_overrides=[
        Parameter("deadline_window_s", value=2.0), Parameter("deadline_dwell_s", value=0.2),
        Parameter("deadline_min_samples", value=3)])
    published: list[int] = []
    real_publish = node.publish_latency_budget
    node.publish_latency_budget = lambda layers, reason: (published.append(layers),
                                                          real_publish(layers, reason))
    backend = node.localiser = SleepingLocaliser(node.localiser.model)

    def feed(seconds: float) -> None:
        """Samples at 15 Hz, each allocated the latency budget in force."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            job = fusion_job(node, node.get_clock().now().nanoseconds, node.deadline.layers)
            node.worker.put(job[0], job)
            time.sleep(1 / 15)
        node.worker.wait_idle(30.0)

    try:
        backend.delay_s = 0.4  # slowed on purpose: six sensor periods per step
        feed(3.0)
        drops = node.drops.snapshot()
        assert drops.get("stale", 0) >= 10 and set(drops) == {"stale"}
        assert published and published[-1] < node.localiser.model.cfg.total_blocks  # stepped down
        low = published[-1]
        backend.delay_s = 0.0  # the slowdown ends
        feed(3.0)
        assert published[-1] > low  # ... and back up
    finally:
        node.destroy_node()


class Gated(Raising):
    """Stands in for the allocator: every call waits until the gate opens."""

    def __init__(self, real) -> None:
        super().__init__(real)
        self.gate, self.entered = threading.Event(), threading.Event()

    def __call__(self, *args):
        self.entered.set()
        self.gate.wait(60.0)
        return self.real(*args)


def test_flooding_the_controllers_sensor_topic_keeps_its_queues_bounded(ros):
    from rclpy.parameter import Parameter

    from admn_ros.nodes.controller_node import ControllerNode

    node = ControllerNode(parameter_overrides=[Parameter("max_age_s", value=0.0)])
    node.allocator = gated = Gated(node.allocator)  # the worker is busy with its first job
    try:
        sample = make_sample(0)
        node.on_sample(sample)
        assert gated.entered.wait(60.0)
        key = ("node1", "rgb")
        for i in range(10 * 150):  # 10 s of one camera topic at 10x its rate
            node.inputs.add(key, i * PERIOD_NS // 10, sample.msgs[key])
            node.on_sample(SyncedSample(i, sample.msgs, sample.stamps))
        queues = [len(q) for q in node.inputs.sync.sync.queues]
        assert max(queues) <= node.get_parameter("sync_queue_size").value
        assert node.worker.health().queued <= node.get_parameter("max_queue").value
        drops = node.drops.snapshot()  # the flooded topic's sets never complete: counted too
        assert drops["queue_full"] == 10 * 150 - node.worker.health().queued
        assert set(drops) == {"queue_full", "incomplete_set"}
    finally:
        gated.gate.set()
        node.destroy_node()



def test_a_frame_shared_by_samples_is_preprocessed_once(monkeypatch):
    from admn_ros.data.preprocess import Preprocess
    from admn_ros.nodes import samples

    prepared = []
    real = Preprocess.numpy
    monkeypatch.setattr(Preprocess, "numpy",
                        lambda self, m, a: (prepared.append(m), real(self, m, a))[1])
    prepare = samples.Prepared(Preprocess.from_config(16))
    first, second = make_sample(1), make_sample(2)
    for n in NODES:  # the second camera set shares the first one's radar frames
        second.msgs[(n, "radar")] = first.msgs[(n, "radar")]
        second.stamps[(n, "radar")] = first.stamps[(n, "radar")]
    a = samples.sample_inputs(first, ["rgb", "depth", "radar"], list(NODES), prepare)
    b = samples.sample_inputs(second, ["rgb", "depth", "radar"], list(NODES), prepare)
    assert prepared.count("radar") == 3 and prepared.count("rgb") == 6
    assert torch.equal(a["radar"], b["radar"]) and not torch.equal(a["rgb"], b["rgb"])


def test_offline_replays_keep_every_sample_and_real_time_is_the_default():
    from admn_ros.nodes.graph import GraphOptions, describe_graph

    def params(opt: GraphOptions) -> dict[str, dict]:
        return {s.name: s.parameters[1] for s in describe_graph(opt)}

    live = params(GraphOptions(bag="x.mcap"))
    assert "max_age_s" not in live["admn_fusion"]  # config/nodes.yaml: freshness on
    assert node_defaults("admn_fusion")["max_age_s"] > 0
    assert node_defaults("admn_fusion")["target_period_s"] > 0
    offline = params(GraphOptions(bag="x.mcap", offline=True))
    for name in ("admn_controller", "admn_fusion"):
        assert offline[name]["max_age_s"] == 0.0 and offline[name]["max_queue"] >= 10_000
    assert offline["admn_fusion"]["target_period_s"] == 0.0  # no deadline loop
    mine = params(GraphOptions(bag="x.mcap", controller_weights=["c.pt"]))
    assert mine["admn_power_monitor"]["controller_weights"] == ["c.pt"]  # rounds to what they cover


def test_summary_reports_latency_by_third_budget_changes_by_reason_and_cpu_per_sample():
    from admn_ros.nodes.summary import RunRecord, apply_diagnostics, summarise

    rec = RunRecord(poses=[{"stamp_ns": i * PERIOD_NS, "latency_ms": float(lat), "x_cm": 0.0,
                            "z_cm": 0.0} for i, lat in enumerate([50, 60, 70, 80, 90, 300])])
    rec.budget_log["in_force"] = [(0, 24, "power: mains"), (1, 6, "deadline: step 90 ms"),
                                  (2, 6, "deadline: step 90 ms"), (3, 12, "deadline: fits"),
                                  (4, 8, "power: battery sag")]
    apply_diagnostics(rec, {"controller": {"cpu_s": "4.0", "dropped.stale": "2"},
                            "fusion": {"cpu_s": "5.0", "dropped.stale": "3",
                                       "dropped.error_TypeError": "1"},
                            "bag_player": {"cpu_s": "3.0"}})
    rec.extra["graph_cpu_s_at_start"] = 6.0
    s = summarise(rec)
    assert s["latency_ms"]["max"] == 300.0
    assert s["latency_ms"]["first_third"]["max"] == 60.0
    assert s["latency_ms"]["last_third"]["max"] == 300.0
    assert s["budget_changes_by_reason"] == {"deadline": 2, "power": 1}
    assert s["stale_drops"] == 5 and s["dropped"]["error_TypeError"] == 1
    assert s["cpu_s_per_sample"] == 1.0  # (4 + 5 + 3 - 6) s over 6 poses
    assert s["sustained_rate_hz"] == 15.0
