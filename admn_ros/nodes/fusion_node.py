"""Fusion node: a sample + its LayerAllocation (exact stamp) -> pose, markers, path.

The callbacks only buffer frames and pair them with allocations; a worker (`worker.Worker`:
bounded queue, freshness, catch-all) localises the complete pairs (oldest first) and
publishes, so frames keep being taken in while a sample is being localised (torch releases
the GIL while it computes). The worker's step times per active-block count feed the deadline
loop (`deadline.DeadlineBudget`), whose latency budget goes out on /admn/latency_budget.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import OrderedDict, deque

import numpy as np
from geometry_msgs.msg import Point, PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from visualization_msgs.msg import Marker, MarkerArray

from admn_ros.data.preprocess import Preprocess
from admn_ros.msg import ComputeBudget, LayerAllocation
from admn_ros.nodes.arrival import Arrivals
from admn_ros.nodes.common import (
    LATCHED_QOS,
    LIVE,
    NS,
    RELIABLE_QOS,
    SENSOR_QOS,
    Diagnostics,
    Drops,
    declare,
    spin_main,
    stamp_ns,
    to_stamp,
)
from admn_ros.nodes.deadline import DeadlineBudget, StepTimes
from admn_ros.nodes.frames import ground_to_map, world_to_map
from admn_ros.nodes.localise import (
    CM,
    Estimate,
    Localiser,
    active_from_msg,
    ellipse_points,
    pose_covariance,
)
from admn_ros.nodes.managed import AUTOSTART, ManagedNode
from admn_ros.nodes.models import load_admn
from admn_ros.nodes.samples import Prepared, StampedBuffer, sample_inputs
from admn_ros.nodes.sensors import (
    SENSOR_PARAMS,
    SLOW_MODALITIES,
    make_arrivals,
    sensor_keys,
    subscribe_sensors,
)
from admn_ros.nodes.sync import SyncedSample
from admn_ros.nodes.worker import WORKER_PARAMS, Worker, set_torch_threads, worker_status

PARAMS = {
    **SENSOR_PARAMS,
    **WORKER_PARAMS,
    "weights": ("ADMN checkpoint (backbones + fusion + head)",),
    "backend": ("inference backend: eager | compile | tensorrt | auto",),
    "pair_buffer": ("allocations waiting for their sample's frames (by exact stamp)", 1, 1000),
    "frame_buffer": ("recent frames kept per sensor topic", 2, 1000),
    "path_length": ("poses kept in admn/path", 1, 100000, LIVE),
    "frame_id": ("z-up frame (REP 103) of pose, markers and path; /tf_static links it to the "
                 "y-up OptiTrack world (docs/FRAMES.md)",),
    "sensor_positions": ("x, y, z of each sensor node in the OptiTrack world (y up), "
                         "flattened (markers)",),
    "ground_truth_max_age_s": ("ground truth older than this is not drawn", 0.0, 10.0, LIVE),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
    AUTOSTART[0]: AUTOSTART[1],
    "target_period_s": ("deadline loop: the period a fusion step must fit (the sensor "
                        "period); 0 = no deadline loop (offline)", 0.0, 10.0),
    "deadline_load": ("share of the target period a step may take", 0.05, 1.0),
    "deadline_hysteresis": ("relative margin around the load before the latency budget "
                            "changes", 0.0, 0.9),
    "deadline_dwell_s": ("shortest time before the latency budget steps up again, s",
                         0.0, 600.0),
    "deadline_window_s": ("step times older than this are forgotten, s", 0.1, 600.0),
    "deadline_min_samples": ("step times an active-block count needs before it is trusted",
                             1, 1000),
}
Job = tuple[int, SyncedSample, LayerAllocation]
BACKBONE_KEEP = 100_000  # poses in the backbone p50: all of a bag run, bounded when live


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class FusionNode(ManagedNode):
    """Managed node (`managed.ManagedNode`): configure loads the model and builds its engine
    and subscribes, activate localises, deactivate stops and forgets what was buffered."""

    def __init__(self, **kwargs) -> None:
        super().__init__("admn_fusion", **kwargs)
        self.p = declare(self, "admn_fusion", PARAMS, self.on_params)
        set_torch_threads(self.p["torch_threads"], self.p["torch_processes"])
        self.localiser: Localiser | None = None
        self.frames: StampedBuffer | None = None
        self.deadline: DeadlineBudget | None = None
        self.drops = Drops(self.get_logger())
        self.poses = 0
        self.backbone_ms: deque[float] = deque(maxlen=BACKBONE_KEEP)  # p50 in the diagnostics
        self.latency_ms: deque[float] = deque(maxlen=200)  # recent, for live monitoring
        self.truth: deque[tuple[int, float, float]] = deque(maxlen=64)
        self.nodes = list(self.p["sensor_nodes"])
        self.arrivals: Arrivals | None = None
        self.latency_changes = 0
        self.waiting: OrderedDict[int, LayerAllocation] = OrderedDict()
        self.path = Path()
        self.path.header.frame_id = self.p["frame_id"]
        self.worker: Worker[Job] = Worker(
            "localise", self.work, self.drops, lambda: self.get_clock().now().nanoseconds,
            self.p["max_queue"], int(self.p["max_age_s"] * NS))
        self.worker.start()
        self.diagnostics = Diagnostics(self, "localisation", self.diagnostic_values,
                                       self.p["diagnostics_period_s"],
                                       lambda: worker_status(self.worker, self.p["stuck_s"]))
        self.autostart(self.p["autostart"])

    def load(self) -> None:
        model = load_admn(self.p["weights"])
        self.localiser = Localiser(model, self.p["backend"])
        self.prepare = Prepared(Preprocess.from_config(model.cfg.backbone.img_size))
        self.keys = sensor_keys(self, model.cfg.modalities)
        self.frames = self.frame_buffer(self.p["sync_slop_s"])
        self.arrivals = make_arrivals(self, self.keys, self.drops)
        self.pubs = [self.create_lifecycle_publisher(cls, topic, RELIABLE_QOS) for cls, topic in
                     ((PoseWithCovarianceStamped, "admn/pose"), (MarkerArray, "admn/markers"),
                      (Path, "admn/path"))]
        self.pose_pub, self.marker_pub, self.path_pub = self.pubs
        self.deadline = deadline_loop(self.p, *model.cfg.network_budget_range)
        self.latency_pub = self.create_lifecycle_publisher(ComputeBudget, "admn/latency_budget",
                                                           LATCHED_QOS)
        self.subs = [self.create_subscription(LayerAllocation, "admn/allocation",
                                              self.on_allocation, RELIABLE_QOS),
                     self.create_subscription(PoseStamped, "mocap/car/pose", self.on_truth,
                                              SENSOR_QOS),
                     *subscribe_sensors(self, self.keys, self.on_frame, self.arrivals)]

    def reset(self) -> None:
        self.frames = self.frame_buffer(self.p["sync_slop_s"])
        self.waiting.clear()
        self.worker.clear()  # the samples not yet localised are given up, not kept for later

    def free(self) -> None:
        self.worker.clear()
        self.worker.wait_idle(self.p["stuck_s"])  # the job in progress uses what is freed
        for sub in self.subs:
            self.destroy_subscription(sub)
        for pub in (*self.pubs, self.latency_pub):
            self.destroy_lifecycle_publisher(pub)
        self.subs, self.pubs = [], []
        self.localiser = self.frames = self.deadline = self.arrivals = None

    def frame_buffer(self, slop_s: float) -> StampedBuffer:
        return StampedBuffer(self.keys, SLOW_MODALITIES, int(slop_s * NS),
                             int(self.p["radar_max_age_s"] * NS),
                             int(self.p["radar_min_period_s"] * NS), self.p["frame_buffer"],
                             int(self.p["stamp_tolerance_s"] * NS), self.p["stamp_jump_topics"])

    def on_params(self, changes: dict) -> None:
        """Live parameters (path length and ground-truth age are read where used): a new slop
        starts the frame buffer over (ValueError when it does not fit the radar period)."""
        if "sync_slop_s" in changes and self.frames is not None:
            self.frames = self.frame_buffer(changes["sync_slop_s"])
        if "diagnostics_period_s" in changes:
            self.diagnostics.set_period(changes["diagnostics_period_s"])

    # ---------------------------------------------------------------- callbacks
    def on_frame(self, key: tuple[str, str], stamp: int, frame) -> None:
        if not self.take():
            return
        for event in self.frames.add(key, stamp, frame):
            self.drops(event, "sensor stamps out of order (clock_backwards: buffers cleared)")
        if self.waiting:
            self.run_ready()

    def on_allocation(self, msg: LayerAllocation) -> None:
        if not self.take():
            return
        self.waiting[stamp_ns(msg.header.stamp)] = msg
        while len(self.waiting) > self.p["pair_buffer"]:
            self.waiting.popitem(last=False)
            self.drops("no_sample", "an allocation's frames never arrived")
        self.run_ready()

    def run_ready(self) -> None:
        """Localise the waiting allocations whose samples are complete, oldest first, up to
        the first still incomplete one (frames come in stamp order: the newer ones wait)."""
        for stamp in list(self.waiting):
            sample = self.frames.assemble(stamp)
            if sample is None:
                break
            if sample is False:
                self.waiting.pop(stamp)
                self.drops("no_sample", "a frame of the allocated sample was lost")
            else:
                self.worker.put(stamp, (stamp, sample, self.waiting.pop(stamp)))

    def on_truth(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.truth.append((stamp_ns(msg.header.stamp), p.x, p.z))

    # ---------------------------------------------------------------- worker thread
    def work(self, job: Job) -> None:
        """Localise and publish one paired sample; its step time feeds the deadline loop."""
        stamp, sample, alloc = job
        t0 = time.perf_counter()
        est = self.localise(sample, alloc)
        if est is None or not self.active:
            return
        self.publish(stamp, est)
        deadline = self.deadline
        if deadline is not None:
            t, layers = time.monotonic(), sum(alloc.active)
            deadline.steps.add(layers, (time.perf_counter() - t0) * 1e3, t)
            decision = deadline.update(layers, t)
            if decision.reason:
                self.publish_latency_budget(decision.layers, decision.reason)

    def publish_latency_budget(self, layers: int, reason: str) -> None:
        msg = ComputeBudget(layers=int(layers), power_w=math.nan, power_limit_w=math.nan,
                            temperature_c=math.nan, source="deadline", reason=reason)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.latency_pub.publish(msg)
        self.latency_changes += 1
        self.get_logger().info(f"latency budget {layers} layers ({reason})")

    def localise(self, sample: SyncedSample, alloc: LayerAllocation) -> Estimate | None:
        localiser = self.localiser  # one job runs on what was loaded when it started
        if localiser is None:
            return None
        model = localiser.model
        try:
            active = active_from_msg(alloc.active, alloc.modalities, alloc.layers_per_modality,
                                     model)
        except ValueError as exc:
            self.drops("bad_allocation", str(exc))
            return None
        try:
            inputs = sample_inputs(sample, model.cfg.modalities, self.nodes, self.prepare)
            return localiser(inputs, active)
        except (ValueError, RuntimeError) as exc:
            self.drops("model_error", str(exc))
        return None

    def publish(self, stamp: int, est: Estimate) -> None:
        frame = self.p["frame_id"]
        msg = PoseWithCovarianceStamped()
        msg.header.stamp = to_stamp(stamp, type(msg.header.stamp))
        msg.header.frame_id = frame
        msg.pose.pose.position.x, msg.pose.pose.position.y = map(
            float, ground_to_map(est.mean_cm * CM))
        msg.pose.pose.orientation.w = 1.0
        msg.pose.covariance = pose_covariance(est.cov_cm2)
        if self.path.poses and stamp < stamp_ns(self.path.poses[-1].header.stamp):
            self.path.poses = []  # clock went backwards (looping bag): start a new path
        self.pose_pub.publish(msg)
        self.poses += 1
        self.latency_ms.append((self.get_clock().now().nanoseconds - stamp) / 1e6)
        self.backbone_ms.append(est.backbone_ms)
        self.path.poses.append(PoseStamped(header=msg.header, pose=msg.pose.pose))
        del self.path.poses[: -self.p["path_length"]]
        self.path.header.stamp = msg.header.stamp
        if self.path_pub.get_subscription_count():  # ~9 ms for 2000 poses: only when watched
            self.path_pub.publish(self.path)
        self.marker_pub.publish(self.markers(msg, est))

    def markers(self, pose: PoseWithCovarianceStamped, est: Estimate) -> MarkerArray:
        h = pose.header
        out = MarkerArray()
        out.markers.append(marker(h, "prediction", 0, Marker.SPHERE, (0.1, 0.4, 1.0),
                                  pose.pose.pose.position, 0.15))
        ell = marker(h, "covariance", 0, Marker.LINE_STRIP, (0.1, 0.4, 1.0), None, 0.02)
        ell.points = [Point(x=float(x), y=float(y), z=0.01)
                      for x, y in ellipse_points(est.mean_cm, est.cov_cm2)]
        out.markers.append(ell)
        stamp, max_age = stamp_ns(h.stamp), self.p["ground_truth_max_age_s"] * NS
        near = [t for t in list(self.truth) if abs(t[0] - stamp) <= max_age]
        if near:
            _, x, z = min(near, key=lambda t: abs(t[0] - stamp))
            mx, my = map(float, ground_to_map((x, z)))  # OptiTrack world -> map
            out.markers.append(marker(h, "ground_truth", 0, Marker.SPHERE, (0.1, 0.9, 0.2),
                                      Point(x=mx, y=my, z=0.0), 0.12))
        xyz = world_to_map(np.reshape(self.p["sensor_positions"], (-1, 3)))
        for k, (x, y, z) in enumerate(xyz.tolist()):
            out.markers.append(marker(h, "sensor_nodes", k, Marker.CUBE, (0.9, 0.6, 0.1),
                                      Point(x=x, y=y, z=z), 0.2))
        return out

    def diagnostic_values(self) -> dict:
        """Totals for `admn run` and live monitoring (latencies: the last 200 poses)."""
        lat = list(self.latency_ms)
        return {**self.lifecycle_values(), "poses": self.poses,
                **(self.arrivals.values() if self.arrivals else {}),
                "waiting": len(self.waiting) + self.worker.health().queued,
                "latency_budget": self.deadline.layers if self.deadline else "",
                "latency_budget_changes": self.latency_changes,
                "backbone_ms_p50": round(percentile(self.backbone_ms, 50), 3),
                "latency_ms_p50": round(percentile(lat, 50), 2),
                "latency_ms_p95": round(percentile(lat, 95), 2),
                "backend": self.localiser.backend if self.localiser else "",
                "sensor_positions": json.dumps(list(self.p["sensor_positions"])),
                **{f"dropped.{k}": v for k, v in self.drops.snapshot().items()}}

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()


def deadline_loop(p: dict, min_layers: int, total_blocks: int) -> DeadlineBudget | None:
    """The deadline loop from the node's parameters (None offline: `target_period_s` 0)."""
    if not p["target_period_s"]:
        return None
    steps = StepTimes(p["deadline_window_s"], p["deadline_min_samples"])
    return DeadlineBudget(list(range(min_layers, total_blocks + 1)), p["target_period_s"],
                          p["deadline_load"], p["deadline_hysteresis"], p["deadline_dwell_s"],
                          steps)


def marker(header, ns: str, mid: int, kind: int, rgb, position, size: float) -> Marker:
    m = Marker(header=header, ns=ns, id=mid, type=kind, action=Marker.ADD)
    m.color.r, m.color.g, m.color.b, m.color.a = (*map(float, rgb), 1.0)
    if position is not None:
        m.pose.position = position
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = float(size)
    return m


def main(args=None) -> int:
    return spin_main(FusionNode, args)


if __name__ == "__main__":
    sys.exit(main())
