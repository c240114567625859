"""Training-only augmentation (the corruption the controller learns about is `core.noise`).

The cameras' illumination drifts slowly over a recording, so a time-contiguous split sees
lighting the training frames never had; without photometric jitter a from-scratch ViT keys on
it and memorises the training frames instead of the car.
"""

from __future__ import annotations

import torch
from torch import Tensor


def jitter_brightness(x: Tensor, strength: float, generator: torch.Generator | None = None
                      ) -> Tensor:
    """Per-view gain in [1 - s, 1 + s] and per-channel tint in [1 - s/4, 1 + s/4] on
    x [B, S, C, H, W] in [0, 1]; clipped to [0, 1]. strength 0 returns x."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"rgb_jitter: expected a strength in [0, 1), got {strength}")
    if strength == 0.0:
        return x
    b, s, c = x.shape[:3]
    gain = 1.0 + strength * (2 * torch.rand(b, s, 1, generator=generator) - 1)
    tint = 1.0 + 0.25 * strength * (2 * torch.rand(b, s, c, generator=generator) - 1)
    scale = (gain * tint).to(x.device, x.dtype)[..., None, None]  # [B, S, C, 1, 1]
    return (x * scale).clamp(0.0, 1.0)
