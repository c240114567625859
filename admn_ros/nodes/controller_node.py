"""Controller node: synchronised sample + budget in force -> LayerAllocation (same stamp).

The subscription callbacks only synchronise; each sample goes to a worker (`worker.Worker`:
bounded queue, freshness, catch-all) that decodes it and runs the allocator, so the executor
keeps draining the sensor queues while the allocator computes.
"""

from __future__ import annotations

import sys

from admn_ros.core.checkpoint import read_checkpoint
from admn_ros.core.config import load_model_config
from admn_ros.data.preprocess import Preprocess
from admn_ros.msg import ComputeBudget, LayerAllocation
from admn_ros.nodes.allocation import Allocation, Allocator
from admn_ros.nodes.common import (
    LATCHED_QOS,
    LIVE,
    NS,
    RELIABLE_QOS,
    Diagnostics,
    Drops,
    declare,
    resolve,
    spin_main,
    to_stamp,
)
from admn_ros.nodes.managed import AUTOSTART, ManagedNode
from admn_ros.nodes.models import GET_WEIGHTS, WeightsError, load_controllers
from admn_ros.nodes.samples import Prepared, sample_inputs
from admn_ros.nodes.sensors import SENSOR_PARAMS, SensorInputs
from admn_ros.nodes.sync import SyncedSample
from admn_ros.nodes.worker import WORKER_PARAMS, Worker, set_torch_threads, worker_status

PARAMS = {
    **SENSOR_PARAMS,
    **WORKER_PARAMS,
    "weights": ("ADMN checkpoint (its model config sets modalities, depth, input size)",),
    "controller_weights": ("controller checkpoints: one universal (budget token) or one per "
                           "budget; empty = use `policy`",),
    "policy": ("learned | naive | random | upper_bound | single:<modality>", LIVE),
    "initial_budget": ("layers until the first ComputeBudget; 0 = all blocks", 0, 1000),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
    AUTOSTART[0]: AUTOSTART[1],
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


class ControllerNode(ManagedNode):
    """Managed node (`managed.ManagedNode`): configure loads the controllers and subscribes,
    activate allocates, deactivate stops and forgets the frames it held."""

    def __init__(self, **kwargs) -> None:
        super().__init__("admn_controller", **kwargs)
        self.p = declare(self, "admn_controller", PARAMS, self.on_params)
        set_torch_threads(self.p["torch_threads"], self.p["torch_processes"])
        self.allocator: Allocator | None = None
        self.inputs: SensorInputs | None = None
        self.layers = 0
        self.drops = Drops(self.get_logger())
        self.stats = {"samples": 0, "allocations": 0, "budget_changes": 0}
        self.worker: Worker[SyncedSample] = Worker(
            "allocate", self.allocate, self.drops, lambda: self.get_clock().now().nanoseconds,
            self.p["max_queue"], int(self.p["max_age_s"] * NS))
        self.worker.start()
        self.diagnostics = Diagnostics(self, "allocation", self.diagnostic_values,
                                       self.p["diagnostics_period_s"],
                                       lambda: worker_status(self.worker, self.p["stuck_s"]))
        self.autostart(self.p["autostart"])

    def load(self) -> None:
        self.allocator = build_allocator(self.p)
        cfg = self.allocator.cfg
        self.prepare = Prepared(Preprocess.from_config(cfg.backbone.img_size))
        self.layers = self.p["initial_budget"] or cfg.total_blocks
        self.pub = self.create_lifecycle_publisher(LayerAllocation, "admn/allocation",
                                                   RELIABLE_QOS)
        self.budget_sub = self.create_subscription(ComputeBudget, "admn/budget",
                                                   self.on_budget, LATCHED_QOS)
        self.inputs = SensorInputs(self, cfg.modalities, self.on_sample, self.drops, self.take)

    def reset(self) -> None:
        self.inputs.reset()
        self.worker.clear()

    def free(self) -> None:
        self.worker.clear()
        self.worker.wait_idle(self.p["stuck_s"])  # the job in progress uses what is freed
        self.inputs.destroy(self)
        self.destroy_subscription(self.budget_sub)
        self.destroy_lifecycle_publisher(self.pub)
        self.allocator = self.inputs = None

    def on_params(self, changes: dict) -> None:
        """Live parameters: policy, synchroniser slop and queue, diagnostics period; a value
        that cannot work raises ValueError (refused, nothing changed). Unconfigured, the
        values wait for configure."""
        if "policy" in changes and self.allocator is not None:
            a = self.allocator
            self.allocator = Allocator(a.cfg, a.universal, a.per_budget, changes["policy"])
        if {"sync_slop_s", "sync_queue_size"} & changes.keys() and self.inputs is not None:
            merged = {**self.p, **changes}
            self.inputs.retune(merged["sync_slop_s"], merged["sync_queue_size"])
        if "diagnostics_period_s" in changes:
            self.diagnostics.set_period(changes["diagnostics_period_s"])

    def on_budget(self, msg: ComputeBudget) -> None:
        """The budget in force (kept while inactive: it is state, not work)."""
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
        self.worker.put(sample.stamp_ns, sample)

    def allocate(self, sample: SyncedSample) -> None:
        """The worker's job: decode the sample, allocate under the budget in force, publish."""
        try:
            inputs = sample_inputs(sample, self.allocator.cfg.modalities, self.inputs.nodes,
                                   self.prepare)
        except ValueError as exc:
            self.drops("bad_input", str(exc))
            return
        layers = self.layers  # the budget in force now (set by on_budget)
        try:
            alloc = self.allocator(inputs, layers)
        except ValueError as exc:  # a budget no controller covers: count it, stay alive
            self.drops("bad_budget", str(exc))
            return
        self.pub.publish(allocation_msg(alloc, sample.stamp_ns, layers,
                                        self.allocator.cfg.modalities))
        self.stats["allocations"] += 1

    def diagnostic_values(self) -> dict:
        inputs = self.inputs
        return {**self.lifecycle_values(), **self.stats, "budget": self.layers,
                **(inputs.values() if inputs else {}),
                **{f"dropped.{k}": v for k, v in self.drops.snapshot().items()}}

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()


def main(args=None) -> int:
    return spin_main(ControllerNode, args)


if __name__ == "__main__":
    sys.exit(main())
