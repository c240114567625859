"""Real GDTM layouts and conventions: tiny h5py files written here as GDTM's and ADMN's tools do."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from admn_ros.core.config import to_dict
from admn_ros.data.bag import bag_to_gdtm, gdtm_to_bag
from admn_ros.data.config import load_data_config
from admn_ros.data.dataset import GDTMDataset
from admn_ros.data.errors import DataError
from admn_ros.data.gdtm import GDTMRecording
from admn_ros.data.generate import generate_recording
from admn_ros.data.geometry import quaternion_to_rotation

START_MS = 1_652_301_633_000
STEP_MS = 66  # GDTM's aligned frame grid
RADAR_EVERY = 4  # 4 Hz radar on the 15 Hz grid
NODES = (1, 2, 3)
H = W = 32


def _rot(axis: int, deg: float) -> np.ndarray:
    a, (i, j) = np.radians(deg), [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = np.cos(a)
    r[i, j], r[j, i] = -np.sin(a), np.sin(a)
    return r


# node -> world of each node: a known (non-symmetric) rotation; GDTM stores rot = its
# transpose (global -> local)
NODE_TO_WORLD = {k: _rot(1, 40.0 * k) @ _rot(0, -110.0) for k in NODES}
NODE_POS = {k: np.array([0.5 * k, 1.2, -1.0 + k]) for k in NODES}


def _jpeg(img: np.ndarray, column: bool) -> np.ndarray:
    """JPEG bytes as [N, 1] (older OpenCV, as GDTM's files hold them) or [N]."""
    buf = cv2.imencode(".jpg", img)[1].reshape(-1)
    return buf.reshape(-1, 1) if column else buf


def _car(i: int) -> list[float]:
    return [0.1 * i, 0.07, -0.05 * i]


def write_upstream(root: Path, frames: int, *, first: int = 0, node_objects: bool = True,
                   nan_car: tuple[int, ...] = (), seed: int = 0) -> Path:
    """A folder as nesl/GDTM writes it: mocap.hdf5 + node_<k>/{zed,realsense,mmwave}.hdf5."""
    rng = np.random.default_rng(seed)
    keys = [str(START_MS + STEP_MS * (first + i)) for i in range(frames)]
    root.mkdir(parents=True)
    with h5py.File(root / "mocap.hdf5", "w") as f:
        for i, ms in enumerate(keys):
            objs = [{"id": k - 1, "type": "node", "position": NODE_POS[k].tolist(),
                     "rotation": NODE_TO_WORLD[k].T.flatten().tolist()}
                    for k in NODES if node_objects]
            pos = [float("nan")] * 3 if first + i in nan_car else _car(first + i)
            objs.append({"id": 3, "type": "truck", "position": pos,
                         "rotation": np.eye(3).flatten().tolist()})
            f.create_group(ms).create_dataset("mocap", data=json.dumps(objs))
    for k in NODES:
        d = root / f"node_{k}"
        d.mkdir()
        with h5py.File(d / "zed.hdf5", "w") as zed, h5py.File(d / "realsense.hdf5", "w") as rs, \
                h5py.File(d / "mmwave.hdf5", "w") as mm:
            for i, ms in enumerate(keys):
                g = zed.create_group(f"{ms}/node_{k}")
                g.create_dataset("zed_camera_left", data=_jpeg(
                    rng.integers(0, 255, (H, W, 3), dtype=np.uint8), column=k != 2))
                g.create_dataset("zed_camera_depth",
                                 data=rng.integers(500, 5000, (H, W)).astype(np.uint16))
                depth = cv2.applyColorMap(rng.integers(0, 255, (H, W), dtype=np.uint8),
                                          cv2.COLORMAP_JET)
                rs.create_group(f"{ms}/node_{k}").create_dataset("realsense_camera_depth",
                                                                 data=_jpeg(depth, True))
                cap = (first + i) // RADAR_EVERY  # the same capture on about four keys
                cap_rng = np.random.default_rng([seed, k, cap])
                g = mm.create_group(f"{ms}/node_{k}")
                g.create_dataset("range_doppler",
                                 data=cap_rng.uniform(1600, 7200, (256, 16)).astype(np.float32))
                az = cap_rng.uniform(0, 1, (8, 8)).astype(np.float32)
                az[0, 0] = np.nan
                g.create_dataset("azimuth_static", data=az)
    return root


def write_metadata(path: Path) -> None:
    meta = {f"node{k}": {"x": float(NODE_POS[k][0]), "y": float(NODE_POS[k][1]),
                         "z": float(NODE_POS[k][2]), "rot": NODE_TO_WORLD[k].T.flatten().tolist()}
            for k in NODES}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta))


