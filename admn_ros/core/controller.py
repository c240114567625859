"""ADMN controller (paper 3.4): low-res inputs -> allocation of L blocks over all M*D slots.

Design choice: one token per node x modality. Conv stems are per modality and shared by all
nodes (like the backbones); node and modality embeddings tell the tokens apart. This lets the
controller see a corruption that hits a single node. A CLS token (and, optionally, a budget
token) join them in a small transformer; the CLS output feeds the logit MLP. The noise head reads
each node x modality token and predicts its normalised corruption sigma in [0, 1]; with
`noise_prior` > 0 that prediction (detached) also lowers its modality's logits by a learned
per-slot weight, so a modality judged noisy loses blocks even where the task loss is flat.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.config import ModelConfig
from admn_ros.core.model import check_inputs
from admn_ros.core.vit import TOKEN_INIT_STD, Block, init_weights

# Forced slots (each modality's first `min_blocks`, default block 0) are always on, so they take
# no part in the softmax competition: their logit is
# replaced by this large *finite* negative value (exp underflows to 0; -inf would give NaN grads).
EXCLUDED_LOGIT = -1.0e4
# Ranking score of forced slots in top-L; softmax probabilities are <= 1, so 2 always wins.
FORCED_RANK = 2.0
# Uniforms for the Gumbel noise are clamped to [GUMBEL_EPS, 1 - GUMBEL_EPS] so -log(-log(u))
# stays finite.
GUMBEL_EPS = 1.0e-6


class ControllerOutput(NamedTuple):
    logits: Tensor  # [B, M*D] raw logits (block-0 slots as predicted; they are forced anyway)
    mask: Tensor  # [B, M, D] float hard 0/1; straight-through grads when sampling
    noise: Tensor | None  # [B, M] predicted normalised sigma (mean over nodes)
    noise_per_node: Tensor | None  # [B, S, M]
    reconstruction: dict[str, Tensor] | None  # {m: [B, S, C, h, w]} AE head


def check_budget(budget: int | Tensor, batch: int, lo: int, hi: int) -> Tensor:
    """Budget as a long tensor [B]; ValueError unless lo <= L <= hi for every sample."""
    if isinstance(budget, Tensor):
        if budget.dim() == 0:
            budget = budget.reshape(1).expand(batch)
        if budget.shape != (batch,):
            raise ValueError(f"budget: expected an int or a tensor [{batch}], got "
                             f"{tuple(budget.shape)}")
        if budget.is_floating_point() or budget.dtype == torch.bool:
            raise ValueError(f"budget: expected an integer tensor, got {budget.dtype}")
        b = budget.long()
    elif isinstance(budget, int) and not isinstance(budget, bool):
        b = torch.full((batch,), budget, dtype=torch.long)
    else:
        raise ValueError(f"budget: expected an int or an int tensor [B], got {budget!r}")
    bad = (b < lo) | (b > hi)
    if bool(bad.any()):
        raise ValueError(f"budget: expected {lo} <= L <= {hi}, got {b[bad].tolist()}")
    return b


def forced_slots(num_modalities: int, depth: int, device: torch.device | None = None,
                 min_blocks: list[int] | None = None) -> Tensor:
    """bool [M*D], True at each modality's first `min_blocks[m]` blocks (default: block 0)."""
    f = torch.zeros(num_modalities, depth, dtype=torch.bool, device=device)
    for i, k in enumerate(min_blocks or [1] * num_modalities):
        f[i, :k] = True
    return f.flatten()


def top_l_mask(scores: Tensor, budget: Tensor, forced: Tensor) -> Tensor:
    """Hard 0/1 [B, C]: forced slots plus the highest-scoring others, L per sample in total."""
    rank_score = torch.where(forced, torch.full_like(scores, FORCED_RANK), scores)
    order = rank_score.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    )
    return (ranks < budget.to(scores.device)[:, None]).to(scores.dtype)


