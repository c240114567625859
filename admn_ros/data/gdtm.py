"""Reader of GDTM recordings in the layouts GDTM's and ADMN's own tools write.

One reader for every layout (docs/DATA.md has the dataset -> topic -> model-input table):

- upstream folder (nesl/GDTM ``gdtm_preprocess``: ``chunk_N/``, ``merged/``)::

    mocap.hdf5               /<ms>/mocap                            JSON list of objects
    node_<k>/zed.hdf5        /<ms>/node_<k>/zed_camera_left         JPEG bytes [N] or [N, 1]
                             /<ms>/node_<k>/zed_camera_depth        uint16 [H, W] mm
    node_<k>/realsense.hdf5  /<ms>/node_<k>/realsense_camera_depth  colourised depth JPEG
    node_<k>/mmwave.hdf5     /<ms>/node_<k>/range_doppler           float32 [range, doppler]
                             /<ms>/node_<k>/azimuth_static          float32 grid (NaN = 0)

  each file holding only its own ``node_<k>`` group (``respeaker.hdf5`` is ignored);
- ADMN's split root ``<root>/{train,val,test}/``, each an upstream folder (splits used as given);
- the older flat folder: the same files directly in the folder, each holding every node.

Keys are epoch milliseconds on GDTM's 66 ms camera grid; the frames are the mocap keys (as
GDTM's and ADMN's cachers keep them). A sensor without a sample at a key repeats its previous
one (4 Hz radar already appears on about four keys); frames before every sensor and the car have
a value are dropped, and both are counted in `ReadReport`. NaN mocap positions take the last
known value (counted). Node poses come from the mocap ``type: "node"`` objects, else from a
``metadata.json`` beside or above the folder (also ``raw/metadata.json``, where GDTM keeps it);
their ``rot`` maps global to local, ``p_local = rot (p - T)``. Files written by this project
carry the root attribute ``admn_format``; such recordings are source ``admn`` (already in topic
units), others ``gdtm`` (see `admn_ros.data.sources`). A dataset may carry an int64 attribute
``stamp_ns`` (capture time); without it the key is the stamp.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import h5py
import numpy as np

from admn_ros.data.config import DataConfig, LayoutConfig, load_data_config
from admn_ros.data.errors import DataError
from admn_ros.data.sources import SourceConversion, decode_image, is_encoded_image

MODALITIES = ("rgb", "depth", "radar")
KEYS = (*MODALITIES, "radar_azimuth")
SPLIT_NAMES = ("train", "val", "test")
ADMN_ATTR = "admn_format"
LEGACY_FORMATS = ("admn_ros/gdtm-like/1", "admn_ros/gdtm-from-bag/1")  # rot was node -> world
METADATA_LEVELS = 3  # folders above a recording searched for metadata.json


@dataclass(frozen=True)
class NodePose:
    """A node's pose: position [3] (m, world) and rotation [3, 3] (node -> world)."""

    name: str
    position: np.ndarray
    rotation: np.ndarray


@dataclass
class ReadReport:
    """What reading a recording had to fill or drop (printed by `admn bag from-gdtm`)."""

    source: str
    pose_source: str
    frames: int = 0
    dropped_leading: int = 0
    mocap_nan_filled: int = 0
    filled: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"source {self.source}; node poses from {self.pose_source}",
               f"{self.frames} frames; {self.dropped_leading} leading frames dropped (before "
               f"every sensor and the car had a value); {self.mocap_nan_filled} frames with NaN "
               "mocap filled with the last known position"]
        gaps = {k: v for k, v in self.filled.items() if v}
        out.append("gaps filled with the previous sample: "
                   + (", ".join(f"{k} {v}" for k, v in sorted(gaps.items())) or "none"))
        return out


def group_name(node: str) -> str:
    """'node1' -> 'node_1'."""
    return f"node_{int(node[4:])}"


def node_name(group: str) -> str:
    """'node_1' -> 'node1'."""
    return f"node{int(group[5:])}"


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot open HDF5 (truncated or corrupt?): {err}") from None


