"""The nodes as a ROS user drives them, in one process over the real RMW: live parameters
that act, read-only and out-of-range values refused with their reason, the lifecycle of the
controller and fusion nodes, and poses in the z-up map frame."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from admn_ros.msg import ComputeBudget, LayerAllocation
from geometry_msgs.msg import PoseWithCovarianceStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import Image

from admn_ros.core.checkpoint import save_checkpoint
from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.data.bag import gdtm_to_bag
from admn_ros.data.testing import make_tiny_recording
from admn_ros.nodes.common import LATCHED_QOS, RELIABLE_QOS, REPLAY_SENSOR_QOS, stamp_ns
from admn_ros.nodes.frames import map_to_ground

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
OK = TransitionCallbackReturn.SUCCESS
WAIT_S = 60.0  # upper bound of every wait (a shared, busy machine); none is a timing check


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny weights and the frames of a tiny recording, in bag order: [(topic, raw CDR)]."""
    d = tmp_path_factory.mktemp("managed")
    torch.manual_seed(0)
    cfg = load_model_config(ROOT / "config/model/demo.yaml")
    save_checkpoint(d / "admn.pt", ADMN(cfg))
    save_checkpoint(d / "controller_L12.pt", Controller(cfg), meta={"budget": 12})
    bag = gdtm_to_bag(make_tiny_recording(d, frames=40), d / "tiny.mcap", progress=False)
    with AnyReader([bag]) as r:
        frames = [(c.topic, bytes(raw)) for c, _, raw in r.messages()
                  if c.msgtype == "sensor_msgs/msg/Image" and "range_azimuth" not in c.topic]
    return d, frames


@pytest.fixture
def ros():
    rclpy.init()
    executor = SingleThreadedExecutor()
    yield executor
    for node in list(executor.get_nodes()):
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()
    rclpy.shutdown()


def spin_until(executor, cond: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.05)
    return True


class Probe:
    """A plain node that plays frames and listens to the graph's outputs."""

    def __init__(self, executor, frames) -> None:
        self.node = rclpy.create_node("admn_test_probe")
        executor.add_node(self.node)
        self.executor = executor
        self.pubs = {t: self.node.create_publisher(Image, t.lstrip("/"), REPLAY_SENSOR_QOS)
                     for t in dict(frames)}
        self.allocations: list[LayerAllocation] = []
        self.poses: list[PoseWithCovarianceStamped] = []
        self.budgets: list[ComputeBudget] = []
        self.node.create_subscription(LayerAllocation, "admn/allocation",
                                      self.allocations.append, RELIABLE_QOS)
        self.node.create_subscription(PoseWithCovarianceStamped, "admn/pose",
                                      self.poses.append, RELIABLE_QOS)
        self.node.create_subscription(ComputeBudget, "admn/budget", self.budgets.append,
                                      LATCHED_QOS)

    def play(self, frames) -> set[int]:
        """Publish the frames (once each reader is matched); returns the camera stamps sent."""
        spin_until(self.executor, lambda: all(p.get_subscription_count() >= 1
                                              for p in self.pubs.values()))
        stamps = set()
        for topic, raw in frames:
            self.pubs[topic].publish(raw)
            self.executor.spin_once(timeout_sec=0.0)
            if "color" in topic:
                stamps.add(stamp_ns(deserialize_header(raw)))
        return stamps

    def settle(self, quiet_s: float = 2.0) -> None:
        """Spin until no output arrived for `quiet_s` (bounded)."""
        count, since = -1, time.monotonic()
        deadline = since + WAIT_S
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            n = len(self.allocations) + len(self.poses)
            if n != count:
                count, since = n, time.monotonic()
            self.executor.spin_once(timeout_sec=0.05)


def deserialize_header(raw: bytes):
    from rclpy.serialization import deserialize_message
    return deserialize_message(raw, Image).header.stamp


def overrides(**values) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def model_params(d: Path, **extra) -> list[Parameter]:
    """Bag-stamped frames replayed without a /clock: sim time at zero (no stamp check against
    the node's clock) and offline (no freshness drops)."""
    return overrides(weights=str(d / "admn.pt"), sensor_reliability="reliable", max_age_s=0.0,
                     use_sim_time=True, **extra)


