"""Shared tiny configs for the core tests (no tests here)."""

from __future__ import annotations

import torch

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
