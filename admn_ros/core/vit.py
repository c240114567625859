"""Minimal ViT with timm parameter names and a `forward(x, active)` that really skips blocks.

Parameter names follow timm's `vision_transformer.py` / MAE's `models_mae.py` encoder
(`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,
mlp.fc1,mlp.fc2}`, `norm`) so their checkpoints load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# std of the truncated-normal init of cls_token / pos_embed (timm and MAE use 0.02)
TOKEN_INIT_STD = 0.02
# a blend-mode weight counts as "on" within this tolerance (straight-through masks are
# y + (1 - y) in floating point, which may miss 1 by an ulp)
BLOCK0_ON_TOL = 1e-3


class PatchEmbed(nn.Module):
    """[N, C, H, W] -> [N, P, E] with a stride-p convolution."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, P, E]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, h, T, d/h]
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """MAE-style init: xavier-uniform Linear, zero bias, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """MAE's fixed 2-D sin-cos position embedding [1 + grid*grid, dim] (zero row for CLS):
    half the channels encode the row, half the column, each as sin/cos at dim/4 frequencies."""
    if dim % 4:
        raise ValueError(f"pos_embed 'sincos': expected embed_dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # [dim/4]
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def encode(pos: Tensor) -> Tensor:  # [grid*grid] -> [grid*grid, dim/2]
        angle = pos.flatten().double()[:, None] * omega[None]
        return torch.cat([angle.sin(), angle.cos()], 1)

    emb = torch.cat([encode(rows), encode(cols)], 1).float()  # [grid*grid, dim]
    return torch.cat([torch.zeros(1, dim), emb], 0)


class VisionTransformer(nn.Module):
    """ViT encoder returning one normalised embedding per image [N, E]: the CLS token
    (`global_pool="token"`) or the mean of the patch tokens (`"avg"`, MAE's global pool).

    `forward(x, active)`: `active` None (all blocks), a bool vector [D] (inactive blocks are not
    executed), or a float/bool matrix [N, D] (blend: x = m * block(x) + (1 - m) * x per sample).
    No active block: the embedding-only output (patch embedding, pooled and normalised); which
    blocks must run is the model's rule (`ModelConfig.min_blocks`).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
        global_pool: str = "token",
        pos_embed: str = "learned",
        reference_nodes: int = 0,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool: expected 'token' or 'avg', got {global_pool!r}")
        if pos_embed not in ("learned", "sincos"):
            raise ValueError(f"pos_embed: expected 'learned' or 'sincos', got {pos_embed!r}")
        self.global_pool, self.pos_embed_kind = global_pool, pos_embed
        self.embed_dim, self.depth = embed_dim, depth
        # --- input standardisation (timm's pretrained mean/std, applied inside the model) ---
        # Inputs arrive in [0, 1]. Their common offset would otherwise dominate every patch
        # embedding, so the CLS token sees near-identical images and from-scratch training
        # stalls at a constant output. Buffers, not state: they come from the model config.
        mean = torch.tensor(input_mean or [0.0] * in_chans).view(1, -1, 1, 1)
        std = torch.tensor(input_std or [1.0] * in_chans).view(1, -1, 1, 1)
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        # --- optional per-node reference image (the empty scene), subtracted first. State,
        # not config: training sets it from data. Inputs then come node-major, [B * S, ...].
        self.reference_nodes = int(reference_nodes)
        if self.reference_nodes:
            self.register_buffer(
                "input_reference", torch.zeros(self.reference_nodes, in_chans, img_size, img_size))
        # --- tokens ---
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        # --- encoder ---
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.initialize_weights()

    @property
    def img_size(self) -> int:
        return self.patch_embed.img_size

    @property
    def in_chans(self) -> int:
        return self.patch_embed.in_chans

    def initialize_weights(self) -> None:
        if self.pos_embed_kind == "sincos":  # fixed, as in MAE
            grid = self.patch_embed.grid_size
            self.pos_embed.data.copy_(sincos_pos_embed_2d(self.embed_dim, grid)[None])
            self.pos_embed.requires_grad_(False)
        else:
            nn.init.trunc_normal_(self.pos_embed, std=TOKEN_INIT_STD)
        nn.init.trunc_normal_(self.cls_token, std=TOKEN_INIT_STD)
        # patch embedding as a Linear on flattened patches (MAE)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        self.blocks.apply(init_weights)
        self.norm.apply(init_weights)

    # ---------------------------------------------------------------- validation
    def check_input(self, x: Tensor) -> None:
        c, s = self.in_chans, self.img_size
        if not isinstance(x, Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"backbone input: expected [N, {c}, {s}, {s}], got {got}")
        if x.shape[1] != c or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"backbone input: expected [N, {c}, {s}, {s}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"backbone input: expected a floating-point tensor, got {x.dtype}")
        if self.reference_nodes and x.shape[0] % self.reference_nodes:
            raise ValueError(f"backbone input: expected whole samples of {self.reference_nodes} "
                             f"nodes (a multiple of {self.reference_nodes}), got {x.shape[0]}")

    def check_active(self, active: Tensor, n: int) -> None:
        d = self.depth
        if active.dim() == 1:
            if active.dtype != torch.bool or active.shape[0] != d:
                raise ValueError(
                    f"active: expected bool [{d}], got {active.dtype} {tuple(active.shape)}"
                )
        elif active.dim() == 2:
            if active.shape != (n, d):
                raise ValueError(f"active: expected [{n}, {d}], got {tuple(active.shape)}")
        else:
            raise ValueError(f"active: expected [{d}] or [{n}, {d}], got {tuple(active.shape)}")

    # ---------------------------------------------------------------- forward
    def standardize(self, x: Tensor) -> Tensor:
        """[0, 1] inputs [N, C, H, W] -> what the patch embedding sees: minus each node's
        reference image (if any), then the config's per-channel mean and std."""
        if self.reference_nodes:  # [B * S, C, H, W] - [S, C, H, W] per node
            x = (x.unflatten(0, (-1, self.reference_nodes)) - self.input_reference).flatten(0, 1)
        return (x - self.input_mean) / self.input_std

    def embed(self, x: Tensor) -> Tensor:
        x = self.patch_embed(self.standardize(x)) + self.pos_embed[:, 1:]  # [N, P, E]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)  # [N, 1 + P, E]

    def forward(self, x: Tensor, active: Tensor | None = None) -> Tensor:
        self.check_input(x)
        if active is not None:
            self.check_active(active, x.shape[0])
        x = self.embed(x)
        if active is None:
            for blk in self.blocks:
                x = blk(x)
        elif active.dim() == 1:
            for i in active.nonzero().flatten().tolist():  # real skipping
                x = self.blocks[i](x)
        else:
            m = active.to(x.device, x.dtype)[:, :, None, None]  # [N, D, 1, 1]
            for i, blk in enumerate(self.blocks):
                x = m[:, i] * blk(x) + (1 - m[:, i]) * x
        return self.pool(x)

    def pool(self, x: Tensor) -> Tensor:
        """Tokens [N, 1 + P, E] -> normalised embedding [N, E] (CLS or patch mean)."""
        return self.norm(x[:, 1:].mean(1) if self.global_pool == "avg" else x[:, 0])
