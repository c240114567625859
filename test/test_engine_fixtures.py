"""Tiny model and helpers shared by the engine tests (holds no tests itself)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from admn_ros.core.config import load_model_config
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "config" / "model" / "tiny.yaml"
TINY = yaml.safe_load(TINY_CONFIG.read_text())


def tiny_modules(seed: int = 0, **changes) -> tuple[ADMN, Controller]:
    """Tiny ADMN + controller with a random (non-zero) head so outputs depend on the inputs;
    `changes`: model-config keys over the tiny config (e.g. `min_blocks`)."""
    torch.manual_seed(seed)
    cfg = load_model_config({**TINY, **changes})
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
    """Distinct random bool masks [B, M, D] with each modality's `min_blocks` on (default:
    block 0)."""
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(batch, cfg.num_modalities, cfg.depth, generator=g) > 0.5
    for j, k in enumerate(cfg.min_blocks_list):
        active[:, j, :k] = True
    return active