def _delete(path: Path, ms: int, node: int, name: str) -> None:
    with h5py.File(path, "a") as f:
        del f[str(ms)][f"node_{node}"][name]


def _key(i: int) -> int:
    return START_MS + STEP_MS * i


# --------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("folder", ["chunk_0", "merged"])
def test_folder_frames_radar_rate_and_jpeg_buffers(tmp_path, folder):
    rec = GDTMRecording(write_upstream(tmp_path / "data" / folder, 12))
    assert rec.source == "gdtm" and rec.nodes == ["node1", "node2", "node3"] and len(rec) == 12
    assert np.array_equal(rec.timestamps_ms, [_key(i) for i in range(12)])
    radar = [rec.raw(i, "radar", "node2") for i in range(12)]
    changes = [i for i in range(1, 12) if not np.array_equal(radar[i], radar[i - 1])]
    assert changes == [4, 8]  # one capture repeated on four keys
    assert rec.raw(0, "rgb", "node1").shape[1:] == (1,) and rec.raw(0, "rgb", "node2").ndim == 1
    for n in ("node1", "node2"):  # [N, 1] and [N] buffers decode alike
        assert rec.read(0, "rgb", n).shape == (H, W, 3)
    assert np.isfinite(rec.read(0, "radar_azimuth", "node1")).all()
    assert rec.report.dropped_leading == 0 and not any(rec.report.filled.values())


