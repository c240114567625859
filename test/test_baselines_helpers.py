"""Shared tiny set-up for the baseline tests (no tests here)."""

from __future__ import annotations

import pytest
import torch
from test_core_helpers import count_block_calls, rand_inputs, tiny_cfg
from torch import nn

from admn_ros.core.config import ModelConfig
from admn_ros.core.model import downsample

TRAIN_STEPS = 8
LEARNING_RATE = 3e-3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models on 2 shared cores: one intra-op thread avoids oversubscription (10x here).
    Imported by every baseline test module; restores the previous setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seeded(method: type[nn.Module], overrides: dict | None = None, seed: int = 0) -> nn.Module:
    """`method(tiny_cfg(), overrides)` built right after `torch.manual_seed(seed)`."""
    torch.manual_seed(seed)
    return method(tiny_cfg(), overrides)


def model_fixture(method: type[nn.Module]):
    """A module-scoped fixture `model`: `seeded(method)` in eval mode, shared by the tests of
    the module that assigns it (`model_fixture_ = model_fixture(DynMM)`)."""

    @pytest.fixture(scope="module", name="model")
    def model() -> nn.Module:
        """The module's baseline, seeded, in eval mode."""
        return seeded(method).eval()

    return model


def tiny_batch(cfg: ModelConfig, batch: int = 4, seed: int = 0
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Random inputs, their low-res copies and targets (cm) inside the arena."""
    x = rand_inputs(cfg, batch=batch, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    target = (torch.rand(batch, 2, generator=g) - 0.5) * 200
    return x, downsample(x, cfg.controller.img_size), target


def train_losses(module: nn.Module, step_loss, steps: int = TRAIN_STEPS) -> list[float]:
    """Adam on `step_loss() -> LossTerms` for a few steps on one batch; the totals."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], LEARNING_RATE)
    out = []
    for _ in range(steps):
        loss = step_loss().total
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


__all__ = ["count_block_calls", "model_fixture", "seeded", "single_thread", "tiny_batch",
           "tiny_cfg", "train_losses"]
