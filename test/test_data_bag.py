"""GDTM <-> rosbag2 MCAP: round trip, types and stamps, bad bags, interrupted conversions."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from admn_ros.cli import main
from admn_ros.data import bag as bagmod
from admn_ros.data.bag import bag_to_gdtm, gdtm_to_bag
from admn_ros.data.errors import DataError
from admn_ros.data.gdtm import GDTMRecording
from admn_ros.data.testing import make_tiny_recording


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bag")
    rec = make_tiny_recording(tmp, frames=24, seed=1)
    bag = gdtm_to_bag(rec, tmp / "rec.mcap", progress=False)
    back = bag_to_gdtm(bag, tmp / "back", progress=False)
    return rec, bag, back


def test_round_trip(converted):
    rec_dir, _, back_dir = converted
    a, b = GDTMRecording(rec_dir), GDTMRecording(back_dir)
    assert np.array_equal(a.timestamps_ms, b.timestamps_ms) and a.nodes == b.nodes
    for i in range(len(a)):
        assert np.allclose(a.target_cm(i), b.target_cm(i), atol=1e-3)
        for n in a.nodes:
            for key in ("rgb", "depth", "radar", "radar_azimuth"):  # rgb stored as PNG
                assert np.array_equal(a.read(i, key, n), b.read(i, key, n)), (i, n, key)
                assert a.stamp_ns(i, key, n) == b.stamp_ns(i, key, n)
    for n, pose in a.node_poses().items():
        assert np.allclose(pose.position, b.node_poses()[n].position)
        assert np.allclose(pose.rotation, b.node_poses()[n].rotation, atol=1e-9)


def test_bag_types_and_stamps(converted):
    rec_dir, bag, _ = converted
    rec = GDTMRecording(rec_dir)
    with AnyReader([bag]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types["/node1/camera/color/image_raw"] == "sensor_msgs/msg/Image"
        assert types["/node3/radar/range_doppler"] == "sensor_msgs/msg/Image"
        assert types["/mocap/car/pose"] == "geometry_msgs/msg/PoseStamped"
        assert types["/tf_static"] == "tf2_msgs/msg/TFMessage"
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts["/node2/camera/depth/image_raw"] == len(rec)
        assert counts["/node2/radar/range_doppler"] < len(rec) / 2  # 4 Hz, not repeated
        want = {(f"/node1/{k}", rec.stamp_ns(i, m, "node1")) for i in range(len(rec))
                for k, m in (("camera/color/image_raw", "rgb"),
                             ("camera/depth/image_raw", "depth"))}
        want |= {("/mocap/car/pose", int(ms) * 1_000_000) for ms in rec.timestamps_ms}
        got = set()
        for conn, t, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/tf_static":
                frames = {(x.header.frame_id, x.child_frame_id) for x in msg.transforms}
                assert ("world", "node1") in frames
                assert ("node2", "node2_color_optical_frame") in frames
                continue
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == t
            if conn.topic == "/node1/camera/color/image_raw":
                assert msg.encoding == "rgb8" and msg.header.frame_id == "node1_color_optical_frame"
            if conn.topic == "/node1/camera/depth/image_raw":
                assert msg.encoding == "16UC1"
            if conn.topic == "/node1/radar/range_doppler":
                assert msg.encoding == "32FC1" and msg.header.frame_id == "node1_radar"
            if conn.topic == "/mocap/car/pose":
                assert msg.header.frame_id == "world"
            got.add((conn.topic, stamp))
        assert want <= got


def test_sqlite3_bag_is_read(converted, tmp_path):
    _, bag, back = converted
    db = tmp_path / "sq"
    with AnyReader([bag]) as reader, Writer(db, version=9,
                                            storage_plugin=StoragePlugin.SQLITE3) as w:
        conns = {}
        for c in reader.connections:
            conns[c.id] = w.add_connection(c.topic, c.msgtype, typestore=reader.typestore,
                                           offered_qos_profiles=c.ext.offered_qos_profiles)
        for c, t, raw in reader.messages():
            w.write(conns[c.id], t, raw)
    out = bag_to_gdtm(db, tmp_path / "fromsq", progress=False)
    a, b = GDTMRecording(back), GDTMRecording(out)
    assert np.array_equal(a.read(5, "depth", "node2"), b.read(5, "depth", "node2"))


def test_bag_without_expected_topics(tmp_path):
    path = tmp_path / "other"
    ts = bagmod._typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="hi"),
                                       "std_msgs/msg/String"))
    with pytest.raises(DataError, match=r"other.*no camera topics.*/chatter"):
        bag_to_gdtm(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bag_missing_mocap(converted, tmp_path):
    _, bag, _ = converted
    path = tmp_path / "nomocap"
    with AnyReader([bag]) as reader, Writer(path, version=9,
                                            storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=reader.typestore)
                 for c in reader.connections if c.topic != "/mocap/car/pose"}
        for c, t, raw in reader.messages():
            if c.id in conns:
                w.write(conns[c.id], t, raw)
    with pytest.raises(DataError, match=r"missing topic\(s\) \['/mocap/car/pose'\]"):
        bag_to_gdtm(path, tmp_path / "out", progress=False)


def test_truncated_and_corrupt_mcap(converted, tmp_path):
    _, bag, _ = converted
    data = bag.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.mcap"):
        bag_to_gdtm(cut, tmp_path / "o1", progress=False)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 10)
    with pytest.raises(DataError, match=r"junk\.mcap"):
        bag_to_gdtm(junk, tmp_path / "o2", progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mcap", "junk.mcap"]


def test_interrupted_conversions_leave_no_output(converted, tmp_path, monkeypatch):
    rec_dir, bag, _ = converted
    calls = {"n": 0}
    real_read = GDTMRecording.read

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        return real_read(self, *args)

    monkeypatch.setattr(GDTMRecording, "read", flaky)
    with pytest.raises(KeyboardInterrupt):
        gdtm_to_bag(rec_dir, tmp_path / "x.mcap", progress=False)
    monkeypatch.setattr(GDTMRecording, "read", real_read)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bagmod, "_mocap_object", boom)
    with pytest.raises(KeyboardInterrupt):
        bag_to_gdtm(bag, tmp_path / "y", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_bag(converted, tmp_path, capsys):
    rec_dir, _, _ = converted
    out = tmp_path / "cli.mcap"
    assert main(["bag", "from-gdtm", str(rec_dir), str(out), "--quiet"]) == 0
    assert main(["bag", "to-gdtm", str(out), str(tmp_path / "back"), "--quiet"]) == 0
    assert len(GDTMRecording(tmp_path / "back")) == 24
    assert main(["bag", "to-gdtm", str(tmp_path / "nope.mcap"), str(tmp_path / "z")]) == 2
    assert "bag not found" in capsys.readouterr().err