def test_admn_split_root_uses_its_splits(tmp_path):
    root = tmp_path / "single_view_1"
    for split, first, n in (("train", 0, 10), ("val", 10, 4), ("test", 14, 5)):
        write_upstream(root / split, n, first=first)
    rec = GDTMRecording(root)
    assert rec.split_names == ("train", "val", "test") and len(rec) == 19
    for split, n in (("train", 10), ("val", 4), ("test", 5)):
        ds = GDTMDataset(root, split, img_size=8, cache="none")
        alone = GDTMDataset(root / split, "all", img_size=8, cache="none")
        assert len(ds) == len(alone) == n
        assert np.array_equal(ds.stamps_ns, alone.stamps_ns)
        assert np.array_equal(ds.targets, alone.targets)
    assert len(GDTMDataset(root, "all", img_size=8, cache="none")) == 19
    with AnyReader([gdtm_to_bag(root, tmp_path / "all.mcap", progress=False)]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/mocap/car/pose"] == 19 and counts["/node1/camera/color/image_raw"] == 19
    with pytest.raises(ValueError, match="holdout"):
        GDTMDataset(root, "holdout", img_size=8, cache="none")


def test_flat_folder_still_read(tmp_path):
    """The older flat layout: the same files directly in the folder, holding every node."""
    up = write_upstream(tmp_path / "up", 6)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("mocap.hdf5", "zed.hdf5", "realsense.hdf5", "mmwave.hdf5"):
        with h5py.File(flat / name, "w") as out:
            for src in [up / name] if name == "mocap.hdf5" else \
                    [up / f"node_{k}" / name for k in NODES]:
                with h5py.File(src) as f:
                    for ms in f:
                        for child in f[ms]:
                            out.require_group(ms).copy(f[ms][child], child)
    a, b = GDTMRecording(up), GDTMRecording(flat)
    assert len(b) == 6 and b.nodes == a.nodes
    assert np.array_equal(a.read(3, "radar", "node3"), b.read(3, "radar", "node3"))


# --------------------------------------------------------------------------- node poses, TF
def _tf_from_bag(bag: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/tf_static"]
        for c, _, raw in reader.messages(connections=conns):
            for t in reader.deserialize(raw, c.msgtype).transforms:
                if t.header.frame_id == "world":
                    q, p = t.transform.rotation, t.transform.translation
                    out[t.child_frame_id] = (np.array([p.x, p.y, p.z]),
                                             quaternion_to_rotation(np.array([q.x, q.y, q.z,
                                                                              q.w])))
    return out


@pytest.mark.parametrize("pose_source", ["mocap", "metadata"])
def test_node_tf_from_both_pose_sources(tmp_path, pose_source):
    folder = write_upstream(tmp_path / "data" / "chunk_0", 5,
                            node_objects=pose_source == "mocap")
    if pose_source == "metadata":
        write_metadata(tmp_path / "data" / "raw" / "metadata.json")  # where GDTM keeps it
    rec = GDTMRecording(folder)
    assert pose_source in rec.report.pose_source
    tf = _tf_from_bag(gdtm_to_bag(folder, tmp_path / "x.mcap", progress=False))
    for k in NODES:
        assert not np.allclose(NODE_TO_WORLD[k], NODE_TO_WORLD[k].T)  # tells the conventions apart
        pose = rec.node_poses()[f"node{k}"]
        assert np.allclose(pose.rotation, NODE_TO_WORLD[k], atol=1e-12)
        assert np.allclose(pose.position, NODE_POS[k])
        pos, rot = tf[f"node{k}"]
        assert np.allclose(rot, NODE_TO_WORLD[k], atol=1e-9) and np.allclose(pos, NODE_POS[k])
        # GDTM's convention: p_local = rot (p - T); the TF maps it back to the world point
        p_world = np.array([0.3, 0.0, 0.8])
        p_local = NODE_TO_WORLD[k].T @ (p_world - NODE_POS[k])
        assert np.allclose(pos + rot @ p_local, p_world)


def test_no_pose_source_is_a_clear_error(tmp_path):
    folder = write_upstream(tmp_path / "chunk_0", 3, node_objects=False)
    with pytest.raises(DataError, match="no node poses"):
        GDTMRecording(folder)


# --------------------------------------------------------------------------- units
def test_radar_input_not_saturated_for_ti_values(tmp_path):
    folder = write_upstream(tmp_path / "chunk_0", 4)
    for mode in ("frame_minmax", "standardize"):
        raw = to_dict(load_data_config())
        raw["sources"]["gdtm"]["radar"]["mode"] = mode
        ds = GDTMDataset(folder, "all", img_size=16, cache="none",
                         data_config=load_data_config(raw))
        x = ds[0]["inputs"]["radar"]
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert (x < 0.99).float().mean() > 0.9 and x.std() > 0.02, mode
    raw["sources"]["gdtm"]["radar"]["mode"] = "magnitude"  # the old reading: all ones
    ds = GDTMDataset(folder, "all", img_size=16, cache="none", data_config=load_data_config(raw))
    assert ds[0]["inputs"]["radar"].min() == 1.0


def test_standardize_maps_gdtm_mean_to_mid_range(tmp_path):
    folder = write_upstream(tmp_path / "chunk_0", 2)
    with h5py.File(folder / "node_1" / "mmwave.hdf5", "a") as f:
        f[str(_key(0))]["node_1"]["range_doppler"][...] = 4353.0 + 705.0 * 3
        f[str(_key(1))]["node_1"]["range_doppler"][...] = 4353.0
    raw = to_dict(load_data_config())
    raw["sources"]["gdtm"]["radar"]["mode"] = "standardize"
    ds = GDTMDataset(folder, "all", img_size=16, cache="none", data_config=load_data_config(raw))
    assert np.allclose(ds[0]["inputs"]["radar"][0].numpy(), 1.0, atol=1e-5)  # mean + 3 std
    assert np.allclose(ds[1]["inputs"]["radar"][0].numpy(), 0.5, atol=1e-5)  # the mean


def without_hole_fill():
    """config/data.yaml with `preprocess.depth_hole_fill_px: 0`: the reader's own output."""
    raw = to_dict(load_data_config())
    raw["preprocess"]["depth_hole_fill_px"] = 0
    return load_data_config(raw)


def test_depth_sources(tmp_path):
    """Colourised RealSense JPEG: grey levels scaled per frame; ZED: metric millimetres."""
    folder = write_upstream(tmp_path / "chunk_0", 2)
    x = GDTMDataset(folder, "all", img_size=W, cache="none",
                    data_config=without_hole_fill())[0]["inputs"]["depth"][0]
    assert x.min() == 0.0 and x.max() == 1.0  # min-max per frame, before any hole filling
    raw = to_dict(load_data_config())
    raw["sources"]["gdtm"]["depth"] = {"dataset": "zed_camera_depth", "mode": "mm"}
    rec = GDTMRecording(folder, load_data_config(raw))
    with h5py.File(folder / "node_2" / "zed.hdf5") as f:
        stored = f[str(_key(1))]["node_2"]["zed_camera_depth"][()]
    assert np.array_equal(rec.read(1, "depth", "node2"), stored)


# --------------------------------------------------------------------------- gaps and NaN
def test_nan_mocap_and_missing_datasets_filled_and_counted(tmp_path):
    folder = write_upstream(tmp_path / "chunk_0", 10, nan_car=(5, 6))
    _delete(folder / "node_2" / "zed.hdf5", _key(7), 2, "zed_camera_left")
    _delete(folder / "node_3" / "mmwave.hdf5", _key(0), 3, "range_doppler")  # leading gap
    rec = GDTMRecording(folder)
    assert len(rec) == 9 and rec.timestamps_ms[0] == _key(1)  # frame 0 dropped, as upstream
    r = rec.report
    assert r.dropped_leading == 1 and r.mocap_nan_filled == 2
    assert r.filled["node2/zed_camera_left"] == 1 and r.filled["node1/zed_camera_left"] == 0
    assert np.allclose(rec.car_position(4), _car(5 - 1)) and np.allclose(rec.car_position(5),
                                                                           _car(4))
    assert np.array_equal(rec.read(6, "rgb", "node2"), rec.read(5, "rgb", "node2"))
    assert "gaps filled with the previous sample: node2/zed_camera_left 1" in r.lines()[-1]


def test_unreadable_group_names_file_key_and_dataset(tmp_path):
    folder = write_upstream(tmp_path / "chunk_0", 3)
    with h5py.File(folder / "node_1" / "mmwave.hdf5", "a") as f:
        del f[str(_key(1))]["node_1"]["range_doppler"]
        f[str(_key(1))]["node_1"].create_dataset("range_doppler", data=np.zeros(4, "u1"))
    with pytest.raises(DataError, match=rf"node_1/mmwave\.hdf5 at t={_key(1)}: dataset "
                                        r"'range_doppler' of node_1: radar must be a float"):
        GDTMRecording(folder).read(1, "radar", "node1")


# --------------------------------------------------------------------------- round trips
def test_round_trip_keeps_every_model_input(tmp_path):
    folder = write_upstream(tmp_path / "chunk_0", 10)
    _delete(folder / "node_1" / "zed.hdf5", _key(6), 1, "zed_camera_left")  # a filled gap
    bag = gdtm_to_bag(folder, tmp_path / "rec.mcap", progress=False)
    back = bag_to_gdtm(bag, tmp_path / "back", progress=False)
    assert (back / "node_1" / "mmwave.hdf5").is_file()
    with h5py.File(back / "node_2" / "zed.hdf5") as f:
        assert list(f[str(_key(0))]) == ["node_2"]  # each file holds only its own node
    a = GDTMDataset(folder, "all", img_size=16, cache="none")
    b = GDTMDataset(back, "all", img_size=16, cache="none")
    assert b.recording.source == "admn" and len(a) == len(b) == 10
    assert np.array_equal(a.stamps_ns, b.stamps_ns) and np.allclose(a.targets, b.targets)
    for i in range(len(a)):
        for m in ("rgb", "depth", "radar"):
            assert np.allclose(a[i]["inputs"][m], b[i]["inputs"][m], atol=1e-5), (i, m)
    for n, pose in a.recording.node_poses().items():
        assert np.allclose(pose.rotation, b.recording.node_poses()[n].rotation, atol=1e-9)


def test_synthetic_inputs_identical_to_the_pre_upstream_reader(tmp_path):
    """The first shipped weights (demo_v1, depth holes not filled) were trained on these
    inputs: the new layout must not change them.

    test/data/synthetic_inputs_v1.npz holds what the flat-layout reader (before this layout)
    produced for `generate_recording(frames=6, seed=0)`: 16 px arrays and 64 px hashes.
    RGB and depth are bit-exact on every CPU; the radar heatmap is float maths whose last bit
    differs between CPUs (1.2e-7 on a Xeon against the AMD EPYC that wrote the fixture), so
    radar is compared by value at 16 px.
    """
    fixture = np.load(Path(__file__).parent / "data" / "synthetic_inputs_v1.npz")
    hashes = dict(fixture["hashes"].tolist())
    rec = generate_recording(tmp_path / "r", frames=6, seed=0)
    assert (rec / "node_1" / "zed.hdf5").is_file() and GDTMRecording(rec).source == "admn"
    for size in (16, 64):
        ds = GDTMDataset(rec, "all", img_size=size, cache="none", data_config=without_hole_fill())
        for i in range(len(ds)):
            item = ds[i]
            assert item["stamp_ns"] == fixture[f"stamp_{i}"]
            assert np.array_equal(item["target"].numpy(), fixture[f"target_{i}"])
            for m, x in item["inputs"].items():
                if size == 16 and i < 4:
                    assert np.allclose(x.numpy(), fixture[f"{m}_{i}"], rtol=0, atol=1e-6), (i, m)
                if m == "radar":  # float maths: the last bit differs between CPUs (see above)
                    continue
                digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()
                assert digest == hashes[f"{size}_{i}_{m}"], (size, i, m)
