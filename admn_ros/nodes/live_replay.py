"""Sensor drivers stood in by a recording: its image topics published at real time x rate,
stamped with the wall clock when each frame is due, with sensor-data QoS (best effort), as
camera and radar drivers publish. For trying the graph in live mode without sensors.

    python -m admn_ros.nodes.live_replay --bag rec.mcap [--rate 1] [--sets 300]

Prints, at the end, a JSON line with the frames published per topic and the camera sets
(frames of the first camera topic) published.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from admn_ros.nodes.bag_player_node import IMAGE_TYPES

FIRST_CAMERA = "/node1/camera/color/image_raw"  # one frame per camera set
MATCH_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import deserialize_message
    from rclpy.utilities import remove_ros_args
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CompressedImage, Image

    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m admn_ros.nodes.live_replay",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bag", required=True, help="rosbag2 with the sensor topics")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor")
    parser.add_argument("--sets", type=int, default=0,
                        help="stop after this many camera sets; 0 = the whole recording")
    parser.add_argument("--start-after", type=float, default=0.0,
                        help="wall seconds to wait before the first frame")
    parser.add_argument("--exclude", default="range_azimuth",
                        help="regular expression of topics not to publish")
    parser.add_argument("--min-subscribers", type=int, default=0,
                        help="wait (up to 60 s) until every topic has this many readers")
    args = parser.parse_args(remove_ros_args(argv)[1:])
    if args.rate <= 0:
        parser.error(f"--rate: expected > 0, got {args.rate}")
    rclpy.init(args=argv)
    node = rclpy.create_node("admn_live_replay")
    pubs, published = {}, {}
    try:
        with AnyReader([Path(args.bag)]) as reader:
            conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES
                     and not (args.exclude and re.search(args.exclude, c.topic))]
            for c in conns:
                cls = Image if c.msgtype.endswith("/Image") else CompressedImage
                pubs[c.topic] = (node.create_publisher(cls, c.topic, qos_profile_sensor_data),
                                 cls)
                published[c.topic] = 0
            up_by = time.monotonic() + MATCH_TIMEOUT_S
            while time.monotonic() < up_by and any(
                    p.get_subscription_count() < args.min_subscribers for p, _ in pubs.values()):
                time.sleep(0.1)
            time.sleep(args.start_after)
            t_rec0, t_wall0 = None, time.time_ns()
            for conn, t_rec, raw in reader.messages(connections=conns):
                if conn.topic == FIRST_CAMERA and args.sets and \
                        published[FIRST_CAMERA] >= args.sets:
                    break
                t_rec0 = t_rec if t_rec0 is None else t_rec0
                due = t_wall0 + int((t_rec - t_rec0) / args.rate)
                if (wait := (due - time.time_ns()) / 1e9) > 0:
                    time.sleep(wait)
                pub, cls = pubs[conn.topic]
                msg = deserialize_message(bytes(raw), cls)
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(due, 1_000_000_000)
                pub.publish(msg)
                published[conn.topic] += 1
        time.sleep(0.5)  # let the last frames leave
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(json.dumps({"published": published, "sets": published.get(FIRST_CAMERA, 0)}),
              flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
