"""Synthetic generator: determinism, geometry consistency, radar, CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from admn_ros.cli import main
from admn_ros.data.config import load_scene
from admn_ros.data.gdtm import GDTMRecording
from admn_ros.data.generate import generate_recording, scene_renderers
from admn_ros.data.geometry import PinholeCamera
from admn_ros.data.testing import make_tiny_recording


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    return make_tiny_recording(tmp_path_factory.mktemp("gen"), frames=60, seed=3)


def _cameras(rec: GDTMRecording) -> dict[str, PinholeCamera]:
    cams = {}
    for node, pose in rec.node_poses().items():
        c = rec.camera_info(node)
        cams[node] = PinholeCamera(c["width"], c["height"], c["fx"], c["fy"], c["cx"], c["cy"],
                                   pose.rotation, pose.position)
    return cams


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_recording(tmp_path / "a", frames=6, seed=7)
    b = generate_recording(tmp_path / "b", frames=6, seed=7)
    c = generate_recording(tmp_path / "c", frames=6, seed=8)
    names = [f"node_{k}/{f}" for k in (1, 2, 3) for f in ("zed.hdf5", "realsense.hdf5",
                                                          "mmwave.hdf5")]
    for name in ("mocap.hdf5", *names):
        with h5py.File(a / name) as fa, h5py.File(b / name) as fb, h5py.File(c / name) as fc:
            assert sorted(fa) == sorted(fb) == sorted(fc)
            differs = False

            def check(path, obj, fb=fb, fc=fc):
                nonlocal differs
                if isinstance(obj, h5py.Dataset):
                    assert np.array_equal(obj[()], fb[path][()]), path
                    differs |= obj.shape != fc[path].shape or not np.array_equal(
                        obj[()], fc[path][()])

            fa.visititems(check)
            assert differs, name
    assert (a / "metadata.json").read_text() == (b / "metadata.json").read_text()


def test_existing_nonempty_output_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty directory"):
        generate_recording(tmp_path / "x", frames=2)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_depth_and_rgb_agree_with_projected_car(rec_dir):
    rec = GDTMRecording(rec_dir)
    cams = _cameras(rec)
    seen = depth_ok = colour_ok = 0
    for i in range(len(rec)):
        centre = rec.car_position(i)
        for node, cam in cams.items():
            if not cam.in_view(centre):
                continue
            (u, v), z = cam.project(centre)
            r, c = round(v), round(u)
            assert 0 <= r < cam.height and 0 <= c < cam.width
            seen += 1
            depth = rec.read(i, "depth", node)
            window = depth[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
            valid = window[window > 0]
            # the visible surface lies within the car's half-length of its centre
            if valid.size and abs(np.median(valid) / 1000.0 - z) < 0.25:
                depth_ok += 1
            rgb = rec.read(i, "rgb", node)[r, c].astype(int)
            if rgb[0] > rgb[2] + 40:  # red body or yellow top, never the blue/grey room
                colour_ok += 1
    assert seen >= 30
    assert depth_ok >= 0.85 * seen
    assert colour_ok >= 0.8 * seen


def test_radar_peak_at_car_range_and_velocity():
    renderers = scene_renderers("default", seed=0)
    rng = np.random.default_rng(0)
    checked = 0
    for node, r in renderers.items():
        for xz, vel in [((0.5, 0.3), (0.6, 0.2)), ((-1.0, 1.0), (-0.5, 0.5)),
                        ((1.2, -1.2), (0.0, -0.8))]:
            xz, vel = np.array(xz), np.array(vel)
            true_r, v_r, _theta = r._target(xz, vel)
            if abs(v_r) < 0.3:
                continue  # a car that does not move radially hides in the clutter column
            rd, az = r.radar(xz, vel, rng)
            assert rd.shape == (64, 32) and rd.dtype == np.float32 and az.shape == (64, 64)
            peak_r, peak_v = r.radar_peak(rd)
            assert abs(peak_r - true_r) <= 0.2, node
            assert abs(peak_v - v_r) <= 0.2, node
            checked += 1
    assert checked >= 4


def test_radar_repeated_at_4hz_and_mocap_in_metres(rec_dir):
    rec = GDTMRecording(rec_dir)
    stamps = {rec.stamp_ns(i, "radar", "node1") for i in range(len(rec))}
    duration = (rec.timestamps_ms[-1] - rec.timestamps_ms[0]) / 1000.0
    assert abs(len(stamps) - duration * 4) <= 2
    xyz = np.stack([rec.car_position(i) for i in range(len(rec))])
    assert np.all(np.abs(xyz[:, [0, 2]]) <= 2.0) and np.allclose(xyz[:, 1], xyz[0, 1])
    step = np.linalg.norm(np.diff(xyz[:, [0, 2]], axis=0), axis=1)
    assert step.max() < 0.1  # smooth: < 1.5 m/s at 15 Hz


def test_cli_generate(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "cli"), "--frames", "3", "--seed", "1",
                 "--quiet"]) == 0
    assert len(GDTMRecording(tmp_path / "cli")) == 3
    assert main(["generate", str(tmp_path / "bad"), "--frames", "2", "--scene", "nope"]) == 2
    assert "not found" in capsys.readouterr().err


def test_movers_are_bigger_and_green():
    r = scene_renderers("traffic", seed=0)["node3"]
    spot, yaw = np.array([0.4, 0.5]), 0.3

    def silhouette(look) -> np.ndarray:
        painted = np.zeros(r.bg_depth.shape, bool)
        r._paint(look, spot, yaw, r.bg_rgb.copy(), r.bg_depth.copy(), painted)
        return painted

    car, mover = silhouette(r.car), silhouette(r.mover)
    assert car.sum() > 30
    assert 1.5 * car.sum() < mover.sum() < 3.0 * car.sum()  # sides 2.3x, roof 1.5x the car's
    rgb, depth = r.render(np.array([-1.6, -1.6]), 0.0, 0.0, np.random.default_rng(1),
                          movers=[(spot, yaw)])
    (u, v), z = r.camera.project(np.array([spot[0], 0.12, spot[1]]))
    assert mover[round(v), round(u)]
    colour = rgb[round(v), round(u)].astype(int)
    assert colour[1] > colour[0] + 40  # its green body, never the red car
    assert abs(depth[round(v), round(u)] / 1000.0 - z) < 0.35  # within its half length


def test_movers_radar_return_scales_with_their_cross_section():
    r = scene_renderers("traffic", seed=0)["node1"]
    a, b = np.array([0.6, 0.4]), np.array([-0.3, 1.2])
    vel_a, vel_b = np.array([0.7, 0.5]), np.array([-0.6, 0.6])

    def bin_of(xz, vel):
        rng_m, v_r, _ = r._target(xz, vel, r.mover)
        db = (v_r + 2.0) / 4.0 * 32
        return round(rng_m / 0.1), int(np.clip(round(db), 0, 31))

    at_b = bin_of(b, vel_b)
    car_at_b = mover_at_b = 0.0
    for seed in range(60):  # the same draws, the car and a mover swapped between a and b
        car_at_b += r.radar(b, vel_b, np.random.default_rng(seed), [(a, vel_a)])[0][at_b]
        mover_at_b += r.radar(a, vel_a, np.random.default_rng(seed), [(b, vel_b)])[0][at_b]
    assert r.mover.radar_gain == 2.0
    assert mover_at_b / car_at_b == pytest.approx(2.0, rel=0.2)


def test_traffic_recording_tracks_only_the_car(tmp_path):
    rec_dir = make_tiny_recording(tmp_path, frames=4, seed=2, scene="traffic")
    meta = json.loads((rec_dir / "metadata.json").read_text())
    assert meta["admn"]["movers"]["count"] == 2
    with h5py.File(rec_dir / "mocap.hdf5") as f:
        objs = json.loads(f[sorted(f)[0]]["mocap"][()])
    assert [o["type"] for o in objs].count("truck") == 1 and len(objs) == 4  # 3 nodes + the car
    with pytest.raises(ValueError, match=r"movers\.count"):
        load_scene({"nodes": {"node1": {"position": [0, 1, 0]}}, "movers": {"count": -1}})
