"""A fuzzing publisher: malformed sensor_msgs/Image frames into the graph's sensor topics.

The frames are what misbehaving drivers and a corrupt link produce (`KINDS`): a bogus
encoding, a 640x480 frame with 10 bytes of data, an empty frame, a 32FC1 frame all NaN, a
60000x60000 frame with 3 bytes, and a well-formed frame stamped at the end of time. Each is
built in the encoding of the topic's modality, so the graph's arrival checks must count it
under its own reason (`expected_reason`). Stamps follow the node's clock (the bag's with
`use_sim_time`), as if the frames came from the sensor itself; nothing is published before
that clock has started.

    python -m admn_ros.nodes.fuzz --topics /node2/camera/color/image_raw:rgb \\
        /node1/camera/depth/image_raw:depth --hz 20 --duration 60 --ros-args -p use_sim_time:=true
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import cycle

import numpy as np

KINDS = ("bad_encoding", "short_data", "empty", "all_nan", "huge", "end_of_time")
ENCODING = {"rgb": "rgb8", "depth": "16UC1", "radar": "32FC1"}
END_OF_TIME_S = 2**31 - 1
GOOD_SHAPE = (48, 64)  # a small well-formed frame (for the end-of-time stamp)


def good_array(modality: str) -> np.ndarray:
    """A small valid frame of the modality's encoding."""
    h, w = GOOD_SHAPE
    if modality == "rgb":
        return np.full((h, w, 3), 128, np.uint8)
    if modality == "depth":
        return np.full((h, w), 2000, np.uint16)
    return np.full((h, w), 10.0, np.float32)


def malformed_fields(kind: str, modality: str) -> tuple[dict, bool]:
    """Image fields (height, width, encoding, is_bigendian, step, data) of one malformed frame
    and whether it is stamped at the end of time instead of now."""
    enc = ENCODING[modality]
    if kind == "end_of_time":
        arr = good_array(modality)
        fields = {"height": arr.shape[0], "width": arr.shape[1], "encoding": enc,
                  "step": arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1),
                  "data": arr.tobytes()}
    elif kind == "bad_encoding":
        fields = {"height": 4, "width": 4, "encoding": "bogus", "step": 4, "data": bytes(16)}
    elif kind == "short_data":
        fields = {"height": 480, "width": 640, "encoding": enc, "step": 640 * 3,
                  "data": bytes(10)}
    elif kind == "empty":
        fields = {"height": 0, "width": 0, "encoding": enc, "step": 0, "data": b""}
    elif kind == "all_nan":
        h, w = GOOD_SHAPE
        fields = {"height": h, "width": w, "encoding": "32FC1", "step": w * 4,
                  "data": np.full((h, w), np.nan, np.float32).tobytes()}
    elif kind == "huge":
        fields = {"height": 60000, "width": 60000, "encoding": enc, "step": 60000 * 3,
                  "data": bytes(3)}
    else:
        raise ValueError(f"fuzz: unknown kind {kind!r}; expected one of {KINDS}")
    return {**fields, "is_bigendian": 0}, kind == "end_of_time"


def expected_reason(kind: str, modality: str) -> str:
    """The drop reason the arrival checks must give a frame of `kind` on a `modality` topic."""
    if kind == "bad_encoding" or (kind == "all_nan" and modality == "rgb"):
        return "bad_encoding"
    if kind == "all_nan":
        return {"depth": "nan_depth", "radar": "nan_radar"}[modality]
    if kind == "end_of_time":
        return "bad_stamp"
    return "bad_size"


def parse_topic(text: str) -> tuple[str, str]:
    """`/topic:modality` -> (topic, modality)."""
    topic, _, modality = text.rpartition(":")
    if not topic or modality not in ENCODING:
        raise argparse.ArgumentTypeError(f"expected TOPIC:MODALITY with modality in "
                                         f"{list(ENCODING)}, got {text!r}")
    return topic, modality


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.utilities import remove_ros_args
    from sensor_msgs.msg import Image

    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m admn_ros.nodes.fuzz",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--topics", nargs="+", type=parse_topic, required=True,
                        help="TOPIC:MODALITY (rgb | depth | radar)")
    parser.add_argument("--hz", type=float, default=20.0, help="frames per second per topic")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="wall seconds to publish; 0 = until interrupted")
    parser.add_argument("--best-effort", action="store_true",
                        help="best-effort QoS (live drivers); default reliable (bag replay)")
    args = parser.parse_args(remove_ros_args(argv)[1:])
    if args.hz <= 0:
        parser.error(f"--hz: expected > 0, got {args.hz}")
    rclpy.init(args=argv)
    node = rclpy.create_node("admn_fuzz")
    reliability = (ReliabilityPolicy.BEST_EFFORT if args.best_effort
                   else ReliabilityPolicy.RELIABLE)
    qos = QoSProfile(depth=10, reliability=reliability)
    pubs = [(node.create_publisher(Image, t, qos), m) for t, m in args.topics]
    kinds = cycle(KINDS)
    sent = 0
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    try:
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=1.0 / args.hz)
            now = node.get_clock().now()
            if now.nanoseconds == 0:  # simulated time not started yet
                continue
            kind = next(kinds)
            for pub, modality in pubs:
                fields, end_of_time = malformed_fields(kind, modality)
                msg = Image(**fields)
                msg.header.stamp = now.to_msg()
                if end_of_time:
                    msg.header.stamp.sec, msg.header.stamp.nanosec = END_OF_TIME_S, 0
                msg.header.frame_id = "fuzz"
                pub.publish(msg)
                sent += 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(f"fuzz: sent {sent} malformed frames", file=sys.stderr, flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
