"""Reader of the processed GDTM layout.

A recording is a directory with one HDF5 file per modality and a ``metadata.json``::

    metadata.json          {"node1": {"x", "y", "z", "rot": [9]}, ..., "admn": {...optional}}
    mocap.hdf5             /<ms>/mocap                       JSON list of objects (m, y up)
    zed.hdf5               /<ms>/node_<k>/zed_camera_left    uint8 JPEG bytes
    realsense.hdf5         /<ms>/node_<k>/realsense_camera_depth  uint16 [H, W] mm (or JPEG)
    mmwave.hdf5            /<ms>/node_<k>/range_doppler      float32 [range, doppler]
                           /<ms>/node_<k>/azimuth_static     float32 grid

Groups are keyed by epoch milliseconds on the camera frame grid; radar (4 Hz) is repeated on
that grid. File names do not matter: each file is identified by the datasets it holds. Which
dataset is the project's rgb / depth / radar input is set in config/data.yaml (`layout`).
A dataset may carry an int64 attribute ``stamp_ns`` (the capture time); without it the
frame's millisecond key is the stamp.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import h5py
import numpy as np

from admn_ros.data.config import LayoutConfig, load_data_config
from admn_ros.data.errors import DataError

MODALITIES = ("rgb", "depth", "radar")
KEYS = (*MODALITIES, "radar_azimuth")


@dataclass(frozen=True)
class NodePose:
    """A node's pose: position [3] (m, world) and rotation [3, 3] (node -> world)."""

    name: str
    position: np.ndarray
    rotation: np.ndarray


def group_name(node: str) -> str:
    """'node1' -> 'node_1'."""
    return f"node_{int(node[4:])}"


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot open HDF5 (truncated or corrupt?): {err}") from None


@cache
def _colormap_inverse(name: str) -> np.ndarray:
    """[32, 32, 32] table: quantised BGR colour -> 0..255 index of the colour map."""
    cmap = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO}[name]
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cmap)[:, 0].astype(float)
    q = (np.arange(32) * 8 + 4).astype(float)
    grid = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    idx = np.empty(len(grid), np.uint8)
    for s in range(0, len(grid), 4096):
        d = ((grid[s:s + 4096, None, :] - lut[None]) ** 2).sum(-1)
        idx[s:s + 4096] = d.argmin(1)
    return idx.reshape(32, 32, 32)