def find_metadata(root: Path) -> Path | None:
    """metadata.json beside or above `root` (also in a `raw/` folder, where GDTM keeps it)."""
    for d in [root, *root.parents][:METADATA_LEVELS + 1]:
        for cand in (d / "metadata.json", d / "raw" / "metadata.json"):
            if cand.is_file():
                return cand
    return None


def split_root_parts(root: Path) -> list[Path]:
    """ADMN's train/val/test folders under `root` (empty when `root` is not a split root)."""
    parts = [root / s for s in SPLIT_NAMES if (root / s / "mocap.hdf5").is_file()]
    return parts if not (root / "mocap.hdf5").is_file() else []


# --------------------------------------------------------------------------- one folder
@dataclass
class _Folder:
    """One folder's streams: (dataset, node) -> (file, sorted int keys holding it)."""

    root: Path
    mocap_file: Path
    mocap_keys: np.ndarray
    streams: dict[tuple[str, str], tuple[Path, np.ndarray]]
    admn_written: bool


def _int_keys(f: h5py.File, path: Path) -> list[str]:
    keys = list(f.keys())
    bad = [k for k in keys if not k.isdigit()]
    if bad:
        raise DataError(path, f"group names must be epoch milliseconds, found {bad[:3]}")
    return keys


def _scan_folder(root: Path, wanted: set[str], mocap: str, h5: Callable) -> _Folder:
    """Find which file holds each wanted dataset of each node, and at which keys."""
    paths = [p for pat in ("*.hdf5", "*.h5", "node_*/*.hdf5", "node_*/*.h5")
             for p in sorted(root.glob(pat))]
    if not paths:
        raise DataError(root, "no HDF5 files (expected mocap.hdf5 and node_<k>/<sensor>.hdf5)")
    found: dict[tuple[str, str], tuple[Path, list[int]]] = {}
    mocap_file, mocap_keys, admn = None, [], False
    for path in paths:
        f = h5(path)
        admn |= ADMN_ATTR in f.attrs
        _int_keys(f, path)
        links: list[str] = []  # "<key>/<name>[/<name>]": one pass in HDF5, no objects
        try:
            f.visit_links(links.append)
        except (OSError, KeyError, RuntimeError, ValueError) as err:
            raise DataError(path, f"unreadable group: {err}") from None
        nodes: dict[str, str] = {}
        for link in links:
            parts = link.split("/")
            if len(parts) == 2 and parts[1] == mocap and mocap_file in (None, path):
                mocap_file = path
                mocap_keys.append(int(parts[0]))
            elif len(parts) == 3 and parts[2] in wanted and parts[1].startswith("node_"):
                node = nodes.get(parts[1]) or nodes.setdefault(parts[1], node_name(parts[1]))
                entry = found.setdefault((parts[2], node), (path, []))
                if entry[0] == path:
                    entry[1].append(int(parts[0]))
    if mocap_file is None:
        raise DataError(root, f"no HDF5 file holds the {mocap!r} dataset (mocap.hdf5)")
    streams = {k: (p, np.array(sorted(ks), np.int64)) for k, (p, ks) in found.items()}
    return _Folder(root, mocap_file, np.array(sorted(mocap_keys), np.int64), streams, admn)


