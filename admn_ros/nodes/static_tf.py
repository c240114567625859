"""Static transforms on /tf_static, as tf2's static broadcaster publishes them: one latched
message (reliable, transient local), so rviz and tf2 listeners that start later still get it."""

from __future__ import annotations

from collections.abc import Sequence

from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

TF_STATIC = "/tf_static"
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
IDENTITY = (0.0, 0.0, 0.0, 1.0)  # quaternion x, y, z, w


def static_transform(parent: str, child: str, xyz: Sequence[float], stamp,
                     quaternion: Sequence[float] = IDENTITY) -> TransformStamped:
    """parent -> child: translation `xyz` (metres), rotation `quaternion` (x, y, z, w)."""
    t = TransformStamped()
    t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(
        float, xyz)
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = map(float, quaternion)
    return t


def sensor_node_transforms(parent: str, nodes: Sequence[str], positions: Sequence[float],
                           stamp) -> list[TransformStamped]:
    """parent -> each sensor node at its position (`positions`: x, y, z per node, flattened)."""
    if len(positions) != 3 * len(nodes):
        raise ValueError(f"sensor_positions: expected x, y, z for each of {list(nodes)} "
                         f"({3 * len(nodes)} numbers), got {len(positions)}")
    return [static_transform(parent, node, positions[3 * i:3 * i + 3], stamp)
            for i, node in enumerate(nodes)]


def publish_static(node, transforms: Sequence[TransformStamped]):
    """Publish `transforms` on /tf_static once; returns the publisher, which the caller keeps
    (it serves the message to late joiners). More transforms (e.g. a map frame) go in the
    same list."""
    pub = node.create_publisher(TFMessage, TF_STATIC, TF_STATIC_QOS)
    pub.publish(TFMessage(transforms=list(transforms)))
    return pub
