"""Tiny model and helpers shared by the engine tests (holds no tests itself)."""

from __future__ import annotations

import torch

from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN

TINY = {
    "backbone": {"img_size": 16, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2},
    "fusion": {"dim": 32, "depth": 1, "num_heads": 2},
    # with the noise prior on, so the engine's controller part is checked against it too
    "controller": {"img_size": 8, "stem_channels": [4], "dim": 16, "depth": 1, "num_heads": 2,
                   "noise_prior": 1.5},
}


def tiny_modules(seed: int = 0) -> tuple[ADMN, Controller]:
    """Tiny ADMN + controller with a random (non-zero) head so outputs depend on the inputs."""
    torch.manual_seed(seed)
    cfg = load_model_config(TINY)
    model, controller = ADMN(cfg).eval(), Controller(cfg).eval()
    for lin in (model.head.mean, model.head.tril):
        torch.nn.init.normal_(lin.weight, std=0.5)
    return model, controller


def tiny_inputs(cfg, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s, size = cfg.num_nodes, cfg.backbone.img_size
    return {m: torch.rand(batch, s, cfg.in_chans[m], size, size, generator=g)
            for m in cfg.modalities}


def masks(cfg, batch: int, seed: int = 0) -> torch.Tensor:
    """Distinct random bool masks [B, M, D] with block 0 on."""
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(batch, cfg.num_modalities, cfg.depth, generator=g) > 0.5
    active[..., 0] = True
    return active