# --------------------------------------------------------------------------- recording
class GDTMRecording:
    """Random access to one recording (an upstream folder, ADMN split root or flat folder).

    HDF5 files are opened lazily and reopened after a fork, so one instance can be shared
    with DataLoader workers. `read` returns topic units (see `admn_ros.data.sources`).
    """

    def __init__(self, root: str | Path, config: DataConfig | LayoutConfig | None = None,
                 source: str | None = None) -> None:
        self.root = Path(root)
        cfg = config if isinstance(config, DataConfig) else load_data_config()
        if isinstance(config, LayoutConfig):
            cfg = replace(cfg, layout=config)
        self.config, self.layout = cfg, cfg.layout
        if not self.root.is_dir():
            raise DataError(self.root, "recording directory not found")
        self._handles: dict[Path, h5py.File] = {}
        self._pid = os.getpid()
        self._shapes: dict[tuple[str, str], tuple] = {}
        parts = split_root_parts(self.root)
        self.split_names = tuple(p.name for p in parts)
        self.metadata_path = find_metadata(parts[0] if parts else self.root)
        self.metadata = self._read_metadata()
        wanted = set(self.layout.datasets.values()) | {
            c.depth.dataset for c in cfg.sources.values()} - {""}
        self.folders = [_scan_folder(p, wanted, self.layout.mocap, self._h5)
                        for p in (parts or [self.root])]
        self.source = self._pick_source(source or cfg.source)
        self.convert = SourceConversion(self.source, cfg)
        self.datasets = dict(self.layout.datasets)
        self.datasets["depth"] = cfg.sources[self.source].depth.dataset or self.datasets["depth"]
        self.nodes = self._find_nodes()
        self.keys = tuple(k for k in KEYS if all(self._has(f, k, n) for f in self.folders
                                                  for n in self.nodes))
        self._build_frames()
        self._poses, pose_source = self._node_poses()
        self.report.pose_source = pose_source

    # ---- discovery
    def _read_metadata(self) -> dict:
        if self.metadata_path is None:
            return {}
        try:
            meta = json.loads(self.metadata_path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(self.metadata_path, f"unreadable metadata JSON: {err}") from None
        if not isinstance(meta, dict):
            raise DataError(self.metadata_path, "metadata must be a JSON object")
        return meta

    def _pick_source(self, source: str) -> str:
        """`auto`: admn when the files say this project wrote them, else gdtm."""
        if source == "auto":
            admn = any(f.admn_written for f in self.folders) or "admn" in self.metadata
            source = "admn" if admn else "gdtm"
        if source not in self.config.sources:
            raise ValueError(f"unknown data source {source!r}; config/data.yaml defines "
                             f"{sorted(self.config.sources)}")
        return source

    def _has(self, f: _Folder, key: str, node: str) -> bool:
        return (self.datasets[key], node) in f.streams

    def _stream(self, f: _Folder, key: str, node: str) -> tuple[Path, np.ndarray]:
        return f.streams[self.datasets[key], node]

    def _find_nodes(self) -> list[str]:
        rgb = self.datasets["rgb"]
        per_folder = [sorted({n for (d, n) in f.streams if d == rgb}, key=lambda n: int(n[4:]))
                      for f in self.folders]
        nodes = per_folder[0]
        if not nodes:
            raise DataError(self.folders[0].root, f"no node_<k> group holds the rgb dataset "
                                                  f"{self.layout.datasets['rgb']!r}")
        for f, ns in zip(self.folders, per_folder, strict=True):
            if ns != nodes:
                raise DataError(f.root, f"nodes {ns} differ from {nodes} in "
                                        f"{self.folders[0].root}")
            for n in nodes:
                for k in MODALITIES:
                    if not self._has(f, k, n):
                        name = self.datasets[k]
                        raise DataError(f.root, f"no HDF5 file holds dataset {name!r} for "
                                                f"{group_name(n)} ({k}; source {self.source})")
        return nodes

    # ---- frames, gaps, mocap
    def _build_frames(self) -> None:
        """Frame grid = mocap keys; each stream's source key per frame (repeat the last)."""
        self.report = ReadReport(self.source, "")
        ms_parts, part_parts, src_parts, car_parts, rot_parts = [], [], [], [], []
        filled: dict[str, int] = {}
        for p, f in enumerate(self.folders):
            grid = f.mocap_keys
            car, rot, known, nan_filled = self._car_track(f, grid)
            src, start = {}, int(np.argmax(known)) if known.any() else len(grid)
            for key in self.keys:
                for n in self.nodes:
                    ks = self._stream(f, key, n)[1]
                    idx = np.searchsorted(ks, grid, side="right") - 1
                    first = int(np.argmax(idx >= 0)) if (idx >= 0).any() else len(grid)
                    start = max(start, first)
                    src[key, n] = np.where(idx >= 0, ks[np.maximum(idx, 0)], -1)
            keep = slice(start, None)
            self.report.dropped_leading += start
            self.report.mocap_nan_filled += int(nan_filled[keep].sum())
            for (key, n), s in src.items():
                label = f"{n}/{self.datasets[key]}"
                filled[label] = filled.get(label, 0) + int((s[keep] != grid[keep]).sum())
            ms_parts.append(grid[keep])
            part_parts.append(np.full(len(grid[keep]), p))
            src_parts.append({k: s[keep] for k, s in src.items()})
            car_parts.append(car[keep])
            rot_parts.append(rot[keep])
        ms = np.concatenate(ms_parts)
        order = np.argsort(ms, kind="stable")
        ms = ms[order]
        dup = ms[1:][ms[1:] == ms[:-1]]
        if len(dup):
            raise DataError(self.root, f"splits share the timestamp {int(dup[0])}")
        if not len(ms):
            raise DataError(self.root, "no frame where every sensor and the car have a value")
        self.timestamps_ms = ms
        self.part = np.concatenate(part_parts)[order]
        self._src = {k: np.concatenate([s[k] for s in src_parts])[order] for k in src_parts[0]}
        self._car = np.concatenate(car_parts)[order]
        self._car_rot = np.concatenate(rot_parts)[order]
        self.report.frames = len(ms)
        self.report.filled = filled

    def _mocap_objects(self, path: Path, ms: int) -> list[dict]:
        try:
            raw = self._h5(path)[str(ms)][self.layout.mocap][()]
            objs = json.loads(raw)
        except (OSError, KeyError, RuntimeError) as err:
            raise DataError(path, f"cannot read dataset {self.layout.mocap!r}: {err}", ms) \
                from None
        except (ValueError, TypeError) as err:
            raise DataError(path, f"bad mocap JSON in dataset {self.layout.mocap!r}: {err}",
                            ms) from None
        if not isinstance(objs, list):
            raise DataError(path, f"dataset {self.layout.mocap!r} must be a JSON list of "
                                  "objects", ms)
        return objs

    def _car_track(self, f: _Folder, grid: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Car position [N, 3], rotation [N, 9], known [N] and NaN-filled [N] per mocap key."""
        n = len(grid)
        pos, rot = np.full((n, 3), np.nan), np.tile(np.eye(3).reshape(-1), (n, 1))
        known, nan_filled = np.zeros(n, bool), np.zeros(n, bool)
        car_id, last = None, None
        for i, ms in enumerate(grid):
            cars = [o for o in self._mocap_objects(f.mocap_file, int(ms))
                    if isinstance(o, dict) and o.get("type") in self.layout.car_types]
            if car_id is None and cars:
                car_id = cars[0].get("id")
            obj = next((o for o in cars if o.get("id") == car_id), cars[0] if cars else None)
            p = np.full(3, np.nan)
            if obj is not None:
                try:
                    p = np.asarray(obj.get("position", ()), float).reshape(3)
                    rot[i] = np.asarray(obj.get("rotation", rot[i]), float).reshape(9)
                except (TypeError, ValueError):
                    raise DataError(f.mocap_file, f"car position {obj.get('position')} / "
                                                  "rotation is not 3 / 9 numbers", int(ms)) \
                        from None
            if not np.isfinite(p).all():
                if last is None:
                    continue
                nan_filled[i] = True
                p = np.where(np.isfinite(p), p, last)
            pos[i], known[i], last = p, True, p
        if car_id is None:
            raise DataError(f.mocap_file, f"no car object (types {list(self.layout.car_types)})")
        return pos, rot, known, nan_filled

    # ---- handles
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

    @property
    def files(self) -> list[Path]:
        """Every HDF5 file the recording reads."""
        out = {f.mocap_file: None for f in self.folders}
        for f in self.folders:
            out |= {p: None for p, _ in f.streams.values()}
        return list(out)

    def split_indices(self, split: str) -> np.ndarray:
        """Frame indices of an ADMN split folder ('train', 'val', 'test') of a split root."""
        if split not in self.split_names:
            raise ValueError(f"split {split!r} not in {self.root} (has {list(self.split_names)})")
        return np.flatnonzero(self.part == self.split_names.index(split))

    # ---- raw access
    def source_ms(self, i: int, key: str, node: str) -> int:
        """Key (ms) whose sample frame i uses: the frame's own, or an earlier one in a gap."""
        return int(self._src[key, node][i])

    def _dataset(self, i: int, key: str, node: str) -> tuple[h5py.Dataset, Path, int]:
        path = self._stream(self.folders[self.part[i]], key, node)[0]
        ms = self.source_ms(i, key, node)
        name = self.datasets[key]
        try:
            return self._h5(path)[str(ms)][group_name(node)][name], path, ms
        except (OSError, KeyError, RuntimeError) as err:
            raise DataError(path, f"cannot read dataset {name!r} of {group_name(node)}: {err}",
                            ms) from None

    def raw(self, i: int, key: str, node: str) -> np.ndarray:
        """The stored array of `key` (rgb, depth, radar, radar_azimuth) at frame i."""
        ds, path, ms = self._dataset(i, key, node)
        try:
            return ds[()]
        except (OSError, RuntimeError) as err:
            raise DataError(path, f"corrupt dataset {ds.name}: {err}", ms) from None

    def stamp_ns(self, i: int, key: str, node: str) -> int:
        """Capture stamp (ns) of `key` at frame i: the `stamp_ns` attribute or the key's ms."""
        ds, _, ms = self._dataset(i, key, node)
        stamp = ds.attrs.get("stamp_ns")
        return int(stamp) if stamp is not None else ms * 1_000_000

    # ---- decoded access
    def read(self, i: int, key: str, node: str) -> np.ndarray:
        """Frame i of `key` in topic units.

        rgb: uint8 [H, W, 3] RGB; depth: uint16 [H, W] mm (0 = hole); radar: float32 [R, D]
        (see `admn_ros.data.sources`); radar_azimuth: float32 2-D (NaN set to 0, as GDTM does).
        """
        arr = self.raw(i, key, node)
        _, path, ms = self._dataset(i, key, node)
        try:
            if key == "rgb":
                out = self._rgb(arr)
            elif key == "depth":
                out = self.convert.depth(arr)
            elif key == "radar":
                out = self.convert.radar(arr)
            else:
                if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
                    raise ValueError(f"must be a float 2-D map, got {arr.dtype} "
                                     f"{list(arr.shape)}")
                out = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0)
        except ValueError as err:
            raise DataError(path, f"dataset {self.datasets[key]!r} of {group_name(node)}: "
                                  f"{err}", ms) from None
        expected = self._shapes.setdefault((key, node), out.shape)
        if out.shape != expected:
            raise DataError(path, f"{key} of {node} has shape {out.shape}, earlier frames "
                                  f"had {expected}", ms)
        return out

    @staticmethod
    def _rgb(arr: np.ndarray) -> np.ndarray:
        if is_encoded_image(arr):
            img = decode_image(arr, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError("corrupt encoded image (cannot decode)")
            return np.ascontiguousarray(img[..., ::-1])
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"rgb must be an encoded image or uint8 [H, W, 3], got "
                             f"{arr.dtype} {list(arr.shape)}")
        return np.ascontiguousarray(arr)

    # ---- ground truth
    def mocap(self, i: int) -> list[dict]:
        """Mocap objects at frame i as stored (GDTM JSON: id, type, position [m, y up], ...)."""
        return self._mocap_objects(self.folders[self.part[i]].mocap_file,
                                   int(self.timestamps_ms[i]))

    def car_position(self, i: int) -> np.ndarray:
        """Car position [3] in metres (world, y up) at frame i (NaN filled)."""
        return self._car[i].copy()

    def car_rotation(self, i: int) -> np.ndarray:
        """Car rotation [3, 3] as the mocap stores it."""
        return self._car_rot[i].reshape(3, 3).copy()

    def target_cm(self, i: int) -> np.ndarray:
        """Model target: (x, z) of the car in centimetres, float32 [2]."""
        p = self._car[i]
        return np.array([p[0] * 100.0, p[2] * 100.0], dtype=np.float32)

    def targets_cm(self) -> np.ndarray:
        """Targets of every frame, float32 [N, 2]."""
        return (self._car[:, [0, 2]] * 100.0).astype(np.float32)

    # ---- nodes
    def _legacy_rotation(self) -> bool:
        return self.metadata.get("admn", {}).get("format") in LEGACY_FORMATS

    def _node_poses(self) -> tuple[dict[str, NodePose], str]:
        """Poses from the mocap node objects, else from metadata.json."""
        legacy = self._legacy_rotation()
        f = self.folders[0]
        for ms in f.mocap_keys:
            objs = {f"node{int(o['id']) + 1}": o for o in self._mocap_objects(f.mocap_file, ms)
                    if isinstance(o, dict) and o.get("type") == "node" and "id" in o}
            if not all(n in objs for n in self.nodes):
                break
            try:
                poses = {n: self._pose(n, objs[n]["position"], objs[n]["rotation"], legacy)
                         for n in self.nodes}
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f.mocap_file, f"node object needs a position [3] and a "
                                              f"rotation [9]: {err}", int(ms)) from None
            if all(np.isfinite(p.position).all() for p in poses.values()):
                return poses, f"mocap node objects ({f.mocap_file.name})"
        if self.metadata_path is None:
            raise DataError(self.root, "no node poses: the mocap has no type 'node' objects "
                                       "for every node and no metadata.json was found beside "
                                       "or above the folder")
        out = {}
        for n in self.nodes:
            m = self.metadata.get(n)
            try:
                out[n] = self._pose(n, [m["x"], m["y"], m["z"]], m["rot"], legacy)
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(self.metadata_path, f"pose of {n} needs x, y, z and a "
                                                    f"9-element rot: {err!r}") from None
        return out, str(self.metadata_path)

    @staticmethod
    def _pose(node: str, position: object, rot: object, legacy: bool) -> NodePose:
        r = np.asarray(rot, float).reshape(3, 3)
        return NodePose(node, np.asarray(position, float).reshape(3), r if legacy else r.T)

    def node_poses(self) -> dict[str, NodePose]:
        """Pose of every node (rotation node -> world, the transpose of GDTM's `rot`)."""
        return dict(self._poses)

    def camera_info(self, node: str) -> dict | None:
        """Intrinsics of a node's camera when the metadata has them (generated recordings)."""
        return self.metadata.get("admn", {}).get("nodes", {}).get(node, {}).get("camera")