def gumbel_top_l(logits: Tensor, budget: Tensor, forced: Tensor, tau: float = 1.0,
                 noise_scale: float = 1.0, sample: bool = True,
                 generator: torch.Generator | None = None) -> Tensor:
    """Gumbel-softmax (temperature tau) + top-L, straight-through: y + (hard - y).detach()."""
    logits = torch.where(forced, torch.full_like(logits, EXCLUDED_LOGIT), logits)
    if sample:
        u = torch.rand(logits.shape, generator=generator, device=logits.device)
        g = -torch.log(-torch.log(u.clamp(GUMBEL_EPS, 1.0 - GUMBEL_EPS)))
        logits = logits + noise_scale * g.to(logits.dtype)
    y = F.softmax(logits / tau, dim=-1)
    hard = top_l_mask(y, budget, forced)
    return y + (hard - y).detach()


class ConvStem(nn.Module):
    """[N, C, h, w] -> [N, dim]: stride-2 conv / GroupNorm / GELU stages, global average pool."""

    def __init__(self, in_chans: int, channels: list[int], dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_chans, *channels[:-1]], channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                       nn.GroupNorm(1, c_out), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(channels[-1], dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.convs(x).mean((2, 3)))


class ConvDecoder(nn.Module):
    """[N, dim] -> [N, C, size, size] in [0, 1]: linear to a coarse grid, two x2 up-convs."""

    COARSE = 4  # the decoder upsamples by 2 twice from size // 4

    def __init__(self, dim: int, out_chans: int, size: int, hidden: int = 32) -> None:
        super().__init__()
        self.size, self.hidden = size, hidden
        self.grid = max(1, size // self.COARSE)
        self.fc = nn.Linear(dim, hidden * self.grid**2)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(hidden, hidden, 2, stride=2), nn.GELU(),
            nn.ConvTranspose2d(hidden, out_chans, 2, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc(x).view(x.shape[0], self.hidden, self.grid, self.grid)
        x = self.up(x)  # [N, C, 4*grid, 4*grid]
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


def node_modality_tokens(lowres: dict[str, Tensor], modalities: list[str], stems: nn.ModuleDict,
                         node_embed: Tensor, modality_embed: Tensor) -> Tensor:
    """Low-res views `{m: [B, S, C, h, w]}` -> tokens [B, S*M, d] (node-major): each modality's
    stem (shared across nodes) on every view, plus the node [1, S, 1, d] and modality
    [1, 1, M, d] embeddings. The controller's input, and the baselines' low-res trunk's."""
    b, s = lowres[modalities[0]].shape[:2]
    tok = torch.stack(
        [stems[m](lowres[m].flatten(0, 1)).unflatten(0, (b, s)) for m in modalities], 2
    )  # [B, S, M, d]
    return (tok + node_embed + modality_embed).flatten(1, 2)


class Controller(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.controller
        m, s, d = cfg.num_modalities, cfg.num_nodes, c.dim
        self.budget_min, self.budget_max = cfg.budget_range
        # --- per-modality conv stems (shared across nodes) ---
        self.stems = nn.ModuleDict(
            {mod: ConvStem(cfg.in_chans[mod], c.stem_channels, d) for mod in cfg.modalities}
        )
        # --- tokens ---
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.node_embed = nn.Parameter(torch.zeros(1, s, 1, d))
        self.modality_embed = nn.Parameter(torch.zeros(1, 1, m, d))
        self.budget_embed = (
            nn.Embedding(self.budget_max - self.budget_min + 1, d) if c.budget_token else None
        )
        # --- transformer ---
        self.blocks = nn.ModuleList(Block(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        # --- heads ---
        self.logit_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, cfg.total_blocks))
        self.noise_head = (
            nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1)) if c.noise_head else None
        )
        # learned weight [M, D] of the predicted noise subtracted from each slot's logit
        self.noise_prior = (
            nn.Parameter(torch.full((m, cfg.depth), c.noise_prior)) if c.noise_prior > 0 else None
        )
        self.decoders = (
            nn.ModuleDict({mod: ConvDecoder(d, cfg.in_chans[mod], c.img_size)
                           for mod in cfg.modalities})
            if c.ae_head else None
        )
        self.register_buffer("forced", forced_slots(m, cfg.depth, min_blocks=cfg.min_blocks_list),
                             persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for p in (self.cls_token, self.node_embed, self.modality_embed):
            nn.init.trunc_normal_(p, std=TOKEN_INIT_STD)
        if self.budget_embed is not None:
            nn.init.trunc_normal_(self.budget_embed.weight, std=TOKEN_INIT_STD)
        self.blocks.apply(init_weights)
        self.norm.apply(init_weights)

    # ---------------------------------------------------------------- forward
    def embed(self, lowres: dict[str, Tensor], budget: Tensor) -> Tensor:
        """Tokens [B, 1 (+1) + S*M, d]: CLS, optional budget token, node x modality tokens."""
        tok = node_modality_tokens(lowres, self.cfg.modalities, self.stems, self.node_embed,
                                   self.modality_embed)  # [B, S*M, d]
        lead = [self.cls_token.expand(tok.shape[0], -1, -1)]
        if self.budget_embed is not None:
            lead.append(self.budget_embed(budget.to(tok.device) - self.budget_min)[:, None])
        return torch.cat([*lead, tok], 1)

    def logits_and_noise(self, lowres: dict[str, Tensor], budget: Tensor
                         ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Unvalidated core: logits [B, M*D] (noise prior applied), per-node noise [B, S, M]
        (None without a noise head) and the node x modality tokens [B, S*M, d]."""
        s, m = self.cfg.num_nodes, self.cfg.num_modalities
        x = self.embed(lowres, budget)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        cls, tok = x[:, 0], x[:, -s * m:]  # [B, d], [B, S*M, d]
        logits = self.logit_head(cls)  # [B, M*D]
        if self.noise_head is None:
            return logits, None, tok
        noise = torch.sigmoid(self.noise_head(tok)).view(-1, s, m)  # [B, S, M]
        if self.noise_prior is not None:  # judged-noisy modalities start with lower logits
            prior = self.noise_prior * noise.detach().mean(1)[:, :, None]  # [B, M, D]
            logits = logits - prior.flatten(1)
        return logits, noise, tok

    def forward(self, lowres: dict[str, Tensor], budget: int | Tensor, *,
                sample: bool | None = None,
                generator: torch.Generator | None = None) -> ControllerOutput:
        """`sample`: Gumbel-softmax + straight-through top-L (default: self.training);
        False: deterministic top-L of the logits."""
        cfg, c = self.cfg, self.cfg.controller
        batch = check_inputs(lowres, cfg, c.img_size)
        budget = check_budget(budget, batch, self.budget_min, self.budget_max)
        sample = self.training if sample is None else sample
        m, s, d = cfg.num_modalities, cfg.num_nodes, cfg.depth

        logits, noise_pn, tok = self.logits_and_noise(lowres, budget)
        mask = gumbel_top_l(logits, budget, self.forced, c.gumbel_tau, c.gumbel_noise_scale,
                            sample, generator)
        noise = None if noise_pn is None else noise_pn.mean(1)
        recon = None
        if self.decoders is not None:
            tok = tok.view(batch, s, m, -1)
            recon = {mod: self.decoders[mod](tok[:, :, i].flatten(0, 1)).unflatten(0, (batch, s))
                     for i, mod in enumerate(cfg.modalities)}
        return ControllerOutput(logits, mask.view(batch, m, d), noise, noise_pn, recon)

    def noise_loss(self, out: ControllerOutput, sigma: Tensor) -> Tensor:
        """Paper L_noise = sum_m |sigma_hat - sigma| (per node here), batch mean.
        sigma: [B, S, M] normalised (as returned by `noise.corrupt`) or [B, M]."""
        if out.noise_per_node is None:
            raise ValueError("noise_loss: expected a controller with noise_head=True")
        pred = out.noise_per_node if sigma.dim() == 3 else out.noise
        if sigma.shape != pred.shape:
            raise ValueError(f"sigma: expected {tuple(pred.shape)}, got {tuple(sigma.shape)}")
        return (pred - sigma).abs().sum(-1).mean()

    def reconstruction_loss(self, out: ControllerOutput, lowres: dict[str, Tensor]) -> Tensor:
        """Mean squared error of the AE head over all modalities (unsupervised variant)."""
        if out.reconstruction is None:
            raise ValueError("reconstruction_loss: expected a controller with ae_head=True")
        return sum(F.mse_loss(out.reconstruction[m], lowres[m]) for m in self.cfg.modalities)
