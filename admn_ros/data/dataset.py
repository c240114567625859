"""Torch Dataset over one GDTM recording (any layout `admn_ros.data.gdtm` reads).

Splits: an ADMN split root (``<root>/{train,val,test}/``) is split as given; any other
recording by the contiguous time fractions of config/data.yaml ``splits``.

``dataset[i]`` is ``{"inputs": {mod: Tensor [S, C, s, s]}, "target": Tensor [2] (cm),
"stamp_ns": int, "index": int}``; the default collate gives ``[B, S, C, s, s]``.

Decoding is done once: with ``cache="disk"`` (default) the preprocessed frames of the whole
recording go to ``<root>/.admn_cache/<key>_<modality>.npy`` (float16) and are memory-mapped
by each worker; ``cache="memory"`` keeps them in RAM (shared copy-on-write with forked
workers); ``cache="none"`` decodes on every access with HDF5 opened lazily per worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from admn_ros.data.config import DataConfig, load_data_config
from admn_ros.data.gdtm import MODALITIES, GDTMRecording
from admn_ros.data.preprocess import Preprocess

CACHE_DIR = ".admn_cache"
CACHE_VERSION = 2


def split_indices(n: int, split: str, splits: dict[str, Sequence[float]]) -> np.ndarray:
    """Frame indices of a contiguous time split given as [start, end) fractions."""
    if split == "all":
        return np.arange(n)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(splits)} or 'all'")
    lo, hi = splits[split]
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"split {split!r} fractions must satisfy 0 <= start <= end <= 1, "
                         f"got {lo}, {hi}")
    return np.arange(round(lo * n), round(hi * n))


class GDTMDataset(Dataset):
    """Preprocessed per-node inputs, (x, z) targets in cm and stamps of one recording split."""

    def __init__(self, root: str | Path, split: str = "train", img_size: int = 64,
                 modalities: Sequence[str] = MODALITIES, nodes: Sequence[str] | None = None,
                 cache: str = "disk", data_config: DataConfig | None = None,
                 preprocess: Preprocess | None = None, progress: bool = False) -> None:
        cfg = data_config or load_data_config()
        if cache not in ("disk", "memory", "none"):
            raise ValueError(f"cache must be 'disk', 'memory' or 'none', got {cache!r}")
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; expected some of {MODALITIES}")
        self.recording = GDTMRecording(root, cfg)
        self.root = self.recording.root
        self.modalities = tuple(modalities)
        self.nodes = list(nodes) if nodes is not None else list(self.recording.nodes)
        missing = [n for n in self.nodes if n not in self.recording.nodes]
        if missing:
            raise ValueError(f"nodes {missing} not in {self.root} (has {self.recording.nodes})")
        self.preprocess = preprocess or Preprocess.from_config(img_size, cfg.preprocess)
        self.img_size = self.preprocess.img_size
        self.split = split
        self.indices = self.recording.split_indices(split) \
            if self.recording.split_names and split != "all" \
            else split_indices(len(self.recording), split, cfg.splits)
        self.targets = self.recording.targets_cm()[self.indices]
        self.stamps_ns = self.recording.timestamps_ms[self.indices] * 1_000_000
        self.cache = cache
        self._arrays: dict[str, np.ndarray] = {}
        self._paths: dict[str, Path] = {}
        self._progress = progress
        if cache == "memory":
            self._arrays = self._decode_all()
        elif cache == "disk":
            self._prepare_disk_cache()

    # ---- caching
    def _cache_key(self) -> str:
        files = sorted(self.recording.files)
        desc = {
            "v": CACHE_VERSION, "pre": repr(self.preprocess), "nodes": self.nodes,
            "layout": repr(self.recording.layout), "source": self.recording.source,
            "conversion": repr(self.recording.config.sources[self.recording.source]),
            "files": [(str(p.relative_to(self.root)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in files],
        }
        return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def _decode_all(self, modalities: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Preprocess every frame of the recording: {mod: float16 [N, S, C, s, s]}."""
        mods = tuple(modalities or self.modalities)
        n, s = len(self.recording), self.img_size
        out = {m: np.empty((n, len(self.nodes), 3 if m == "rgb" else 1, s, s), np.float16)
               for m in mods}
        for i in tqdm(range(n), desc=f"decode {self.root.name}", disable=not self._progress):
            for m in mods:
                for k, node in enumerate(self.nodes):
                    out[m][i, k] = self.preprocess.numpy(m, self.recording.read(i, m, node))
        return out

    def _prepare_disk_cache(self) -> None:
        cache_dir = self.root / CACHE_DIR
        key = self._cache_key()
        self._paths = {m: cache_dir / f"{key}_{m}.npy" for m in self.modalities}
        todo = [m for m, p in self._paths.items() if not p.exists()]
        if not todo:
            return
        try:
            cache_dir.mkdir(exist_ok=True)
        except OSError as err:
            warnings.warn(f"{cache_dir}: cannot write the decode cache ({err}); keeping it in "
                          "memory", stacklevel=2)
            self.cache, self._paths = "memory", {}
            self._arrays = self._decode_all()
            return
        arrays = self._decode_all(todo)
        for m, arr in arrays.items():
            tmp = self._paths[m].with_name(f"{self._paths[m].stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, self._paths[m])

    def _array(self, m: str) -> np.ndarray:
        if m not in self._arrays:  # memory-map lazily, once per process
            self._arrays[m] = np.load(self._paths[m], mmap_mode="r")
        return self._arrays[m]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.cache == "disk":
            state["_arrays"] = {}
        return state

    # ---- Dataset
    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = int(i) % len(self)
        j = int(self.indices[i])
        if self.cache == "none":
            inputs = {m: torch.from_numpy(np.stack(
                [self.preprocess.numpy(m, self.recording.read(j, m, node))
                 for node in self.nodes])) for m in self.modalities}
        else:
            inputs = {m: torch.from_numpy(np.asarray(self._array(m)[j], np.float32))
                      for m in self.modalities}
        return {"inputs": inputs, "target": torch.from_numpy(self.targets[i].copy()),
                "stamp_ns": int(self.stamps_ns[i]), "index": j}