# ------------------------------------------------------------------ parameters
def test_live_manual_budget_acts_and_read_only_or_out_of_range_values_are_refused(ros):
    from admn_ros.nodes.power_monitor_node import PowerMonitorNode

    node = PowerMonitorNode(parameter_overrides=overrides(source="simulated", period_s=0.1))
    ros.add_node(node)
    probe = Probe(ros, [])
    assert spin_until(ros, lambda: bool(probe.budgets))
    assert probe.budgets[-1].source == "simulated"

    res = node.set_parameters([Parameter("manual_budget", value=8)])[0]
    assert res.successful, res.reason
    assert spin_until(ros, lambda: probe.budgets[-1].layers == 8)
    assert probe.budgets[-1].source == "manual"

    res = node.set_parameters([Parameter("source", value="rapl")])[0]
    assert not res.successful and "read-only" in res.reason
    assert node.get_parameter("source").value == "simulated"
    res = node.set_parameters([Parameter("manual_budget", value=5000)])[0]
    assert not res.successful and "range" in res.reason
    assert node.get_parameter("manual_budget").value == 8

    res = node.set_parameters([Parameter("manual_budget", value=0)])[0]  # back to the source
    assert res.successful
    assert spin_until(ros, lambda: probe.budgets[-1].source == "simulated")


def test_live_policy_changes_the_allocations_and_a_bad_one_is_refused_with_its_reason(
        ros, work):
    from admn_ros.nodes.controller_node import ControllerNode

    d, frames = work
    node = ControllerNode(parameter_overrides=model_params(
        d, controller_weights=[str(d / "controller_L12.pt")], initial_budget=12))
    ros.add_node(node)
    probe = Probe(ros, frames)
    half = len(frames) // 2
    probe.play(frames[:half])
    assert spin_until(ros, lambda: bool(probe.allocations))
    assert {m.controller for m in probe.allocations} == {"learned-L12"}

    res = node.set_parameters([Parameter("policy", value="nonsense")])[0]
    assert not res.successful and "expected one of" in res.reason
    res = node.set_parameters([Parameter("sync_slop_s", value=0.5)])[0]  # > radar period / 2
    assert not res.successful and "min_period" in res.reason
    assert node.get_parameter("sync_slop_s").value == pytest.approx(0.04)

    res = node.set_parameters([Parameter("policy", value="naive")])[0]
    assert res.successful, res.reason
    probe.settle()
    before = len(probe.allocations)
    probe.play(frames[half:])
    assert spin_until(ros, lambda: len(probe.allocations) > before)
    assert {m.controller for m in probe.allocations[before:]} == {"naive"}
    assert all(sum(m.active) == 12 for m in probe.allocations)


