"""Controller node: synchronised sample + budget in force -> LayerAllocation (same stamp)."""

from __future__ import annotations

import sys

from rclpy.node import Node

from admn_ros.core.checkpoint import read_checkpoint
from admn_ros.core.config import load_model_config
from admn_ros.data.preprocess import Preprocess
from admn_ros.msg import ComputeBudget, LayerAllocation
from admn_ros.nodes.allocation import Allocation, Allocator
from admn_ros.nodes.common import (
    LATCHED_QOS,
    RELIABLE_QOS,
    Diagnostics,
    Drops,
    declare,
    params,
    resolve,
    spin_main,
    to_stamp,
)
from admn_ros.nodes.models import GET_WEIGHTS, WeightsError, load_controllers
from admn_ros.nodes.samples import sample_inputs
from admn_ros.nodes.sensors import SENSOR_PARAMS, SensorInputs
from admn_ros.nodes.sync import SyncedSample

PARAMS = {
    **SENSOR_PARAMS,
    "weights": ("ADMN checkpoint (its model config sets modalities, depth, input size)",),
    "controller_weights": ("controller checkpoints: one universal (budget token) or one per "
                           "budget; empty = use `policy`",),
    "policy": ("learned | naive | random | upper_bound | single:<modality>",),
    "initial_budget": ("layers until the first ComputeBudget; 0 = all blocks", 0, 1000),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0),
}


def build_allocator(p: dict) -> Allocator:
    """The node's allocator from its parameters (WeightsError names missing files)."""
    paths = [s for s in p["controller_weights"] if s]
    universal, per_budget = load_controllers(paths)
    if not (universal or per_budget) and p["policy"] == "learned":
        raise WeightsError(f"no controller weights found for {[resolve(x) for x in paths]}: "
                           f"{GET_WEIGHTS}")
    if universal or per_budget:
        cfg = (universal or next(iter(per_budget.values()))).cfg
    else:
        path = resolve(p["weights"])
        if not path.is_file():
            raise WeightsError(f"weights not found at {path}: run `make train` or set `weights`")
        cfg = load_model_config(read_checkpoint(path)["model_config"])
    return Allocator(cfg, universal, per_budget, p["policy"])


def allocation_msg(alloc: Allocation, stamp_ns: int, layers: int, modalities: list[str]
                   ) -> LayerAllocation:
    msg = LayerAllocation()
    msg.header.stamp = to_stamp(stamp_ns, type(msg.header.stamp))
    msg.header.frame_id = "world"
    msg.budget = layers
    msg.modalities = list(modalities)
    msg.layers_per_modality = int(alloc.active.shape[1])
    msg.active = [bool(v) for v in alloc.active.flatten().tolist()]
    msg.predicted_noise = alloc.noise
    msg.controller, msg.controller_ms = alloc.controller, float(alloc.ms)
    return msg


class ControllerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_controller", **kwargs)
        declare(self, "admn_controller", PARAMS)
        p = params(self, PARAMS)
        self.allocator = build_allocator(p)
        cfg = self.allocator.cfg
        self.pre = Preprocess.from_config(cfg.backbone.img_size)
        self.layers = p["initial_budget"] or cfg.total_blocks
        self.drops = Drops(self.get_logger())
        self.stats = {"samples": 0, "allocations": 0, "budget_changes": 0}
        self.pub = self.create_publisher(LayerAllocation, "/admn/allocation", RELIABLE_QOS)
        self.create_subscription(ComputeBudget, "/admn/budget", self.on_budget, LATCHED_QOS)
        self.inputs = SensorInputs(self, cfg.modalities, self.on_sample, self.drops)
        self.diagnostics = Diagnostics(self, "allocation", self.diagnostic_values,
                                       p["diagnostics_period_s"])

    def on_budget(self, msg: ComputeBudget) -> None:
        try:
            self.allocator.check_budget(int(msg.layers))
        except ValueError as exc:
            self.drops("bad_budget", f"{exc} (from {msg.source}); keeping {self.layers}")
            return
        if int(msg.layers) != self.layers:
            self.stats["budget_changes"] += 1
            self.get_logger().info(f"budget {self.layers} -> {msg.layers} ({msg.reason})")
        self.layers = int(msg.layers)

    def on_sample(self, sample: SyncedSample) -> None:
        self.stats["samples"] += 1
        try:
            inputs = sample_inputs(sample, self.allocator.cfg.modalities, self.inputs.nodes,
                                   self.pre)
        except ValueError as exc:
            self.drops("bad_input", str(exc))
            return
        try:
            alloc = self.allocator(inputs, self.layers)
        except ValueError as exc:  # a budget no controller covers: count it, stay alive
            self.drops("bad_budget", str(exc))
            return
        self.pub.publish(allocation_msg(alloc, sample.stamp_ns, self.layers,
                                        self.allocator.cfg.modalities))
        self.stats["allocations"] += 1

    def diagnostic_values(self) -> dict:
        return {**self.stats, "budget": self.layers, **self.inputs.values(),
                **{f"dropped.{k}": v for k, v in self.drops.snapshot().items()}}


def main(args=None) -> int:
    return spin_main(ControllerNode, args)


if __name__ == "__main__":
    sys.exit(main())
