"""Input corruptions on normalised `[B, S, C, H, W]` tensors (paper 4, 5.1.1).

Gaussian noise per sample, node and modality with sigma drawn `binary` ({0, max}),
`discrete` (from the configured levels) or `continuous` (U(0, max)); results clipped to [0, 1].
Also occlusion, low light and frame dropout for later evaluation. Apply corruptions to the
full-resolution inputs, then `model.downsample` for the controller.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from admn_ros.core.config import NoiseConfig, NoiseKind

__all__ = [
    "Corrupted",
    "NoiseConfig",
    "add_gaussian_noise",
    "corrupt",
    "frame_dropout",
    "low_light",
    "occlude",
    "sample_sigma",
]

NOISE_KINDS: tuple[str, ...] = ("binary", "discrete", "continuous")


class Corrupted(NamedTuple):
    inputs: dict[str, Tensor]  # {m: [B, S, C, H, W]} corrupted, in [0, 1]
    sigma: Tensor  # [B, S, M] sigma / max sigma of the modality, in [0, 1] (noise-head target)
    sigma_abs: Tensor  # [B, S, M] sigma on the normalised input scale


def sample_sigma(cfg: NoiseConfig, modalities: list[str], batch: int, num_nodes: int,
                 kind: NoiseKind | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """Absolute sigma [B, S, M]; per sample and modality, node 0's draw is copied to every
    node with probability `cfg.node_shared_prob`."""
    kind = kind or cfg.kind
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind: expected one of {list(NOISE_KINDS)}, got {kind!r}")
    cols = []
    for m in modalities:
        hi = cfg.max_sigma(m)
        if kind == "binary":
            col = (torch.rand(batch, num_nodes, generator=generator) < 0.5).float() * hi
        elif kind == "discrete":
            levels = torch.tensor(cfg.levels[m], dtype=torch.float32)
            col = levels[torch.randint(len(levels), (batch, num_nodes), generator=generator)]
        else:
            col = torch.rand(batch, num_nodes, generator=generator) * hi
        shared = torch.rand(batch, 1, generator=generator) < cfg.node_shared_prob  # [B, 1]
        cols.append(torch.where(shared, col[:, :1], col))
    return torch.stack(cols, -1)  # [B, S, M]


def _per_view(value: Tensor | float, x: Tensor, name: str) -> Tensor:
    """Broadcast a scalar or [B, S] parameter to [B, S, 1, 1, 1] on x's device."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(x.shape[:2])
    if v.shape != x.shape[:2]:
        raise ValueError(f"{name}: expected a scalar or {list(x.shape[:2])}, got {list(v.shape)}")
    return v[:, :, None, None, None]


def _check_views(x: Tensor, name: str = "x") -> None:
    if x.dim() != 5 or not x.is_floating_point():
        raise ValueError(f"{name}: expected float [B, S, C, H, W], got {x.dtype} {tuple(x.shape)}")


def add_gaussian_noise(x: Tensor, sigma: Tensor | float,
                       generator: torch.Generator | None = None, grid: int = 0) -> Tensor:
    """x + N(0, sigma^2) per view (sigma scalar or [B, S]), clipped to [0, 1].

    `grid` > 0: one draw per cell of a grid x grid lattice, upsampled (nearest) to x's size,
    so a frame larger than the model's input keeps sigma after it is area-resized to `grid`
    (per-pixel noise would average out: sigma / 4 from 256 to 64 px). Exact when the frame is a
    multiple of the grid; otherwise cells straddle model pixels (160 x 120 -> 64: ~0.75 sigma)."""
    _check_views(x)
    sig = _per_view(sigma, x, "sigma")
    if grid > 0:
        b, s, c = x.shape[:3]
        noise = torch.randn((b * s, c, grid, grid), generator=generator, dtype=x.dtype)
        noise = F.interpolate(noise, size=x.shape[-2:], mode="nearest").view(x.shape)
    else:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + sig * noise.to(x.device)).clamp(0.0, 1.0)


def corrupt(inputs: dict[str, Tensor], cfg: NoiseConfig, kind: NoiseKind | None = None,
            generator: torch.Generator | None = None) -> Corrupted:
    """Gaussian corruption of every modality, sigma per sample/node/modality."""
    mods = list(inputs)
    for m in mods:
        _check_views(inputs[m], f"inputs[{m!r}]")
    b, s = inputs[mods[0]].shape[:2]
    sigma = sample_sigma(cfg, mods, b, s, kind, generator)
    out = {m: add_gaussian_noise(inputs[m], sigma[..., i], generator) for i, m in enumerate(mods)}
    scale = torch.tensor([cfg.max_sigma(m) for m in mods])
    return Corrupted(out, sigma / scale, sigma)


def occlude(x: Tensor, fraction: Tensor | float, fill: float = 0.0,
            generator: torch.Generator | None = None) -> Tensor:
    """Blank a random square covering `fraction` of each view's area (per view [B, S])."""
    _check_views(x)
    frac = _per_view(fraction, x, "fraction").flatten()
    if bool(((frac < 0) | (frac > 1)).any()):
        raise ValueError(f"fraction: expected values in [0, 1], got {frac.tolist()}")
    h, w = x.shape[-2:]
    out = x.clone()
    flat = out.flatten(0, 1)  # [B*S, C, H, W]
    for i, f in enumerate(frac.tolist()):
        sh, sw = round(h * f**0.5), round(w * f**0.5)
        if sh == 0 or sw == 0:
            continue
        top = int(torch.randint(h - sh + 1, (1,), generator=generator))
        left = int(torch.randint(w - sw + 1, (1,), generator=generator))
        flat[i, :, top:top + sh, left:left + sw] = fill
    return out


def low_light(x: Tensor, gain: Tensor | float, shot_sigma: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """Darken by `gain` in [0, 1] (per view) with optional sensor noise; clipped to [0, 1]."""
    _check_views(x)
    g = _per_view(gain, x, "gain")
    if bool(((g < 0) | (g > 1)).any()):
        raise ValueError(f"gain: expected values in [0, 1], got {g.flatten().tolist()}")
    y = x * g
    if shot_sigma > 0:
        y = y + shot_sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return y.clamp(0.0, 1.0)


def frame_dropout(x: Tensor, dropped: Tensor) -> Tensor:
    """Zero the views where `dropped` [B, S] bool is True (a missing frame)."""
    _check_views(x)
    if dropped.shape != x.shape[:2] or dropped.dtype != torch.bool:
        raise ValueError(f"dropped: expected bool {list(x.shape[:2])}, "
                         f"got {dropped.dtype} {list(dropped.shape)}")
    return x * (~dropped).to(x.dtype).to(x.device)[:, :, None, None, None]
