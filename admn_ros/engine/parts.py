"""The model cut into the pieces a backend compiles one by one (static shapes, tensor in/out).

Every part is an `nn.Module` whose forward takes and returns plain tensors, so torch.compile
and torch-tensorrt can treat each as one graph. Parts only call into `admn_ros.core`; the
engine's tests check that chaining them reproduces `ADMN.forward` and `Controller.forward`.
"""

from __future__ import annotations

from torch import Tensor, nn

from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.core.vit import VisionTransformer


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
    """Controller network without validation or top-L: per-modality low-res [B, S, C, h, w]
    and budget [B] (long) -> (logits [B, M*D], noise [B, M]; [B, 0] without a noise head).
    The top-L selection runs outside (data-dependent sort, cheap)."""

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller
        self.modalities = list(controller.cfg.modalities)

    def forward(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        *lowres, budget = args
        logits, noise, _ = self.controller.logits_and_noise(
            dict(zip(self.modalities, lowres, strict=True)), budget)
        if noise is None:
            return logits, logits.new_zeros(logits.shape[0], 0)
        return logits, noise.mean(1)  # [B, M*D], [B, M]
