"""The model cut into the pieces a backend compiles one by one (static shapes, tensor in/out).

Every part is an `nn.Module` whose forward takes and returns plain tensors, so torch.compile
and torch-tensorrt can treat each as one graph. Parts only call into `admn_ros.core`; the
engine's tests check that chaining them reproduces `ADMN.forward` and `Controller.forward`.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.config import ModelConfig, to_dict
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.core.vit import VisionTransformer


def part_config(cfg: ModelConfig, part: str) -> dict[str, Any]:
    """The model config a part's output depends on beyond its weights (part names as the
    engine gives them: `stem.<m>`, `block.<m>.<i>`, `head.<m>`, `fusion`, `controller*`)."""
    kind, _, rest = part.partition(".")
    if kind in ("stem", "block", "head"):
        m = rest.split(".")[0]
        return {"backbone": to_dict(cfg.backbone), "in_chans": cfg.in_chans[m],
                "input_mean": cfg.input_mean.get(m), "input_std": cfg.input_std.get(m)}
    return {k: v for k, v in to_dict(cfg).items() if k != "layerdrop"}  # training only


class StemPart(nn.Module):
    """Patch embedding + CLS + positions: [N, C, H, W] -> [N, 1 + P, E]."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: Tensor) -> Tensor:
        return self.vit.embed(x)


class HeadPart(nn.Module):
    """Pooling + final norm (`VisionTransformer.pool`): [N, 1 + P, E] -> [N, E]."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: Tensor) -> Tensor:
        return self.vit.pool(x)


class FusionPart(nn.Module):
    """Adapters + fusion transformer + Gaussian head: per-modality [B, S, E] ->
    (mean [B, 2], scale_tril [B, 2, 2])."""

    def __init__(self, model: ADMN) -> None:
        super().__init__()
        self.model = model
        self.modalities = list(model.cfg.modalities)

    def forward(self, *features: Tensor) -> tuple[Tensor, Tensor]:
        pred = self.model.fuse(dict(zip(self.modalities, features, strict=True)))
        return pred.mean, pred.scale_tril


class ControllerPart(nn.Module):
    """Controller network without validation or top-L: per-modality inputs [B, S, C, H, W]
    and budget [B] (long) -> (logits [B, M*D], noise [B, M]; [B, 0] without a noise head).

    With `downsample_from` = H (> the controller's size h), the area downsampling to h x h is
    part of the graph: an average pool over f x f windows when f = H / h is an integer (what
    `mode="area"` computes then), else area interpolation. The top-L selection runs outside
    (data-dependent sort, cheap)."""

    def __init__(self, controller: Controller, downsample_from: int | None = None) -> None:
        super().__init__()
        self.controller = controller
        self.modalities = list(controller.cfg.modalities)
        self.size = controller.cfg.controller.img_size
        src = downsample_from or self.size
        self.factor = src // self.size if src % self.size == 0 else 0  # 0: not an integer
        self.resize = src != self.size

    def _lowres(self, x: Tensor) -> Tensor:
        if not self.resize:
            return x
        flat = x.flatten(0, 1)  # [B*S, C, H, W]
        y = (F.avg_pool2d(flat, self.factor) if self.factor
             else F.interpolate(flat, size=(self.size, self.size), mode="area"))
        return y.unflatten(0, x.shape[:2])

    def forward(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        *inputs, budget = args
        lowres = {m: self._lowres(x) for m, x in zip(self.modalities, inputs, strict=True)}
        logits, noise, _ = self.controller.logits_and_noise(lowres, budget)
        if noise is None:
            return logits, logits.new_zeros(logits.shape[0], 0)
        return logits, noise.mean(1)  # [B, M*D], [B, M]