# --------------------------------------------------------------------------- writing
def open_upstream_files(out: Path, nodes: list[str], layout: LayoutConfig, fmt: str
                        ) -> dict[tuple[str, str | None], h5py.File]:
    """Create the upstream layout's files: mocap.hdf5 and node_<k>/<sensor>.hdf5.

    Returns {("mocap", None): file, (key, node): file} for rgb, depth and radar (radar_azimuth
    shares radar's file). Every file carries the root attribute `admn_format` = `fmt`.
    """
    files: dict[tuple[str, str | None], h5py.File] = {}
    f = files["mocap", None] = h5py.File(out / layout.files["mocap"], "w")
    f.attrs[ADMN_ATTR] = fmt
    for node in nodes:
        d = out / group_name(node)
        d.mkdir(parents=True, exist_ok=True)
        for key in MODALITIES:
            f = files[key, node] = h5py.File(d / layout.files[key], "w")
            f.attrs[ADMN_ATTR] = fmt
        files["radar_azimuth", node] = files["radar", node]
    return files


def node_group(files: dict, key: str, node: str, ms: int | str) -> h5py.Group:
    """The /<ms>/node_<k> group of `key`'s file for `node` (created when absent)."""
    return files[key, node].require_group(str(ms)).require_group(group_name(node))
