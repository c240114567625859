"""Shared tiny configs for the core tests (no tests here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from admn_ros.core.config import ModelConfig, load_model_config

TINY = {
    "backbone": {"img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2},
    "fusion": {"dim": 32, "depth": 1, "num_heads": 2},
    "controller": {"img_size": 8, "stem_channels": [4, 8], "dim": 32, "depth": 1,
                   "num_heads": 2},
}


def tiny_cfg(**controller: object) -> ModelConfig:
    data = {k: dict(v) for k, v in TINY.items()}
    data["controller"].update(controller)
    return load_model_config(data)


def rand_inputs(cfg: ModelConfig, batch: int = 2, size: int | None = None,
                seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = size or cfg.backbone.img_size
    return {m: torch.rand(batch, cfg.num_nodes, cfg.in_chans[m], s, s, generator=g)
            for m in cfg.modalities}


@contextmanager
def count_block_calls(vits: nn.ModuleDict) -> Iterator[dict[tuple[str, int], int]]:
    """Within the block: calls of every backbone block, {(modality, block index): calls},
    counted by forward hooks that are removed on exit."""
    calls: dict[tuple[str, int], int] = {}
    handles = []
    for m, vit in vits.items():
        for i, blk in enumerate(vit.blocks):
            def hook(_mod, _inp, _out, key=(m, i)):
                calls[key] = calls.get(key, 0) + 1
            handles.append(blk.register_forward_hook(hook))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
