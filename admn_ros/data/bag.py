"""GDTM recording <-> rosbag2 (MCAP) with rosbags; no ROS installation needed.

`gdtm_to_bag` reads any layout `admn_ros.data.gdtm` reads (a chunk, a merged folder, an ADMN
train/val/test root, the older flat folder) and publishes topic units (`admn_ros.data.sources`);
`bag_to_gdtm` writes GDTM's upstream layout (`mocap.hdf5` + `node_<k>/<sensor>.hdf5`) marked
as written by this project (source `admn`), camera images as lossless PNG by default.

Bag contents (names in config/data.yaml `bag`, defaults as in INTERFACES.md):

- ``/node{k}/camera/color/image_raw`` sensor_msgs/Image rgb8, frame ``node{k}_color_optical_frame``
- ``/node{k}/camera/depth/image_raw`` sensor_msgs/Image 16UC1 mm, ``node{k}_depth_optical_frame``
- ``/node{k}/radar/range_doppler`` and ``/node{k}/radar/range_azimuth`` sensor_msgs/Image
  32FC1, ``node{k}_radar``, published once per radar capture (4 Hz, not repeated); a
  camera sample repeated to fill a gap is not published again
- ``/mocap/car/pose`` geometry_msgs/PoseStamped in ``world`` (OptiTrack frame, metres, y up),
  one per frame on the camera grid
- ``/tf_static`` tf2_msgs/TFMessage (transient local): world -> node{k} (translation T,
  rotation rot^T for GDTM's global -> local ``rot``) and node{k} -> its sensor frames (identity)

Header stamps are the recording's capture stamps; bag log times equal header stamps.
Outputs are written under a temporary name and renamed at the end. An output path ending in
``.mcap`` is a single MCAP file (readable by `ros2 bag play` and rosbags); otherwise a rosbag2
directory. `bag_to_gdtm` reads MCAP files, rosbag2 directories (mcap or sqlite3) and .db3 files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from admn_ros.data.config import DataConfig, load_data_config
from admn_ros.data.errors import DataError
from admn_ros.data.gdtm import (
    GDTMRecording,
    ReadReport,
    node_group,
    open_upstream_files,
)
from admn_ros.data.geometry import (
    quaternion_to_rotation,
    rotation_to_quaternion,
    rotation_to_rotvec,
)
from admn_ros.data.image_codec import image_to_numpy, image_to_rgb, numpy_to_image_fields

IMAGE = "sensor_msgs/msg/Image"
POSE = "geometry_msgs/msg/PoseStamped"
TF = "tf2_msgs/msg/TFMessage"
SENSOR_KEYS = ("rgb", "depth", "radar", "radar_azimuth")
FROM_BAG_FORMAT = "admn_ros/gdtm-from-bag/2"
ENCODING = {"depth": "16UC1", "radar": "32FC1", "radar_azimuth": "32FC1"}
_ZERO = QosTime(0, 0)
LATCHED_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE,
                  QosDurability.TRANSIENT_LOCAL, _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO,
                  False)


def _typestore() -> object:
    return get_typestore(Stores.ROS2_KILTED)


def _partial(path: Path) -> Path:
    return path.parent / f".{path.name}.partial-{os.getpid()}"


# --------------------------------------------------------------------------- GDTM -> bag
class _MsgFactory:
    """Builds rosbags message objects."""

    def __init__(self) -> None:
        self.ts = _typestore()
        t = self.ts.types
        self.Time, self.Header, self.Image = (t["builtin_interfaces/msg/Time"],
                                              t["std_msgs/msg/Header"], t[IMAGE])
        self.Pose, self.PoseStamped = t["geometry_msgs/msg/Pose"], t[POSE]
        self.Point, self.Quat = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"]
        self.Vec3 = t["geometry_msgs/msg/Vector3"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.TransformStamped, self.TFMessage = t["geometry_msgs/msg/TransformStamped"], t[TF]

    def header(self, stamp_ns: int, frame: str) -> object:
        return self.Header(stamp=self.Time(sec=int(stamp_ns // 1_000_000_000),
                                           nanosec=int(stamp_ns % 1_000_000_000)),
                           frame_id=frame)

    def image(self, arr: np.ndarray, encoding: str, stamp_ns: int, frame: str) -> object:
        return self.Image(header=self.header(stamp_ns, frame),
                          **numpy_to_image_fields(arr, encoding))

    def pose(self, position: np.ndarray, rotation: np.ndarray, stamp_ns: int, frame: str
             ) -> object:
        q = rotation_to_quaternion(rotation)
        return self.PoseStamped(
            header=self.header(stamp_ns, frame),
            pose=self.Pose(position=self.Point(x=float(position[0]), y=float(position[1]),
                                               z=float(position[2])),
                           orientation=self.Quat(x=q[0], y=q[1], z=q[2], w=q[3])))

    def transform(self, parent: str, child: str, position: np.ndarray, rotation: np.ndarray,
                  stamp_ns: int) -> object:
        q = rotation_to_quaternion(rotation)
        return self.TransformStamped(
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=self.Transform(
                translation=self.Vec3(x=float(position[0]), y=float(position[1]),
                                      z=float(position[2])),
                rotation=self.Quat(x=q[0], y=q[1], z=q[2], w=q[3])))


def gdtm_to_bag(in_dir: str | Path, out_path: str | Path, *, progress: bool = True,
                data_config: DataConfig | None = None, overwrite: bool = False,
                source: str | None = None,
                on_report: Callable[[ReadReport], None] | None = None) -> Path:
    """Convert a GDTM recording to a rosbag2 MCAP bag; returns the output path.

    `source` overrides config/data.yaml `source` (auto | admn | gdtm); `on_report` receives
    what reading had to fill or drop.
    """
    cfg = data_config or load_data_config()
    bc = cfg.bag
    out_path = Path(out_path)
    if out_path.exists() and not (overwrite and out_path.is_file()):
        raise ValueError(f"{out_path}: output exists (use overwrite for a file)")
    rec = GDTMRecording(in_dir, cfg, source)
    if on_report is not None:
        on_report(rec.report)
    if bc.rgb_encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"bag.rgb_encoding must be rgb8 or bgr8, got {bc.rgb_encoding!r}")
    make = _MsgFactory()
    tmp = _partial(out_path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        writer = Writer(tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        with writer:
            _write_bag(rec, writer, make, cfg, progress)
        if out_path.suffix == ".mcap":
            (inner,) = tmp.glob("*.mcap")
            os.replace(inner, out_path)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        rec.close()
    return out_path


def _write_bag(rec: GDTMRecording, writer: Writer, make: _MsgFactory, cfg: DataConfig,
               progress: bool) -> None:
    bc, ts = cfg.bag, make.ts
    conns = {}
    for node in rec.nodes:
        for key in rec.keys:
            conns[key, node] = writer.add_connection(bc.topics[key].format(node=node), IMAGE,
                                                     typestore=ts)
    mocap_conn = writer.add_connection(bc.mocap_topic, POSE, typestore=ts)
    tf_conn = writer.add_connection(bc.tf_static_topic, TF, typestore=ts,
                                    offered_qos_profiles=[LATCHED_QOS])
    first_ns = int(rec.timestamps_ms[0]) * 1_000_000
    transforms = []
    for node, pose in rec.node_poses().items():
        transforms.append(make.transform(bc.world_frame, node, pose.position, pose.rotation,
                                         first_ns))
        for child in dict.fromkeys(f.format(node=node) for f in bc.frames.values()):
            transforms.append(make.transform(node, child, np.zeros(3), np.eye(3), first_ns))
    writer.write(tf_conn, first_ns, ts.serialize_cdr(make.TFMessage(transforms=transforms), TF))

    last_radar: dict[tuple[str, str], tuple[int | None, np.ndarray | None]] = {}
    for i in tqdm(range(len(rec)), desc="gdtm->bag", unit="frame", disable=not progress):
        ms = int(rec.timestamps_ms[i])
        for node in rec.nodes:
            for key in rec.keys:
                src = rec.source_ms(i, key, node)
                if i and src != ms and src == rec.source_ms(i - 1, key, node):
                    continue  # a gap filled with the previous sample: nothing new to publish
                arr = rec.read(i, key, node)
                stamp = rec.stamp_ns(i, key, node)
                if key.startswith("radar"):
                    # radar is repeated on the frame grid: publish each capture once
                    has_attr = stamp != src * 1_000_000
                    prev_stamp, prev = last_radar.get((key, node), (None, None))
                    same = (stamp == prev_stamp) if has_attr else (
                        prev is not None and np.array_equal(prev, arr, equal_nan=True))
                    last_radar[key, node] = (stamp, arr)
                    if same:
                        continue
                enc = bc.rgb_encoding if key == "rgb" else ENCODING[key]
                if enc == "bgr8":
                    arr = np.ascontiguousarray(arr[..., ::-1])
                msg = make.image(arr, enc, stamp, bc.frames[key].format(node=node))
                writer.write(conns[key, node], stamp, ts.serialize_cdr(msg, IMAGE))
        msg = make.pose(rec.car_position(i), rec.car_rotation(i), ms * 1_000_000,
                        bc.world_frame)
        writer.write(mocap_conn, ms * 1_000_000, ts.serialize_cdr(msg, POSE))


# --------------------------------------------------------------------------- bag -> GDTM
def _stamp_ns(msg: object) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _open_reader(path: Path) -> AnyReader:
    if not path.exists():
        raise DataError(path, "bag not found")
    try:
        reader = AnyReader([path], default_typestore=_typestore())
        reader.open()
    except Exception as err:  # rosbags raises several unrelated types for corrupt input
        raise DataError(path, f"cannot open bag (corrupt or truncated?): "
                              f"{type(err).__name__}: {err}") from None
    return reader


def bag_to_gdtm(in_bag: str | Path, out_dir: str | Path, *, progress: bool = True,
                data_config: DataConfig | None = None) -> Path:
    """Convert a bag written by `gdtm_to_bag` (or recorded live with the same topics) to GDTM's
    upstream layout; returns the output directory.

    The frame grid is the mocap pose stamps; each camera image goes to the nearest frame and
    radar captures are repeated onto the grid (latest capture at or before the frame).
    """
    cfg = data_config or load_data_config()
    in_bag, out_dir = Path(in_bag), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: output exists and is not an empty directory")
    reader = _open_reader(in_bag)
    try:
        data = _collect(reader, in_bag, cfg, progress)
    finally:
        reader.close()
    tmp = _partial(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_gdtm(data, tmp, in_bag, cfg)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _collect(reader: AnyReader, path: Path, cfg: DataConfig, progress: bool) -> dict:
    """Read every relevant message into per-topic lists (camera images encoded)."""
    bc = cfg.bag
    topics = {c.topic: c for c in reader.connections}
    pattern = re.compile("^" + re.escape(bc.topics["rgb"]).replace(re.escape("{node}"),
                                                                    r"(node\d+)") + "$")
    nodes = sorted({m.group(1) for t in topics if (m := pattern.match(t))},
                   key=lambda n: int(n[4:]))
    if not nodes:
        raise DataError(path, f"no camera topics matching {bc.topics['rgb']!r}; bag has "
                              f"{sorted(topics)}")
    want = {bc.topics[k].format(node=n): (k, n) for n in nodes for k in SENSOR_KEYS}
    required = [t for t, (k, _) in want.items() if k != "radar_azimuth"] + [bc.mocap_topic,
                                                                           bc.tf_static_topic]
    missing = [t for t in required if t not in topics]
    if missing:
        raise DataError(path, f"missing topic(s) {missing}; bag has {sorted(topics)}")
    expected_type = {bc.mocap_topic: POSE, bc.tf_static_topic: TF} | dict.fromkeys(want, IMAGE)
    for t, typ in expected_type.items():
        if t in topics and topics[t].msgtype != typ:
            raise DataError(path, f"topic {t} has type {topics[t].msgtype}, expected {typ}")
    conns = [topics[t] for t in expected_type if t in topics]
    out: dict = {"nodes": nodes, "poses": {}, "mocap": [],
                 "sensors": {(k, n): [] for n in nodes for k in SENSOR_KEYS}}
    total = sum(c.msgcount for c in conns)
    if bc.image_format not in ("png", "jpeg"):
        raise ValueError(f"bag.image_format must be png or jpeg, got {bc.image_format!r}")
    ext, params = (".png", []) if bc.image_format == "png" else (
        ".jpg", [cv2.IMWRITE_JPEG_QUALITY, bc.jpeg_quality])
    stamp = None
    try:
        for conn, log_ns, raw in tqdm(reader.messages(connections=conns), total=total,
                                      desc="bag->gdtm", unit="msg", disable=not progress):
            stamp = log_ns
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == bc.tf_static_topic:
                for tr in msg.transforms:
                    if tr.header.frame_id == bc.world_frame and tr.child_frame_id in nodes:
                        t, q = tr.transform.translation, tr.transform.rotation
                        out["poses"][tr.child_frame_id] = (
                            np.array([t.x, t.y, t.z]),
                            quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w])))
            elif conn.topic == bc.mocap_topic:
                p, q = msg.pose.position, msg.pose.orientation
                out["mocap"].append((_stamp_ns(msg), np.array([p.x, p.y, p.z]),
                                     quaternion_to_rotation(np.array([q.x, q.y, q.z, q.w]))))
            else:
                key, node = want[conn.topic]
                try:
                    if key == "rgb":
                        _, buf = cv2.imencode(ext, image_to_rgb(msg)[..., ::-1], params)
                        arr = buf.reshape(-1)
                    else:
                        arr = image_to_numpy(msg)
                        enc = ENCODING[key]
                        if msg.encoding != enc:
                            raise ValueError(f"encoding {msg.encoding!r}, expected {enc!r}")
                except ValueError as err:
                    raise DataError(path, f"{conn.topic}: {err}", _stamp_ns(msg)) from None
                out["sensors"][key, node].append((_stamp_ns(msg), arr))
    except DataError:
        raise
    except Exception as err:  # truncated chunk, bad CDR, ...
        raise DataError(path, f"corrupt or truncated bag: {type(err).__name__}: {err}",
                        stamp) from None
    if not out["mocap"]:
        raise DataError(path, f"no messages on {bc.mocap_topic} (needed for the frame grid)")
    missing = [n for n in nodes if n not in out["poses"]]
    if missing:
        raise DataError(path, f"{bc.tf_static_topic} has no {bc.world_frame} -> node "
                              f"transform for {missing}")
    for (key, node), msgs in out["sensors"].items():
        if not msgs and key != "radar_azimuth":
            raise DataError(path, f"no messages on {bc.topics[key].format(node=node)}")
    return out


def _write_gdtm(data: dict, out: Path, path: Path, cfg: DataConfig) -> None:
    layout = cfg.layout
    mocap = sorted(data["mocap"], key=lambda m: m[0])
    grid_ns = np.array([m[0] for m in mocap], dtype=np.int64)
    grid_ms = np.round(grid_ns / 1e6).astype(np.int64)
    if len(np.unique(grid_ms)) != len(grid_ms):
        raise DataError(path, "two mocap poses fall on the same millisecond")
    nodes = data["nodes"]
    files = open_upstream_files(out, nodes, layout, FROM_BAG_FORMAT)
    try:
        for (key, node), msgs in data["sensors"].items():
            if not msgs:
                continue
            msgs.sort(key=lambda m: m[0])
            stamps = np.array([m[0] for m in msgs], dtype=np.int64)
            if key.startswith("radar"):  # latest capture at or before each frame
                idx = np.maximum(np.searchsorted(stamps, grid_ns, side="right") - 1, 0)
            else:  # nearest capture
                right = np.clip(np.searchsorted(stamps, grid_ns), 1, len(stamps) - 1) \
                    if len(stamps) > 1 else np.zeros(len(grid_ns), int)
                left = np.maximum(right - 1, 0)
                idx = np.where(np.abs(stamps[left] - grid_ns) <= np.abs(stamps[right] - grid_ns),
                               left, right)
            name = layout.datasets[key]
            opts = {} if key == "rgb" else {"compression": "gzip", "compression_opts": 1}
            for ms, j in zip(grid_ms, idx, strict=True):
                d = node_group(files, key, node, ms).create_dataset(name, data=msgs[j][1],
                                                                    **opts)
                d.attrs["stamp_ns"] = msgs[j][0]
        node_objs = []
        for k, node in enumerate(nodes):
            pos, rot = data["poses"][node]
            node_objs.append(_mocap_object(k, "node", pos, rot.T))  # GDTM: global -> local
        for (_, pos, rot), ms in zip(mocap, grid_ms, strict=True):
            objs = [dict(o, timestamp=_stamp_str(ms)) for o in node_objs]
            objs.append(dict(_mocap_object(len(nodes), "truck", pos, rot),
                             timestamp=_stamp_str(ms)))
            files["mocap", None].create_group(str(ms)).create_dataset(layout.mocap,
                                                                      data=json.dumps(objs))
    finally:
        for f in dict.fromkeys(files.values()):
            f.close()
    meta: dict = {}
    for node in nodes:
        pos, rot = data["poses"][node]
        meta[node] = {"x": float(pos[0]), "y": float(pos[1]), "z": float(pos[2]),
                      "rot": rot.T.flatten().tolist()}
    meta["admn"] = {"format": FROM_BAG_FORMAT, "source": str(path),
                    "rotation_convention": "rot = row-major 3x3 global -> local (GDTM)",
                    "files": dict(layout.files), "datasets": dict(layout.datasets)}
    (out / "metadata.json").write_text(json.dumps(meta, indent=1))


def _mocap_object(idx: int, typ: str, pos: np.ndarray, rot: np.ndarray) -> dict:
    rv = rotation_to_rotvec(rot)
    return {"id": idx, "type": typ, "position": [float(v) for v in pos],
            "roll": float(rv[0]), "pitch": float(rv[1]), "yaw": float(rv[2]),
            "rotation": [float(v) for v in np.asarray(rot).flatten()]}


def _stamp_str(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
