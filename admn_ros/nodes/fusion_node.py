"""Fusion node: a sample + its LayerAllocation (exact stamp) -> pose, markers, path.

The callbacks only buffer frames and pair them with allocations; a worker thread localises
the complete pairs (oldest first) and publishes, so frames keep being taken in while a
sample is being localised (torch releases the GIL while it computes).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections import OrderedDict, deque

import numpy as np
from geometry_msgs.msg import Point, PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from visualization_msgs.msg import Marker, MarkerArray

from admn_ros.data.preprocess import Preprocess
from admn_ros.msg import LayerAllocation
from admn_ros.nodes.common import (
    NS,
    RELIABLE_QOS,
    SENSOR_QOS,
    Diagnostics,
    Drops,
    declare,
    params,
    spin_main,
    stamp_ns,
    to_stamp,
)
from admn_ros.nodes.localise import (
    CM,
    Estimate,
    Localiser,
    active_from_msg,
    ellipse_points,
    pose_covariance,
)
from admn_ros.nodes.models import load_admn
from admn_ros.nodes.samples import StampedBuffer, sample_inputs
from admn_ros.nodes.sensors import (
    SENSOR_PARAMS,
    SLOW_MODALITIES,
    make_arrivals,
    sensor_keys,
    subscribe_sensors,
)
from admn_ros.nodes.sync import SyncedSample

PARAMS = {
    **SENSOR_PARAMS,
    "weights": ("ADMN checkpoint (backbones + fusion + head)",),
    "backend": ("inference backend: eager | compile | tensorrt | auto",),
    "pair_buffer": ("allocations waiting for their sample's frames (by exact stamp)", 1, 1000),
    "frame_buffer": ("recent frames kept per sensor topic", 2, 1000),
    "path_length": ("poses kept in /admn/path", 1, 100000),
    "frame_id": ("frame of the published pose (world = OptiTrack frame, metres, y up)",),
    "sensor_positions": ("x, y, z of each sensor node in `frame_id`, flattened (markers)",),
    "ground_truth_max_age_s": ("ground truth older than this is not drawn", 0.0, 10.0),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0),
}
BACKBONE_KEEP = 100_000  # poses in the backbone p50: all of a bag run, bounded when live


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class FusionNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_fusion", **kwargs)
        declare(self, "admn_fusion", PARAMS)
        self.p = params(self, PARAMS)
        model = load_admn(self.p["weights"])
        self.localiser = Localiser(model, self.p["backend"])
        self.pre = Preprocess.from_config(model.cfg.backbone.img_size)
        self.drops = Drops(self.get_logger())
        self.poses = 0
        self.backbone_ms: deque[float] = deque(maxlen=BACKBONE_KEEP)  # p50 in the diagnostics
        self.latency_ms: deque[float] = deque(maxlen=200)  # recent, for live monitoring
        self.truth: deque[tuple[int, float, float]] = deque(maxlen=64)
        self.nodes = list(self.p["sensor_nodes"])
        self.keys = sensor_keys(self, model.cfg.modalities)
        self.frames = StampedBuffer(self.keys, SLOW_MODALITIES, int(self.p["sync_slop_s"] * NS),
                                    int(self.p["radar_max_age_s"] * NS),
                                    int(self.p["radar_min_period_s"] * NS), self.p["frame_buffer"],
                                    int(self.p["stamp_tolerance_s"] * NS),
                                    self.p["stamp_jump_topics"])
        self.waiting: OrderedDict[int, LayerAllocation] = OrderedDict()
        self.path = Path()
        self.path.header.frame_id = self.p["frame_id"]
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "/admn/pose", RELIABLE_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, "/admn/markers", RELIABLE_QOS)
        self.path_pub = self.create_publisher(Path, "/admn/path", RELIABLE_QOS)
        self.create_subscription(LayerAllocation, "/admn/allocation", self.on_allocation,
                                 RELIABLE_QOS)
        self.create_subscription(PoseStamped, "/mocap/car/pose", self.on_truth, SENSOR_QOS)
        self.arrivals = make_arrivals(self, self.keys, self.drops)
        self.subs = subscribe_sensors(self, self.keys, self.on_frame, self.arrivals)
        self.jobs: queue.Queue[tuple[int, SyncedSample, LayerAllocation] | None] = queue.Queue()
        self.worker = threading.Thread(target=self.work, daemon=True)
        self.worker.start()
        self.diagnostics = Diagnostics(self, "localisation", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])

    # ---------------------------------------------------------------- callbacks
    def on_frame(self, key: tuple[str, str], stamp: int, frame) -> None:
        for event in self.frames.add(key, stamp, frame):
            self.drops(event, "sensor stamps out of order (clock_backwards: buffers cleared)")
        if self.waiting:
            self.run_ready()

    def on_allocation(self, msg: LayerAllocation) -> None:
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
                self.jobs.put((stamp, sample, self.waiting.pop(stamp)))

    def on_truth(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.truth.append((stamp_ns(msg.header.stamp), p.x, p.z))

    # ---------------------------------------------------------------- worker thread
    def work(self) -> None:
        """Localise and publish the paired samples in order, until `None` is queued."""
        while (job := self.jobs.get()) is not None:
            stamp, sample, alloc = job
            est = self.localise(sample, alloc)
            if est is not None:
                self.publish(stamp, est)

    def localise(self, sample: SyncedSample, alloc: LayerAllocation) -> Estimate | None:
        model = self.localiser.model
        try:
            active = active_from_msg(alloc.active, alloc.modalities, alloc.layers_per_modality,
                                     model)
        except ValueError as exc:
            self.drops("bad_allocation", str(exc))
            return None
        try:
            inputs = sample_inputs(sample, model.cfg.modalities, self.nodes, self.pre)
            return self.localiser(inputs, active)
        except (ValueError, RuntimeError) as exc:
            self.drops("model_error", str(exc))
        return None

    def publish(self, stamp: int, est: Estimate) -> None:
        frame = self.p["frame_id"]
        msg = PoseWithCovarianceStamped()
        msg.header.stamp = to_stamp(stamp, type(msg.header.stamp))
        msg.header.frame_id = frame
        msg.pose.pose.position.x = float(est.mean_cm[0] * CM)
        msg.pose.pose.position.z = float(est.mean_cm[1] * CM)
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
        ell.points = [Point(x=float(x), y=0.01, z=float(z))
                      for x, z in ellipse_points(est.mean_cm, est.cov_cm2)]
        out.markers.append(ell)
        stamp, max_age = stamp_ns(h.stamp), self.p["ground_truth_max_age_s"] * NS
        near = [t for t in list(self.truth) if abs(t[0] - stamp) <= max_age]
        if near:
            _, x, z = min(near, key=lambda t: abs(t[0] - stamp))
            out.markers.append(marker(h, "ground_truth", 0, Marker.SPHERE, (0.1, 0.9, 0.2),
                                      Point(x=x, y=0.0, z=z), 0.12))
        xyz = list(self.p["sensor_positions"])
        for k in range(len(xyz) // 3):
            out.markers.append(marker(h, "sensor_nodes", k, Marker.CUBE, (0.9, 0.6, 0.1),
                                      Point(x=xyz[3 * k], y=xyz[3 * k + 1], z=xyz[3 * k + 2]),
                                      0.2))
        return out

    def diagnostic_values(self) -> dict:
        """Totals for `admn run` and live monitoring (latencies: the last 200 poses)."""
        lat = list(self.latency_ms)
        return {"poses": self.poses, **self.arrivals.values(),
                "waiting": len(self.waiting) + self.jobs.qsize(),
                "backbone_ms_p50": round(percentile(self.backbone_ms, 50), 3),
                "latency_ms_p50": round(percentile(lat, 50), 2),
                "latency_ms_p95": round(percentile(lat, 95), 2),
                "backend": self.localiser.backend,
                "sensor_positions": json.dumps(list(self.p["sensor_positions"])),
                **{f"dropped.{k}": v for k, v in self.drops.snapshot().items()}}

    def destroy_node(self) -> None:
        self.jobs.put(None)
        self.worker.join(timeout=5.0)
        super().destroy_node()


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