# ------------------------------------------------------------------ lifecycle
def test_lifecycle_configure_activate_deactivate_activate_cleanup(ros, work):
    from admn_ros.nodes.controller_node import ControllerNode
    from admn_ros.nodes.fusion_node import FusionNode

    d, frames = work
    ctl = ControllerNode(parameter_overrides=model_params(d, autostart=False))
    fus = FusionNode(parameter_overrides=model_params(d, autostart=False, backend="eager"))
    for n in (ctl, fus):
        ros.add_node(n)
    probe = Probe(ros, frames)
    assert (ctl.state, fus.state) == ("unconfigured", "unconfigured")
    assert ctl.allocator is None and fus.localiser is None  # nothing loaded yet

    thirds = [frames[i * len(frames) // 4:(i + 1) * len(frames) // 4] for i in range(4)]
    # a lifecycle manager's way: the node's change_state service (ros2 lifecycle set ...)
    client = probe.node.create_client(ChangeState, "admn_controller/change_state")
    assert client.wait_for_service(timeout_sec=WAIT_S)
    future = client.call_async(ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    assert spin_until(ros, future.done) and future.result().success
    assert fus.trigger_configure() == OK
    assert (ctl.state, fus.state) == ("inactive", "inactive")
    assert ctl.allocator is not None and fus.localiser is not None
    probe.play(thirds[0])  # inactive: taken in by nobody
    probe.settle()
    assert probe.allocations == [] and probe.poses == []
    assert ctl.ignored > 0 and fus.ignored > 0

    for n in (ctl, fus):
        assert n.trigger_activate() == OK and n.state == "active"
    sent = probe.play(thirds[1])
    probe.settle()
    assert probe.allocations and len(probe.poses) == len(probe.allocations)
    assert {stamp_ns(m.header.stamp) for m in probe.allocations} <= sent

    for n in (ctl, fus):
        assert n.trigger_deactivate() == OK and n.state == "inactive"
    assert fus.localiser is not None  # deactivate keeps what was loaded
    done = len(probe.allocations), len(probe.poses)
    # while inactive: ignored, not queued for later. Without their radar these camera sets
    # would wait for the next radar frame (the first of the next quarter) if they were kept.
    probe.play([f for f in thirds[2] if "radar" not in f[0]])
    probe.settle()
    assert (len(probe.allocations), len(probe.poses)) == done

    for n in (ctl, fus):
        assert n.trigger_activate() == OK
    sent = probe.play(thirds[3])
    probe.settle()
    fresh = {stamp_ns(m.header.stamp) for m in probe.allocations[done[0]:]}
    assert fresh and fresh <= sent  # only frames that arrived after the second activation
    assert {stamp_ns(m.header.stamp) for m in probe.poses[done[1]:]} == fresh

    for n in (ctl, fus):
        assert n.trigger_deactivate() == OK
        assert n.trigger_cleanup() == OK and n.state == "unconfigured"
    assert ctl.allocator is None and fus.localiser is None
    assert all(p.get_subscription_count() == 0 for p in probe.pubs.values())
    assert fus.diagnostic_values()["state"] == "unconfigured"


# ------------------------------------------------------------------ frames
def test_poses_are_in_the_z_up_map_frame_with_the_covariance_in_the_xy_block(ros, work):
    from admn_ros.nodes.fusion_node import FusionNode
    from admn_ros.nodes.localise import Estimate

    d, _ = work
    fus = FusionNode(parameter_overrides=model_params(d, backend="eager"))
    ros.add_node(fus)
    probe = Probe(ros, [])
    # a known estimate on the OptiTrack ground plane: x = 1.5 m, z = -2.0 m (cm in the model)
    cov = np.array([[400.0, 100.0], [100.0, 900.0]])
    assert spin_until(ros, lambda: fus.pose_pub.get_subscription_count() >= 1)
    fus.publish(1_000_000_000, Estimate(np.array([150.0, -200.0]), cov, 1.0))
    assert spin_until(ros, lambda: bool(probe.poses))
    msg = probe.poses[0]
    p = msg.pose.pose.position
    assert msg.header.frame_id == "map"
    assert (p.x, p.y, p.z) == pytest.approx((1.5, 2.0, 0.0))  # map y = -world z, z up
    c = np.array(msg.pose.covariance).reshape(6, 6)
    assert c[:2, :2] == pytest.approx(np.array([[0.04, -0.01], [-0.01, 0.09]]))
    assert c[0, 2] == c[1, 2] == 0.0 and c[2, 2] < c[0, 0]  # the floor: z barely uncertain
    assert map_to_ground((p.x, p.y)) == pytest.approx((1.5, -2.0))


def test_frames_node_latches_world_to_map_on_tf_static(ros):
    tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not among the ROS "
                                   "wheels here; every ROS install has it")
    from admn_ros.nodes.frames import WORLD_TO_MAP
    from admn_ros.nodes.frames_node import FramesNode

    ros.add_node(FramesNode())
    probe = rclpy.create_node("admn_test_tf")
    ros.add_node(probe)
    got = []
    probe.create_subscription(tf2_msgs.TFMessage, "/tf_static", got.append, LATCHED_QOS)
    assert spin_until(ros, lambda: bool(got))  # transient local: a late joiner gets it
    by_child = {t.child_frame_id: t for t in got[0].transforms}
    assert {t.header.frame_id for t in got[0].transforms} == {"world"}
    assert set(by_child) == {"map", "node1", "node2", "node3"}  # sensor_tf: live default
    t = by_child["map"]
    q = t.transform.rotation
    w, x, y, z = q.w, q.x, q.y, q.z
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    assert rot == pytest.approx(WORLD_TO_MAP.T)  # p_world = R p_map
