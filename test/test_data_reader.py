"""GDTM reader, Preprocess and GDTMDataset on a generated recording; bad recordings."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from admn_ros.data.dataset import GDTMDataset
from admn_ros.data.errors import DataError
from admn_ros.data.gdtm import GDTMRecording
from admn_ros.data.preprocess import Preprocess
from admn_ros.data.testing import make_tiny_recording


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    return make_tiny_recording(tmp_path_factory.mktemp("rd"), frames=40, seed=0)


@pytest.fixture
def copy_dir(rec_dir, tmp_path):
    dst = tmp_path / "rec"
    shutil.copytree(rec_dir, dst, ignore=shutil.ignore_patterns(".admn_cache"))
    return dst


def test_reader_layout(rec_dir):
    rec = GDTMRecording(rec_dir)
    assert len(rec) == 40 and rec.nodes == ["node1", "node2", "node3"]
    assert np.all(np.diff(rec.timestamps_ms) > 0)
    rgb, depth = rec.read(0, "rgb", "node2"), rec.read(0, "depth", "node2")
    assert rgb.dtype == np.uint8 and rgb.shape == (120, 160, 3)
    assert depth.dtype == np.uint16 and depth.shape == (120, 160) and (depth == 0).any()
    assert rec.read(0, "radar", "node3").dtype == np.float32
    t = rec.targets_cm()
    assert t.shape == (40, 2) and t.dtype == np.float32 and np.abs(t).max() <= 200.0
    pose = rec.node_poses()["node1"]
    assert np.allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-9)
    stamp = rec.stamp_ns(5, "rgb", "node1")
    assert abs(stamp - rec.timestamps_ms[5] * 1_000_000) < 20_000_000  # jitter of a few ms


def test_dataset_sample_format_splits_and_caches(rec_dir):
    ds = GDTMDataset(rec_dir, "train", img_size=32)
    s = ds[0]
    assert set(s) == {"inputs", "target", "stamp_ns", "index"}
    assert s["inputs"]["rgb"].shape == (3, 3, 32, 32)
    assert s["inputs"]["depth"].shape == (3, 1, 32, 32)
    assert s["inputs"]["radar"].shape == (3, 1, 32, 32)
    for v in s["inputs"].values():
        assert v.dtype == torch.float32 and v.min() >= 0.0 and v.max() <= 1.0
    assert s["target"].shape == (2,) and isinstance(s["stamp_ns"], int)
    sizes = {sp: GDTMDataset(rec_dir, sp, img_size=32) for sp in ("train", "val", "test")}
    idx = [set(d.indices.tolist()) for d in sizes.values()]
    assert sum(map(len, idx)) == 40 and not (idx[0] & idx[1] or idx[1] & idx[2])
    assert max(idx[0]) < min(idx[1]) <= max(idx[1]) < min(idx[2])  # split by time
    assert list((rec_dir / ".admn_cache").glob("*_rgb.npy"))
    plain = GDTMDataset(rec_dir, "val", img_size=32, cache="none")[2]
    cached = sizes["val"][2]
    mem = GDTMDataset(rec_dir, "val", img_size=32, cache="memory")[2]
    for m in ("rgb", "depth", "radar"):
        assert torch.allclose(plain["inputs"][m], cached["inputs"][m], atol=2e-3)
        assert torch.equal(mem["inputs"][m], cached["inputs"][m])
    with pytest.raises(ValueError, match="unknown split"):
        GDTMDataset(rec_dir, "holdout")


def test_dataloader_workers(rec_dir):
    for cache in ("disk", "none"):
        ds = GDTMDataset(rec_dir, "test", img_size=16, cache=cache, modalities=("rgb", "radar"))
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
        batch = next(iter(loader))
        assert batch["inputs"]["rgb"].shape == (3, 3, 3, 16, 16)
        assert batch["target"].shape == (3, 2)


def test_preprocess_normalisation_and_errors():
    pre = Preprocess(8, depth_max_mm=1000, radar_db_min=0, radar_db_max=40)
    assert torch.allclose(pre.rgb(np.full((16, 16, 3), 255, np.uint8)), torch.ones(3, 8, 8))
    d = pre.depth(np.full((16, 16), 2000, np.uint16))
    assert torch.allclose(d, torch.ones(1, 8, 8))
    assert pre.depth(np.zeros((8, 8), np.uint16)).abs().max() == 0  # holes stay 0
    r = pre.radar(np.full((4, 4), 10.0, np.float32))  # 20 dB of 40
    assert r.shape == (1, 8, 8) and torch.allclose(r, torch.full_like(r, 0.5))
    with pytest.raises(ValueError, match="dtype"):
        pre.rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        pre.depth(np.zeros((4, 4, 1), np.uint16))
    with pytest.raises(ValueError, match="NaN"):
        pre.radar(np.full((4, 4), np.nan, np.float32))


def test_depth_hole_fill_takes_the_farthest_return_around() -> None:
    mm = np.full((9, 9), 3000, np.uint16)
    mm[2:7, 2:7] = 2000  # a nearer box
    mm[4, 6] = 0  # a hole on its edge: the floor behind is farther
    mm[0:9, 0] = 0  # a column of holes at the border
    filled = Preprocess(9, depth_max_mm=6000, depth_hole_fill_px=1).depth_np(mm)[0] * 6000
    assert filled[4, 6] == pytest.approx(3000) and filled[3, 3] == pytest.approx(2000)
    assert (filled[:, 0] == pytest.approx(3000))
    kept = Preprocess(9, depth_max_mm=6000).depth_np(mm)[0]
    assert kept[4, 6] == 0 and (kept[:, 0] == 0).all()  # default: holes stay 0
    mm[:, :] = 0
    mm[0, 0] = 1000  # a hole farther than the radius from any return stays a hole
    assert Preprocess(9, depth_hole_fill_px=2).depth_np(mm)[0][8, 8] == 0
    with pytest.raises(ValueError, match="depth_hole_fill_px must be >= 0"):
        Preprocess(9, depth_hole_fill_px=-1)


def test_input_settings_check_names_what_the_weights_expect() -> None:
    from admn_ros.data.config import PreprocessConfig
    from admn_ros.data.preprocess import check_input_settings, input_settings

    cfg = PreprocessConfig(depth_hole_fill_px=2)
    trained = input_settings(cfg)
    check_input_settings(trained, "w.pt", cfg)
    check_input_settings(None, "w.pt", cfg)  # weights from before the record: not checked
    check_input_settings(trained, "w.pt", PreprocessConfig(depth_hole_fill_px=2, radar_input="db"))
    want = (r"w\.pt: .*depth_max_mm: trained with 4000\.0, .*; "
            r"depth_hole_fill_px: trained with 2, config/data\.yaml has 0")
    with pytest.raises(ValueError, match=want):
        check_input_settings(dict(trained, depth_max_mm=4000.0), "w.pt", PreprocessConfig())


def test_truncated_hdf5(copy_dir):
    path = copy_dir / "node_1" / "zed.hdf5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"node_1/zed\.hdf5.*cannot open HDF5"):
        GDTMRecording(copy_dir)


def test_missing_node_group_is_a_filled_gap(copy_dir):
    path = copy_dir / "node_2" / "realsense.hdf5"
    with h5py.File(path, "a") as f:
        ms = sorted(f)[3]
        del f[ms]["node_2"]
    rec = GDTMRecording(copy_dir)
    assert len(rec) == 40 and rec.source_ms(3, "depth", "node2") == rec.timestamps_ms[2]
    assert np.array_equal(rec.read(3, "depth", "node2"), rec.read(2, "depth", "node2"))
    assert rec.report.filled["node2/realsense_camera_depth"] == 1
    assert rec.report.filled["node1/realsense_camera_depth"] == 0


def test_missing_modality(copy_dir):
    (copy_dir / "node_1" / "mmwave.hdf5").unlink()
    with pytest.raises(DataError, match=r"dataset 'range_doppler' for node_1"):
        GDTMRecording(copy_dir)


def test_corrupt_jpeg(copy_dir):
    with h5py.File(copy_dir / "node_3" / "zed.hdf5", "a") as f:
        ms = sorted(f)[1]
        del f[ms]["node_3"]["zed_camera_left"]
        f[ms]["node_3"].create_dataset("zed_camera_left", data=np.arange(500, dtype=np.uint8))
    with pytest.raises(DataError, match=rf"zed.hdf5 at t={ms}: dataset 'zed_camera_left' of "
                                        r"node_3: corrupt encoded image"):
        GDTMRecording(copy_dir).read(1, "rgb", "node3")


def test_unreadable_dataset_names_file_key_and_dataset(copy_dir, monkeypatch):
    rec = GDTMRecording(copy_dir)
    ms = int(rec.timestamps_ms[2])

    def broken(self, key):
        raise OSError("Can't read data (inflate() failed)")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", broken)
    with pytest.raises(DataError, match=rf"node_1/mmwave.hdf5 at t={ms}: corrupt dataset "
                                        r"/\d+/node_1/range_doppler"):
        rec.read(2, "radar", "node1")


def test_mismatched_shapes(copy_dir):
    with h5py.File(copy_dir / "node_1" / "realsense.hdf5", "a") as f:
        ms = sorted(f)[2]
        del f[ms]["node_1"]["realsense_camera_depth"]
        f[ms]["node_1"].create_dataset("realsense_camera_depth", data=np.ones((60, 80), "u2"))
    rec = GDTMRecording(copy_dir)
    rec.read(0, "depth", "node1")
    with pytest.raises(DataError, match=rf"t={ms}: depth of node1 has shape \(60, 80\)"):
        rec.read(2, "depth", "node1")


def test_bad_mocap_and_missing_poses(copy_dir):
    meta = json.loads((copy_dir / "metadata.json").read_text())
    with h5py.File(copy_dir / "mocap.hdf5", "a") as f:
        ms = sorted(f)[4]
        good = f[ms]["mocap"][()]
        del f[ms]["mocap"]
        f[ms].create_dataset("mocap", data="{not json")
    with pytest.raises(DataError, match=rf"mocap.hdf5 at t={ms}: bad mocap JSON in dataset "
                                        "'mocap'"):
        GDTMRecording(copy_dir)
    with h5py.File(copy_dir / "mocap.hdf5", "a") as f:  # no node objects: poses from metadata
        for key in f:
            objs = [o for o in json.loads(f[key]["mocap"][()] if key != ms else good)
                    if o["type"] != "node"]
            del f[key]["mocap"]
            f[key].create_dataset("mocap", data=json.dumps(objs))
    assert "metadata.json" in GDTMRecording(copy_dir).report.pose_source
    del meta["node2"]["rot"]
    (copy_dir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="pose of node2"):
        GDTMRecording(copy_dir)
    (copy_dir / "metadata.json").unlink()
    with pytest.raises(DataError, match="no node poses"):
        GDTMRecording(copy_dir)


def test_colour_mapped_depth_jpeg(copy_dir):
    """Real GDTM RealSense depth is a colour-mapped JPEG: read back to approximate mm."""
    import cv2

    with h5py.File(copy_dir / "node_1" / "realsense.hdf5", "a") as f:
        ms = sorted(f)[0]
        mm = f[ms]["node_1"]["realsense_camera_depth"][()]
        idx = np.round(np.clip(mm / 6000.0, 0, 1) * 255).astype(np.uint8)
        jpeg = cv2.imencode(".jpg", cv2.applyColorMap(idx, cv2.COLORMAP_JET),
                            [cv2.IMWRITE_JPEG_QUALITY, 100])[1].reshape(-1)
        del f[ms]["node_1"]["realsense_camera_depth"]
        f[ms]["node_1"].create_dataset("realsense_camera_depth", data=jpeg)
    back = GDTMRecording(copy_dir).read(0, "depth", "node1").astype(float)
    valid = mm > 0
    assert np.median(np.abs(back[valid] - mm[valid])) < 100
