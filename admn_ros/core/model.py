"""ADMN main network: one variable-depth ViT per modality (shared across nodes) + fusion + head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.config import ModelConfig
from admn_ros.core.fusion import Fusion, GaussianHead, GaussianPrediction, gaussian_loss
from admn_ros.core.vit import BLOCK0_ON_TOL, TOKEN_INIT_STD, VisionTransformer

__all__ = ["ADMN", "GaussianPrediction", "check_forced", "check_inputs", "downsample"]


def check_inputs(inputs: dict[str, Tensor], cfg: ModelConfig, img_size: int,
                 check_finite: bool = True) -> int:
    """Validate `{modality: [B, S, C, s, s] float}`; return B. ValueError on any mismatch."""
    if not isinstance(inputs, dict) or set(inputs) != set(cfg.modalities):
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"inputs: expected keys {cfg.modalities}, got {got}")
    batch = None
    s = cfg.num_nodes
    for m in cfg.modalities:
        x, c = inputs[m], cfg.in_chans[m]
        want = f"[B, {s}, {c}, {img_size}, {img_size}]"
        if not isinstance(x, Tensor) or x.dim() != 5:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"inputs[{m!r}]: expected {want}, got {got}")
        if tuple(x.shape[1:]) != (s, c, img_size, img_size):
            raise ValueError(f"inputs[{m!r}]: expected {want}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"inputs[{m!r}]: expected a float tensor in [0, 1], got {x.dtype}")
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"inputs[{m!r}]: expected batch size {batch}, got {x.shape[0]}")
        batch = x.shape[0]
        if check_finite and not bool(torch.isfinite(x).all()):
            raise ValueError(f"inputs[{m!r}]: expected finite values, got NaN or inf")
    return batch


def downsample(inputs: dict[str, Tensor], size: int) -> dict[str, Tensor]:
    """Area-downsample every `[B, S, C, H, W]` input to `[B, S, C, size, size]` (controller)."""
    out = {}
    for m, x in inputs.items():
        if x.dim() != 5:
            raise ValueError(f"inputs[{m!r}]: expected [B, S, C, H, W], got {tuple(x.shape)}")
        b, s = x.shape[:2]
        y = F.interpolate(x.flatten(0, 1), size=(size, size), mode="area")
        out[m] = y.unflatten(0, (b, s))
    return out


def blocks_text(k: int) -> str:
    """`block 0` / `blocks 0..k-1`: the blocks `min_blocks` = k keeps on."""
    return "block 0" if k == 1 else f"blocks 0..{k - 1}"


def check_forced(active: Tensor, cfg: ModelConfig, what: str = "active") -> None:
    """ValueError unless each modality's first `min_blocks` blocks are on in a mask
    [..., M, D] (bool, or float within `BLOCK0_ON_TOL` of 1); a modality with 0 needs none."""
    for i, (m, k) in enumerate(zip(cfg.modalities, cfg.min_blocks_list, strict=True)):
        check_forced_row(active[..., i, :], m, k, what)


def check_forced_row(active: Tensor, modality: str, k: int, what: str = "active") -> None:
    """`check_forced` for one modality's blocks [..., D]: its first k must be on."""
    if k and not bool(((active[..., :k].float() - 1).abs() < BLOCK0_ON_TOL).all()):
        raise ValueError(f"{what}: expected {blocks_text(k)} of {modality} active (min_blocks "
                         f"{k}), got inactive")


