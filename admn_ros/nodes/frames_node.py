"""Frames node: the static transforms on /tf_static: OptiTrack `world` (y up) -> `map`
(REP 103, z up), so tf users and RViz see the outputs (in `map`) and the ground truth (in
`world`) in one tree, and, live (`sensor_tf`), world -> each sensor node where it stands (a
replayed bag brings its own). docs/FRAMES.md draws the frames."""

from __future__ import annotations

import sys

from rclpy.node import Node

from admn_ros.nodes.common import LIVE, Diagnostics, declare, spin_main
from admn_ros.nodes.frames import MAP_IN_WORLD_QUAT

PARAMS = {
    "world_frame_id": ("OptiTrack frame (y up) of the ground truth and the sensor positions",),
    "map_frame_id": ("z-up frame of the outputs (the fusion node's frame_id)",),
    "sensor_tf": ("also world -> each sensor node at its position (live; a bag brings its "
                  "own)",),
    "sensor_nodes": ("sensor node names (child frames)",),
    "sensor_positions": ("x, y, z of each sensor node in the OptiTrack world, flattened",),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
}




class FramesNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_frames", **kwargs)
        self.p = declare(self, "admn_frames", PARAMS, self.on_params)
        from admn_ros.nodes.static_tf import (  # here: PARAMS imports without tf2_msgs
            publish_static,
            sensor_node_transforms,
            static_transform,
        )

        world, stamp = self.p["world_frame_id"], self.get_clock().now().to_msg()
        self.transforms = [static_transform(world, self.p["map_frame_id"], (0.0, 0.0, 0.0),
                                            stamp, MAP_IN_WORLD_QUAT)]
        if self.p["sensor_tf"]:
            self.transforms += sensor_node_transforms(world, self.p["sensor_nodes"],
                                                      self.p["sensor_positions"], stamp)
        self.pub = publish_static(self, self.transforms)
        self.diagnostics = Diagnostics(self, "frames", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])

    def on_params(self, changes: dict) -> None:
        self.diagnostics.set_period(changes["diagnostics_period_s"])

    def diagnostic_values(self) -> dict:
        return {"static": ", ".join(f"{t.header.frame_id} -> {t.child_frame_id}"
                                    for t in self.transforms)}


def main(args=None) -> int:
    return spin_main(FramesNode, args)


if __name__ == "__main__":
    sys.exit(main())
