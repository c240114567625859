"""Corruption injector: between the bag and the graph, corrupts scheduled sensor frames."""

from __future__ import annotations

import json
import sys

import torch
import yaml
from rclpy.node import Node
from sensor_msgs.msg import Image

from admn_ros.data.config import load_data_config
from admn_ros.data.image_codec import image_to_numpy, numpy_to_image_fields
from admn_ros.nodes.common import (
    LIVE,
    NS,
    Diagnostics,
    declare,
    resolve,
    sensor_qos,
    spin_main,
    stamp_ns,
)
from admn_ros.nodes.inject import Corruption, corrupt_frame, load_schedule
from admn_ros.nodes.sensors import topic_of

PARAMS = {
    "schedule": ("corruption schedule (config/inject/*.yaml); empty = pass through", LIVE),
    "input_prefix": ("reads <prefix><topic> and publishes <topic>",),
    "sensor_nodes": ("sensor node names",),
    "rgb_topic": ("RGB topic template",),
    "depth_topic": ("depth topic template",),
    "radar_topic": ("radar topic template",),
    "seed": ("seed of the noise draws", 0, 2**31 - 1),
    "noise_grid": ("Gaussian noise is drawn on this square grid and upsampled to the frame: "
                   "the model's input size, so strength is the sigma the model was trained "
                   "with; 0 = per raw pixel (averages out when frames are resized)", 0, 4096),
    "sensor_reliability": ("QoS of the sensor topics in and out: best_effort or reliable",),
    "min_subscribers": ("readers each output needs before the injector reports ready", 1, 100),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
}


def schedule_of(path: str) -> list[Corruption]:
    """The corruptions of a schedule file; empty path = none; ValueError says what is wrong."""
    if not path:
        return []
    try:
        return load_schedule(resolve(path))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"schedule {path!r}: cannot read it ({exc})") from None


class CorruptionInjectorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_corruption_injector", **kwargs)
        self.p = declare(self, "admn_corruption_injector", PARAMS, self.on_params)
        self.schedule = schedule_of(self.p["schedule"])
        self.depth_max_mm = load_data_config().preprocess.depth_max_mm
        self.generator = torch.Generator().manual_seed(self.p["seed"])
        self.t0_ns: int | None = None
        self.corrupted = 0
        self.forwarded = 0
        self.pubs, self.subs = {}, []
        qos = sensor_qos(self.p["sensor_reliability"])
        for node in self.p["sensor_nodes"]:
            for modality in ("rgb", "depth", "radar"):
                topic = topic_of(self.p[f"{modality}_topic"], node)
                self.pubs[node, modality] = self.create_publisher(Image, topic, qos)
                self.subs.append(self.create_subscription(
                    Image, self.p["input_prefix"] + topic,
                    lambda msg, k=(node, modality): self.on_frame(k, msg), qos))
        self.diagnostics = Diagnostics(self, "injection", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])

    def on_params(self, changes: dict) -> None:
        """Live parameters: a new schedule (its times still count from the first frame)."""
        if "schedule" in changes:
            self.schedule = schedule_of(changes["schedule"])
        if "diagnostics_period_s" in changes:
            self.diagnostics.set_period(changes["diagnostics_period_s"])

    def on_frame(self, key: tuple[str, str], msg: Image) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if self.t0_ns is None or stamp < self.t0_ns - NS:  # first frame, or the bag looped
            self.t0_ns = stamp
        active = [c for c in self.schedule if (c.node, c.modality) == key
                  and c.active((stamp - self.t0_ns) / NS)]
        out = self.apply(key[1], msg, active) if active else msg
        self.pubs[key].publish(out)
        self.forwarded += 1

    def apply(self, modality: str, msg: Image, active: list[Corruption]) -> Image:
        try:
            arr = image_to_numpy(msg)
        except ValueError:
            return msg  # not decodable: the graph's own checks count it
        for c in active:
            arr = corrupt_frame(arr, modality, c, self.depth_max_mm, self.generator,
                                self.p["noise_grid"])
        self.corrupted += 1
        fields = numpy_to_image_fields(arr, msg.encoding)
        fields["data"] = fields["data"].tobytes()
        return Image(header=msg.header, **fields)

    def windows(self) -> list[dict]:
        """Scheduled windows on the recording clock (for the allocation plot)."""
        t0 = self.t0_ns or 0
        return [{"start_ns": t0 + int(c.start_s * NS), "end_ns": t0 + int(c.end_s * NS),
                 "label": c.label} for c in self.schedule]

    def diagnostic_values(self) -> dict:
        """`ready`: every output has its readers (a reader matched late misses frames)."""
        ready = all(pub.get_subscription_count() >= self.p["min_subscribers"]
                    for pub in self.pubs.values())
        return {"ready": int(ready), "forwarded": self.forwarded, "corrupted": self.corrupted,
                "windows": json.dumps(self.windows())}


def main(args=None) -> int:
    return spin_main(CorruptionInjectorNode, args)


if __name__ == "__main__":
    sys.exit(main())