class ADMN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        # --- one backbone per modality, shared by all nodes ---
        self.backbones = nn.ModuleDict({
            m: VisionTransformer(b.img_size, b.patch_size, cfg.in_chans[m], b.embed_dim, b.depth,
                                 b.num_heads, b.mlp_ratio, b.qkv_bias,
                                 cfg.input_mean.get(m), cfg.input_std.get(m), b.global_pool,
                                 b.pos_embed,
                                 cfg.num_nodes if m in cfg.input_reference else 0)
            for m in cfg.modalities
        })
        # --- fusion over S*M tokens, Gaussian head ---
        dims = {m: b.embed_dim for m in cfg.modalities}
        self.fusion = Fusion(cfg.modalities, dims, cfg.num_nodes, cfg.fusion)
        self.head = GaussianHead(cfg.fusion.dim, cfg.fusion)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # backbones and fusion initialise themselves; small head weights start the prediction
        # near the arena centre with the configured std, so early NLL values are sane.
        for lin in (self.head.mean, self.head.tril):
            nn.init.trunc_normal_(lin.weight, std=TOKEN_INIT_STD)
            nn.init.zeros_(lin.bias)

    # ---------------------------------------------------------------- validation
    def check_active(self, active: Tensor) -> None:
        m, d = self.cfg.num_modalities, self.cfg.depth
        if not isinstance(active, Tensor) or active.dim() not in (2, 3) \
                or tuple(active.shape[-2:]) != (m, d):
            got = tuple(active.shape) if isinstance(active, Tensor) else type(active).__name__
            raise ValueError(f"active: expected [{m}, {d}] or [B, {m}, {d}], got {got}")
        if active.dim() == 2 and active.dtype != torch.bool:
            raise ValueError(f"active [{m}, {d}]: expected dtype bool, got {active.dtype}")
        check_forced(active, self.cfg)

    # ---------------------------------------------------------------- forward
    def encode(self, modality: str, x: Tensor, active: Tensor | None = None) -> Tensor:
        """One backbone: x [N, C, H, W], active bool [D] (real skip) or [N, D] (blend) -> [N, E]."""
        if modality not in self.backbones:
            raise ValueError(f"modality: expected one of {self.cfg.modalities}, got {modality!r}")
        k = self.cfg.min_blocks_list[self.cfg.modalities.index(modality)]
        if active is not None and active.dim() in (1, 2) and active.shape[-1] >= k:
            check_forced_row(active, modality, k)
        return self.backbones[modality](x, active)

    def encode_all(self, inputs: dict[str, Tensor], active: Tensor,
                   blend: bool = False) -> dict[str, Tensor]:
        """Backbone features `{m: [B, S, E]}` for a [M, D] or [B, M, D] mask."""
        feats = {}
        for i, m in enumerate(self.cfg.modalities):
            x = inputs[m]
            b, s = x.shape[:2]
            flat = x.flatten(0, 1)  # [B*S, C, H, W]: nodes share the backbone
            if active.dim() == 2:
                f = self.encode(m, flat, active[i])
            elif blend or active.dtype != torch.bool:
                f = self.encode(m, flat, active[:, i].repeat_interleave(s, 0))  # blend
            else:
                f = self._encode_grouped(m, x, active[:, i])
            feats[m] = f.unflatten(0, (b, s))  # [B, S, E]
        return feats

    def _encode_grouped(self, modality: str, x: Tensor, active: Tensor) -> Tensor:
        """Per-sample bool masks with real skipping: one backbone call per distinct mask."""
        b, s = x.shape[:2]
        out = None
        rows, inverse = torch.unique(active, dim=0, return_inverse=True)
        for g, row in enumerate(rows):
            idx = (inverse == g).nonzero().flatten()
            f = self.encode(modality, x[idx].flatten(0, 1), row)  # [n*S, E]
            if out is None:
                out = f.new_empty(b, s, f.shape[-1])
            out[idx] = f.unflatten(0, (len(idx), s))
        return out.flatten(0, 1)

    def fuse(self, features: dict[str, Tensor]) -> GaussianPrediction:
        """`{m: [B, S, E]}` -> GaussianPrediction."""
        return self.head(self.fusion(features))

    def forward(self, inputs: dict[str, Tensor], active: Tensor | None = None,
                blend: bool = False) -> GaussianPrediction:
        """`active`: bool [M, D] (real skip), bool [B, M, D] (real skip per distinct mask),
        float [B, M, D] or `blend=True` (x = m * block(x) + (1 - m) * x; grads flow into m).
        None: all blocks."""
        b = check_inputs(inputs, self.cfg, self.cfg.backbone.img_size)
        if active is None:
            active = torch.ones(self.cfg.num_modalities, self.cfg.depth, dtype=torch.bool)
        self.check_active(active)
        if active.dim() == 3 and active.shape[0] != b:
            raise ValueError(f"active: expected batch size {b}, got {active.shape[0]}")
        return self.fuse(self.encode_all(inputs, active, blend))

    def loss(self, pred: GaussianPrediction, target: Tensor) -> Tensor:
        f = self.cfg.fusion
        return gaussian_loss(pred, target, f.nll_weight, f.dist_weight)
