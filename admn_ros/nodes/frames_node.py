"""Frames node: the static transform OptiTrack `world` (y up) -> `map` (REP 103, z up) on
/tf_static, so tf users and RViz see the outputs (in `map`) and the ground truth (in `world`)
in one tree. docs/FRAMES.md draws the frames."""

from __future__ import annotations

import sys

from geometry_msgs.msg import TransformStamped
from rclpy.node import Node

from admn_ros.nodes.common import LATCHED_QOS, LIVE, Diagnostics, declare, spin_main
from admn_ros.nodes.frames import MAP_IN_WORLD_QUAT

PARAMS = {
    "world_frame_id": ("OptiTrack frame (y up) of the ground truth and the sensor positions",),
    "map_frame_id": ("z-up frame of the outputs (the fusion node's frame_id)",),
    "diagnostics_period_s": ("period of /diagnostics", 0.1, 60.0, LIVE),
}


def world_to_map_transform(world: str, map_frame: str, stamp) -> TransformStamped:
    """tf world -> map: same origin, the map's axes turned -90 degrees about world x."""
    t = TransformStamped()
    t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, world, map_frame
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = MAP_IN_WORLD_QUAT
    return t


class FramesNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("admn_frames", **kwargs)
        self.p = declare(self, "admn_frames", PARAMS, self.on_params)
        from tf2_msgs.msg import TFMessage  # here, so PARAMS imports where tf2_msgs is absent
        # /tf_static as tf2's static broadcaster: reliable, transient local, the last message
        self.pub = self.create_publisher(TFMessage, "/tf_static", LATCHED_QOS)
        self.transform = world_to_map_transform(self.p["world_frame_id"],
                                                self.p["map_frame_id"],
                                                self.get_clock().now().to_msg())
        self.pub.publish(TFMessage(transforms=[self.transform]))
        self.diagnostics = Diagnostics(self, "frames", self.diagnostic_values,
                                       self.p["diagnostics_period_s"])

    def on_params(self, changes: dict) -> None:
        self.diagnostics.set_period(changes["diagnostics_period_s"])

    def diagnostic_values(self) -> dict:
        return {"static": f"{self.transform.header.frame_id} -> {self.transform.child_frame_id}"}


def main(args=None) -> int:
    return spin_main(FramesNode, args)


if __name__ == "__main__":
    sys.exit(main())
