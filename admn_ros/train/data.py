"""Splits of a GDTM-layout recording, decoded once into in-memory tensors, and a batch iterator.

Decoding JPEG/HDF5 every epoch would dominate CPU training, so each split is read once through
`admn_ros.data.dataset.GDTMDataset` (the one place that normalises; its disk cache makes
re-reading cheap) and kept as float16 tensors. Batches are drawn by indexing those tensors:
every rank takes its own shard of one seeded permutation, so all ranks run the same number of
steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from admn_ros.core.config import ModelConfig
from admn_ros.train import distributed as D


@dataclass
class Split:
    name: str
    inputs: dict[str, Tensor]  # {m: [N, S, C, s, s]} float16 in [0, 1]
    target: Tensor  # [N, 2] cm
    index: Tensor  # [N] dataset index

    def __len__(self) -> int:
        return len(self.target)

    def batch(self, idx: Tensor, device: torch.device) -> dict:
        return {"inputs": {m: x[idx].to(device, torch.float32) for m, x in self.inputs.items()},
                "target": self.target[idx].to(device), "index": self.index[idx]}


def load_split(root: str | Path, split: str, model_cfg: ModelConfig,
               min_samples: int = 1, progress: bool = False) -> Split:
    """Read a split into float16 tensors; ValueError if it is missing, empty or too small."""
    from admn_ros.data.dataset import GDTMDataset

    root = Path(root)
    if not (root / "metadata.json").exists() and not root.is_dir():
        raise ValueError(f"data root: expected a GDTM-layout recording at {root}, found nothing "
                         f"(generate one with `admn generate {root}`)")
    ds = GDTMDataset(root, split, model_cfg.backbone.img_size, modalities=model_cfg.modalities,
                     nodes=model_cfg.nodes, cache="disk", progress=progress)
    n = len(ds)
    if n < max(1, min_samples):
        raise ValueError(f"split {split!r} of {root}: expected at least {max(1, min_samples)} "
                         f"samples, got {n} (record more frames or lower data.min_samples)")
    items = [ds[i] for i in range(n)]
    inputs = {m: torch.stack([it["inputs"][m] for it in items]).to(torch.float16)
              for m in model_cfg.modalities}
    target = torch.stack([torch.as_tensor(it["target"], dtype=torch.float32) for it in items])
    index = torch.tensor([int(it["index"]) for it in items], dtype=torch.long)
    return Split(split, inputs, target, index)


def iterate_batches(data: Split, batch_size: int, device: torch.device, *, shuffle: bool,
                    seed: int = 0, epoch: int = 0, drop_last: bool = True,
                    max_steps: int | None = None) -> Iterator[dict]:
    """Batches of this rank's shard. Training: seeded shuffle, drop_last (equal steps per rank)."""
    n = len(data)
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    world, r = D.world_size(), D.rank()
    per_rank = n // world if drop_last else -(-n // world)
    order = order[r * per_rank:(r + 1) * per_rank] if drop_last else order[r::world]
    steps = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    if drop_last and steps == 0:
        raise ValueError(f"split {data.name!r}: expected at least batch_size x ranks = "
                         f"{batch_size * world} samples, got {n}")
    if max_steps is not None:
        steps = min(steps, max_steps)
    for i in range(steps):
        yield data.batch(order[i * batch_size:(i + 1) * batch_size], device)


def steps_per_epoch(data: Split | int, batch_size: int, max_steps: int | None = None) -> int:
    """Steps of one epoch over a split (or a split of `data` samples) on this rank."""
    n = data if isinstance(data, int) else len(data)
    steps = (n // D.world_size()) // batch_size
    return steps if max_steps is None else min(steps, max_steps)


def input_reference(data: Split, modality: str, max_frames: int = 2000) -> Tensor:
    """Per-node median image of a split, [S, C, s, s]: the empty scene each static sensor sees
    (the car moves, so at each pixel the room is what most frames show). At most `max_frames`
    evenly spaced frames."""
    x = data.inputs[modality]  # [N, S, C, s, s]
    idx = torch.linspace(0, len(x) - 1, min(len(x), max_frames)).round().long()
    return x[idx].float().median(0).values