class GDTMRecording:
    """Random access to one GDTM-layout recording.

    HDF5 files are opened lazily and reopened after a fork, so one instance can be shared
    with DataLoader workers.
    """

    def __init__(self, root: str | Path, layout: LayoutConfig | None = None) -> None:
        self.root = Path(root)
        self.layout = layout or load_data_config().layout
        if not self.root.is_dir():
            raise DataError(self.root, "recording directory not found")
        self.metadata = self._read_metadata()
        self.nodes = sorted((k for k in self.metadata if k.startswith("node") and k[4:].isdigit()),
                            key=lambda n: int(n[4:]))
        if not self.nodes:
            raise DataError(self.root / "metadata.json", "no node<k> entries with a pose")
        self._handles: dict[Path, h5py.File] = {}
        self._pid = os.getpid()
        self._shapes: dict[tuple[str, str], tuple] = {}
        self.files = self._find_files()
        self.timestamps_ms = self._frame_grid()

    # ---- discovery
    def _read_metadata(self) -> dict:
        path = self.root / "metadata.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(path, "metadata file with the node poses is missing") from None
        except (OSError, ValueError) as err:
            raise DataError(path, f"unreadable metadata JSON: {err}") from None
        if not isinstance(meta, dict):
            raise DataError(path, "metadata must be a JSON object")
        return meta

    def _find_files(self) -> dict[str, Path]:
        """Map rgb/depth/radar/radar_azimuth/mocap to the HDF5 file holding that dataset."""
        wanted = {v: k for k, v in self.layout.datasets.items()}
        found: dict[str, Path] = {}
        paths = sorted(self.root.glob("*.hdf5")) + sorted(self.root.glob("*.h5"))
        if not paths:
            raise DataError(self.root, "no HDF5 files in the recording")
        for path in paths:
            f = self._h5(path)
            first = next(iter(f.keys()), None)
            if first is None:
                raise DataError(path, "HDF5 file has no timestamp groups")
            grp = f[first]
            if self.layout.mocap in grp:
                found.setdefault("mocap", path)
            for sub in grp.values():
                if isinstance(sub, h5py.Group):
                    for name in sub:
                        if name in wanted:
                            found.setdefault(wanted[name], path)
        missing = [k for k in (*MODALITIES, "mocap") if k not in found]
        if missing:
            names = [self.layout.datasets.get(k, self.layout.mocap) for k in missing]
            raise DataError(self.root, f"no HDF5 file holds the dataset(s) {names} "
                                       f"(modalities {missing})")
        return found

    def _frame_grid(self) -> np.ndarray:
        """Frame timestamps: the camera grid, kept where every file has the group."""
        keys = None
        for path in dict.fromkeys(self.files.values()):
            try:
                ks = {int(k) for k in self._h5(path)}
            except ValueError:
                raise DataError(path, "group names must be epoch milliseconds") from None
            keys = ks if keys is None else keys & ks
        if not keys:
            raise DataError(self.root, "the HDF5 files share no timestamp")
        return np.array(sorted(keys), dtype=np.int64)

    def _h5(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:  # forked worker: never reuse the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if path not in self._handles:
            self._handles[path] = _open_h5(path)
        return self._handles[path]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}

    def __enter__(self) -> GDTMRecording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.timestamps_ms)

    # ---- raw access
    def _dataset(self, i: int, key: str, node: str | None) -> h5py.Dataset:
        path = self.files[key]
        ms = str(int(self.timestamps_ms[i]))
        name = self.layout.mocap if key == "mocap" else self.layout.datasets[key]
        try:
            grp = self._h5(path)[ms]
            if node is not None:
                gname = group_name(node)
                if gname not in grp:
                    raise DataError(path, f"node group {gname!r} missing", ms)
                grp = grp[gname]
            if name not in grp:
                raise DataError(path, f"dataset {name!r} missing"
                                + (f" in {group_name(node)}" if node else ""), ms)
            return grp[name]
        except DataError:
            raise
        except (OSError, KeyError, RuntimeError) as err:
            raise DataError(path, f"cannot read {name!r}: {err}", ms) from None

    def raw(self, i: int, key: str, node: str) -> np.ndarray:
        """The stored array of `key` (rgb, depth, radar, radar_azimuth) at frame i."""
        ds = self._dataset(i, key, node)
        try:
            return ds[()]
        except (OSError, RuntimeError) as err:
            raise DataError(self.files[key], f"corrupt {ds.name}: {err}",
                            int(self.timestamps_ms[i])) from None

    def stamp_ns(self, i: int, key: str, node: str) -> int:
        """Capture stamp (ns) of `key` at frame i: the `stamp_ns` attribute or the frame ms."""
        ds = self._dataset(i, key, node)
        stamp = ds.attrs.get("stamp_ns")
        return int(stamp) if stamp is not None else int(self.timestamps_ms[i]) * 1_000_000

    # ---- decoded access
    def read(self, i: int, key: str, node: str) -> np.ndarray:
        """Decoded sensor array at frame i.

        rgb: uint8 [H, W, 3] RGB; depth: uint16 [H, W] mm (0 = hole);
        radar / radar_azimuth: float32 2-D (NaN in azimuth maps set to 0, as GDTM does).
        """
        arr = self.raw(i, key, node)
        ms = int(self.timestamps_ms[i])
        path = self.files[key]
        if key == "rgb":
            out = self._decode_jpeg(arr, path, ms, cv2.IMREAD_COLOR)[..., ::-1] \
                if arr.ndim == 1 else arr
            if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
                raise DataError(path, f"rgb must be JPEG bytes or uint8 [H, W, 3], got "
                                      f"{out.dtype} {out.shape}", ms)
            out = np.ascontiguousarray(out)
        elif key == "depth":
            if arr.ndim == 1 and arr.dtype == np.uint8:
                out = self._depth_from_jpeg(arr, path, ms)
            elif arr.ndim == 2 and arr.dtype == np.uint16:
                out = arr
            else:
                raise DataError(path, f"depth must be uint16 [H, W] mm or JPEG bytes, got "
                                      f"{arr.dtype} {arr.shape}", ms)
        else:
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
                raise DataError(path, f"{key} must be a float 2-D map, got {arr.dtype} "
                                      f"{arr.shape}", ms)
            out = arr.astype(np.float32, copy=False)
            if key == "radar_azimuth":
                out = np.nan_to_num(out, nan=0.0)
        expected = self._shapes.setdefault((key, node), out.shape)
        if out.shape != expected:
            raise DataError(path, f"{key} of {node} has shape {out.shape}, earlier frames "
                                  f"had {expected}", ms)
        return out

    @staticmethod
    def _decode_jpeg(arr: np.ndarray, path: Path, ms: int, flags: int) -> np.ndarray:
        img = cv2.imdecode(np.ascontiguousarray(arr, dtype=np.uint8), flags) \
            if arr.dtype == np.uint8 and arr.size else None
        if img is None:
            raise DataError(path, "corrupt JPEG (cannot decode)", ms)
        return img

    def _depth_from_jpeg(self, arr: np.ndarray, path: Path, ms: int) -> np.ndarray:
        """Colour-mapped depth JPEG (GDTM RealSense) back to approximate millimetres."""
        cfg = self.layout.depth_jpeg
        img = self._decode_jpeg(arr, path, ms, cv2.IMREAD_COLOR)
        if cfg.colormap == "gray":
            idx = img.mean(-1)
        else:
            q = (img // 8).astype(np.intp)
            idx = _colormap_inverse(cfg.colormap)[q[..., 0], q[..., 1], q[..., 2]]
        return np.round(idx.astype(np.float64) / 255.0 * cfg.max_mm).astype(np.uint16)

    # ---- ground truth
    def mocap(self, i: int) -> list[dict]:
        """Mocap objects at frame i (GDTM JSON: id, type, position [m, y up], rotation...)."""
        ds = self._dataset(i, "mocap", None)
        try:
            objs = json.loads(ds[()])
        except (ValueError, TypeError, OSError) as err:
            raise DataError(self.files["mocap"], f"bad mocap JSON: {err}",
                            int(self.timestamps_ms[i])) from None
        if not isinstance(objs, list):
            raise DataError(self.files["mocap"], "mocap JSON must be a list of objects",
                            int(self.timestamps_ms[i]))
        return objs

    def car_position(self, i: int) -> np.ndarray:
        """Car position [3] in metres (world, y up) at frame i."""
        ms = int(self.timestamps_ms[i])
        for obj in self.mocap(i):
            if obj.get("type") in self.layout.car_types:
                pos = np.asarray(obj.get("position", ()), float)
                if pos.shape != (3,) or not np.isfinite(pos).all():
                    raise DataError(self.files["mocap"], f"car position {pos.tolist()} is not "
                                                         "3 finite numbers", ms)
                return pos
        raise DataError(self.files["mocap"], f"no car object (types {self.layout.car_types})",
                        ms)

    def target_cm(self, i: int) -> np.ndarray:
        """Model target: (x, z) of the car in centimetres, float32 [2]."""
        p = self.car_position(i)
        return np.array([p[0] * 100.0, p[2] * 100.0], dtype=np.float32)

    def targets_cm(self) -> np.ndarray:
        """Targets of every frame, float32 [N, 2]."""
        return np.stack([self.target_cm(i) for i in range(len(self))])

    # ---- nodes
    def node_poses(self) -> dict[str, NodePose]:
        """Pose of every node from the metadata file."""
        out = {}
        path = self.root / "metadata.json"
        for n in self.nodes:
            m = self.metadata[n]
            try:
                pos = np.array([m["x"], m["y"], m["z"]], float)
                rot = np.asarray(m["rot"], float).reshape(3, 3)
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(path, f"pose of {n} needs x, y, z and a 9-element rot: "
                                      f"{err}") from None
            out[n] = NodePose(n, pos, rot)
        return out

    def camera_info(self, node: str) -> dict | None:
        """Intrinsics of a node's camera when the metadata has them (generated recordings)."""
        return self.metadata.get("admn", {}).get("nodes", {}).get(node, {}).get("camera")
