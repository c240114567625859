"""The graph, described once: `launch/gdtm_tracking.launch.py` and `admn run` both build
their nodes from `describe_graph`, so the two cannot drift.

Each entry names the installed executable (`admn_ros.nodes.<executable>_node:main`), the node
name, the parameter files and overrides, and the remappings, exactly as launch_ros takes them.
Topic names are relative, so a `namespace` moves the whole graph (/car2/admn/pose, ...); there
/clock, /tf and /tf_static are remapped into the namespace too (as multi-robot set-ups do), so
two graphs on one domain share nothing but /diagnostics (told apart by node name).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import yaml

from admn_ros.paths import config_file, share_dir

GRAPH_INPUTS = {  # graph input topic template -> modality (what a topics config may remap)
    "{node}/camera/color/image_raw": "rgb",
    "{node}/camera/depth/image_raw": "depth",
    "{node}/radar/range_doppler": "radar",
}
GROUND_TRUTH = "mocap/car/pose"
GLOBAL_TOPICS = ("/clock", "/tf", "/tf_static")  # moved into the namespace with the graph
RAW_PREFIX = "raw/"  # with an injector: the player publishes raw/<topic>, the injector <topic>
SENSOR_NODES = ("node1", "node2", "node3")
SENSOR_READERS = 2  # controller and fusion read every sensor topic
PLAYER_START_DELAY_S = 30.0  # longest wait for them (loading weights takes a while)
# offline (evaluation replay): no freshness, no deadline loop, every sample kept; the workers'
# queues stay bounded, deep enough for a whole replay backlog
OFFLINE = {"max_age_s": 0.0, "max_queue": 100_000}


@dataclass
class NodeSpec:
    executable: str
    name: str
    parameters: list[Any] = field(default_factory=list)  # params-file paths and dicts
    remappings: list[tuple[str, str]] = field(default_factory=list)
    namespace: str = ""

    @property
    def module(self) -> str:
        return f"admn_ros.nodes.{self.executable}_node"


@dataclass
class GraphOptions:
    bag: str = ""  # empty: live (sensor drivers publish), no player
    weights: str = ""  # empty: config/nodes.yaml default
    controller_weights: list[str] | None = None
    budget: str = "simulated"  # power-monitor source, or a number = manual budget
    budget_profile: str = ""  # config/power/*.yaml for the simulated source
    backend: str = ""
    rate: float = 1.0
    inject: str = ""  # config/inject/*.yaml; empty = no injector
    topics: str = ""  # config/topics/<name>.yaml, by name or path (live mode)
    use_sim_time: bool | None = None  # default: True with a bag
    sensor_reliability: str = ""  # default: reliable with a bag (replay), best_effort live
    nodes_yaml: str = ""  # default: <share>/config/nodes.yaml
    namespace: str = ""  # empty: the root namespace (today's names: /admn/pose, ...)
    offline: bool = False  # keep every sample (no freshness, no deadline loop)


def topic_remappings(topics_file: str) -> list[tuple[str, str]]:
    """config/topics/*.yaml `inputs: {node1: {rgb: /cam/..., ...}, mocap: ...}` -> remappings.
    `topics_file`: a name (`realsense_ti`) or a path (relative: share directory first)."""
    if not topics_file:
        return []
    data = yaml.safe_load(config_file("topics", topics_file).read_text()) or {}
    out = []
    by_modality = {m: t for t, m in GRAPH_INPUTS.items()}
    for node, topics in (data.get("inputs") or {}).items():
        for modality, topic in topics.items():
            if modality not in by_modality:
                raise ValueError(f"{topics_file}: inputs.{node}: expected rgb | depth | radar, "
                                 f"got {modality!r}")
            out.append((by_modality[modality].replace("{node}", node), topic))
    if data.get("ground_truth"):
        out.append((GROUND_TRUTH, data["ground_truth"]))
    return out


def describe_graph(opt: GraphOptions) -> list[NodeSpec]:
    """The nodes of one run, in start order (player last, so the graph is up when it plays)."""
    nodes_yaml = opt.nodes_yaml or str(share_dir() / "config" / "nodes.yaml")
    sim = bool(opt.bag) if opt.use_sim_time is None else opt.use_sim_time
    common = {"use_sim_time": sim}
    sensors = {"sensor_reliability": opt.sensor_reliability
               or ("reliable" if opt.bag else "best_effort")}
    model = {"weights": opt.weights} if opt.weights else {}
    if opt.controller_weights is not None:
        model["controller_weights"] = list(opt.controller_weights) or [""]
    fusion = {k: v for k, v in (("weights", opt.weights), ("backend", opt.backend)) if v}
    workers = OFFLINE if opt.offline else {}
    if opt.offline:
        fusion["target_period_s"] = 0.0
    moved = [(t, t.lstrip("/")) for t in GLOBAL_TOPICS] if opt.namespace else []
    remap = topic_remappings(opt.topics) + moved

    power: dict[str, Any] = dict(common)
    if opt.budget.isdigit():
        power.update(source="manual", manual_budget=int(opt.budget))
    else:
        power["source"] = opt.budget
    if opt.budget_profile:
        power["profile"] = opt.budget_profile
    if opt.controller_weights is not None:  # the budget in force is one they cover
        power["controller_weights"] = model["controller_weights"]

    specs = [
        NodeSpec("power_monitor", "admn_power_monitor", [nodes_yaml, power], moved),
        NodeSpec("controller", "admn_controller",
                 [nodes_yaml, {**common, **sensors, **model, **workers}], remap),
        NodeSpec("fusion", "admn_fusion",
                 [nodes_yaml, {**common, **sensors, **fusion, **workers}], remap),
    ]
    if opt.inject:
        specs.append(NodeSpec("corruption_injector", "admn_corruption_injector",
                              [nodes_yaml, {**common, **sensors, "schedule": opt.inject,
                                            "input_prefix": RAW_PREFIX,
                                            "min_subscribers": SENSOR_READERS}], moved))
    if importlib.util.find_spec("tf2_msgs") is not None:  # every ROS install; not the wheels
        # live: the sensor nodes' frames too; a replayed bag has its own on /tf_static
        specs.append(NodeSpec("frames", "admn_frames",
                              [nodes_yaml, {**common, "sensor_tf": not sim}], moved))
    if opt.bag:
        # the player is the clock: it runs on wall time and publishes /clock; it starts once
        # every reader of its image topics is matched (the injector alone, when there is one)
        player = {"use_sim_time": False, "bag": opt.bag, "rate": float(opt.rate),
                  "publish_clock": True, "start_delay_s": PLAYER_START_DELAY_S,
                  "min_subscribers": 1 if opt.inject else SENSOR_READERS}
        if opt.inject:
            player["image_topic_prefix"] = RAW_PREFIX
        specs.append(NodeSpec("bag_player", "admn_bag_player", [nodes_yaml, player], moved))
    for spec in specs:
        spec.namespace = opt.namespace
    return specs
