"""Parts the baselines share, all built on the core's modules (no copies of them).

- `BaselineModule`: the common constructor (model config + the method's checked config).
- `lambda_loss`, `LAM_MAX`: the stage-II loss and knob range of the lambda-knob methods.
- `LowResEncoder`: the ADMN controller's trunk (conv stems on low-res inputs, node/modality
  tokens, a small transformer, CLS) without its heads; same parameter names, so a trained
  controller's trunk loads into it (`load_from_controller`).
- `gumbel_softmax_st`: Gumbel-softmax with a straight-through one-hot.
- `prefix_features`: one backbone pass returning the CLS feature after several depths.
- `fuse_masked`: the core `Fusion` with per-sample skippable blocks.
- `check_knob`, `knob_for_budget`: knob validation and bisection of a knob to a FLOPs budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.baselines.config import BaselineConfig, load_baseline_config
from admn_ros.core.config import ModelConfig
from admn_ros.core.controller import GUMBEL_EPS, Controller, ConvStem, node_modality_tokens
from admn_ros.core.cost import FLOPS_PER_MAC, CostModel, block_macs
from admn_ros.core.fusion import Fusion, GaussianPrediction
from admn_ros.core.model import ADMN, check_inputs
from admn_ros.core.vit import TOKEN_INIT_STD, Block, VisionTransformer, init_weights

# bisection steps of `knob_for_budget` (the search interval shrinks by 2^-steps)
CALIBRATION_STEPS = 30
# an infinite end of a knob range is searched up to this value (far past any useful setting)
KNOB_SEARCH_MAX = 1.0e6
# largest resource weight lambda accepted (DynMM, M2SN): at 1e4 any expert / option cheaper by
# 1e-3 of the full cost wins
LAM_MAX = 1.0e4


class LossTerms(NamedTuple):
    total: Tensor  # task + resource (what the optimiser minimises)
    task: Tensor  # Gaussian NLL + distance term of the core's loss
    resource: Tensor  # lambda * normalised cost (0 for methods without a resource term)


class BaselineModule(nn.Module):
    """A baseline on the core's ADMN: `model_cfg` and its method's config (`cfg`: a config
    object or a dict; None: the defaults), checked against the model config."""

    KIND: str  # the method name (config `method`, checkpoint kind)

    def __init__(self, model_cfg: ModelConfig, cfg: BaselineConfig | dict | None = None) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.cfg = load_baseline_config({} if cfg is None else cfg, self.KIND)
        self.cfg.check(model_cfg)


def lambda_loss(model: ADMN, out: Any, target: Tensor, lam: float | None) -> LossTerms:
    """Stage II of the lambda-knob methods: task(out.pred) + lambda * mean normalised cost
    (out.cost); `lam` None: the forward's (out.lam), else checked against [0, LAM_MAX]."""
    lam = out.lam if lam is None else check_knob("lam", lam, 0.0, LAM_MAX)
    task = model.loss(out.pred, target)
    resource = lam * out.cost.mean()
    return LossTerms(task + resource, task, resource)


# --------------------------------------------------------------------------------------------
# knobs
# --------------------------------------------------------------------------------------------
def check_knob(name: str, value: float, lo: float, hi: float) -> float:
    """`value` as a float in the closed range [lo, hi] (inf allowed where hi is inf)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or math.isnan(value) or not lo <= value <= hi or value == -math.inf:
        raise ValueError(f"{name}: expected a value in [{lo}, {hi}], got {value!r}")
    return float(value)


def knob_for_budget(mean_flops: Callable[[float], float], budget: float, method: str,
                    name: str, lo: float, hi: float, increasing: bool) -> float:
    """The knob in [lo, hi] (lo >= 0) with the largest mean FLOPs not above `budget`.

    `mean_flops(knob)` must be monotone (`increasing` says which way). Bisection runs on
    log1p(knob), an infinite end is searched up to KNOB_SEARCH_MAX. A budget below the
    cheapest operating point raises ValueError (the method cannot meet it).
    """
    cheap, rich = (lo, hi) if increasing else (hi, lo)
    floor = mean_flops(cheap)
    if budget < floor:
        raise ValueError(f"budget: {method} cannot meet {budget:.4g} FLOPs per sample; its "
                         f"cheapest operating point ({name}={cheap}) costs {floor:.4g}")
    if mean_flops(rich) <= budget:
        return rich
    a, b = (math.log1p(min(k, KNOB_SEARCH_MAX)) for k in (cheap, rich))
    for _ in range(CALIBRATION_STEPS):  # invariant: cost(a) <= budget < cost(b)
        mid = (a + b) / 2
        if mean_flops(math.expm1(mid)) <= budget:
            a = mid
        else:
            b = mid
    return cheap if math.isinf(cheap) and a == math.log1p(KNOB_SEARCH_MAX) else math.expm1(a)


# --------------------------------------------------------------------------------------------
# Gumbel-softmax
# --------------------------------------------------------------------------------------------
def gumbel_softmax_st(logits: Tensor, tau: float, sample: bool, hard: bool = True,
                      generator: torch.Generator | None = None) -> Tensor:
    """Softmax over the last dim of (logits + Gumbel noise) / tau; with `hard`, a one-hot in
    the forward pass and the soft gradient in the backward pass (y + (onehot - y).detach())."""
    if sample:
        u = torch.rand(logits.shape, generator=generator, device=logits.device)
        logits = logits - torch.log(-torch.log(u.clamp(GUMBEL_EPS, 1 - GUMBEL_EPS)))
    y = F.softmax(logits / tau, dim=-1)
    if not hard:
        return y
    onehot = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    return y + (onehot - y).detach()


def anneal_tau(step: int, total_steps: int, tau_start: float, tau_end: float,
               schedule: str = "exponential") -> float:
    """Gumbel temperature at `step` of `total_steps`: tau_start -> tau_end (then constant)."""
    if total_steps <= 0 or step < 0:
        raise ValueError(f"anneal_tau: expected step >= 0 and total_steps > 0, got "
                         f"step={step}, total_steps={total_steps}")
    t = min(step / total_steps, 1.0)
    if schedule == "exponential":
        return tau_start * (tau_end / tau_start) ** t
    if schedule == "linear":
        return tau_start + (tau_end - tau_start) * t
    if schedule == "cosine":
        return tau_end + (tau_start - tau_end) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"schedule: expected one of ['exponential', 'linear', 'cosine'], "
                     f"got {schedule!r}")


# --------------------------------------------------------------------------------------------
# low-res gate / navigator trunk
# --------------------------------------------------------------------------------------------
class LowResEncoder(nn.Module):
    """lowres `{m: [B, S, C, h, w]}` -> CLS [B, d]: the controller's trunk (cfg.controller)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.controller
        d = c.dim
        # --- per-modality conv stems shared across nodes ---
        self.stems = nn.ModuleDict(
            {m: ConvStem(cfg.in_chans[m], c.stem_channels, d) for m in cfg.modalities}
        )
        # --- tokens ---
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.node_embed = nn.Parameter(torch.zeros(1, cfg.num_nodes, 1, d))
        self.modality_embed = nn.Parameter(torch.zeros(1, 1, cfg.num_modalities, d))
        # --- transformer ---
        self.blocks = nn.ModuleList(Block(d, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for p in (self.cls_token, self.node_embed, self.modality_embed):
            nn.init.trunc_normal_(p, std=TOKEN_INIT_STD)
        self.blocks.apply(init_weights)
        self.norm.apply(init_weights)

    def forward(self, lowres: dict[str, Tensor]) -> Tensor:
        tok = node_modality_tokens(lowres, self.cfg.modalities, self.stems, self.node_embed,
                                   self.modality_embed)  # [B, S*M, d]
        x = torch.cat([self.cls_token.expand(tok.shape[0], -1, -1), tok], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 0])  # [B, d]

    def load_from_controller(self, controller: Controller) -> list[str]:
        """Copy the trunk of a (trained) ADMN controller; returns the keys copied."""
        own = self.state_dict()
        src = {k: v for k, v in controller.state_dict().items()
               if k in own and v.shape == own[k].shape}
        if not src:
            raise ValueError("load_from_controller: expected a controller built from the same "
                             "controller config, got no matching parameters")
        self.load_state_dict(src, strict=False)
        return sorted(src)

    def flops(self) -> float:
        """Per sample, counted with the core's CostModel (controller without its heads)."""
        c = self.cfg.controller
        bare = dataclasses.replace(
            self.cfg, controller=dataclasses.replace(c, noise_head=False, budget_token=False,
                                                     ae_head=False, noise_prior=0.0))
        logit_mlp = c.dim * c.dim + c.dim * self.cfg.total_blocks
        return CostModel(bare).controller_flops() - FLOPS_PER_MAC * logit_mlp


def linear_flops(module: nn.Module) -> float:
    """FLOPs of all Linear layers of `module` on one input row (per sample)."""
    return float(sum(FLOPS_PER_MAC * m.in_features * m.out_features
                     for m in module.modules() if isinstance(m, nn.Linear)))


# --------------------------------------------------------------------------------------------
# backbones and fusion
# --------------------------------------------------------------------------------------------
def prefix_mask(depth: int, d: int, device: torch.device | None = None) -> Tensor:
    """bool [depth]: blocks 0..d-1 on."""
    return torch.arange(depth, device=device) < d


def prefix_features(vit: VisionTransformer, x: Tensor, depths: list[int]) -> Tensor:
    """x [N, C, H, W] -> [N, K, E]: the backbone's pooled feature (CLS or patch mean, as its
    `global_pool`) after each of the (increasing) `depths`, in one pass; equals
    `vit(x, prefix_mask(D, d))` for every d."""
    vit.check_input(x)
    t = vit.embed(x)  # [N, 1 + P, E]
    out = []
    for i in range(depths[-1]):
        t = vit.blocks[i](t)
        if i + 1 in depths:
            out.append(vit.pool(t))
    return torch.stack(out, 1)


def fusion_block_flops(cfg: ModelConfig) -> float:
    """One fusion transformer block on one sample (S*M tokens)."""
    f = cfg.fusion
    return float(FLOPS_PER_MAC * block_macs(cfg.num_nodes * cfg.num_modalities, f.dim,
                                            f.mlp_ratio))


def fuse_masked(fusion: Fusion, features: dict[str, Tensor], keep: Tensor | None) -> Tensor:
    """The core Fusion's forward with per-sample skippable blocks -> pooled [B, d].

    keep: None (all blocks), float [B, F] (x = k * block(x) + (1 - k) * x, grads into k), or
    bool [B, F] (real skipping: one pass per distinct row)."""
    x = fusion.tokens(features)  # [B, S*M, d]
    if keep is None:
        for blk in fusion.blocks:
            x = blk(x)
    elif keep.dtype == torch.bool:
        out = torch.empty_like(x)
        rows, inverse = torch.unique(keep, dim=0, return_inverse=True)
        for g, row in enumerate(rows):
            idx = (inverse == g).nonzero().flatten()
            y = x[idx]
            for j in row.nonzero().flatten().tolist():
                y = fusion.blocks[j](y)
            out[idx] = y
        x = out
    else:
        k = keep.to(x.dtype)[:, :, None, None]  # [B, F, 1, 1]
        for j, blk in enumerate(fusion.blocks):
            x = k[:, j] * blk(x) + (1 - k[:, j]) * x
    return fusion.pool(x)  # [B, d]


# --------------------------------------------------------------------------------------------
# inputs and predictions
# --------------------------------------------------------------------------------------------
def check_batch(cfg: ModelConfig, inputs: dict[str, Tensor],
                lowres: dict[str, Tensor] | None) -> int:
    """Validate full-res inputs (and low-res ones, if given); return B."""
    b = check_inputs(inputs, cfg, cfg.backbone.img_size)
    if lowres is not None:
        lb = check_inputs(lowres, cfg, cfg.controller.img_size)
        if lb != b:
            raise ValueError(f"lowres: expected batch size {b} (as inputs), got {lb}")
    return b


def mix_predictions(weights: Tensor, preds: list[GaussianPrediction]) -> GaussianPrediction:
    """sum_i w[:, i] * pred_i for weights [B, K]; with one-hot (straight-through) weights the
    forward value is the chosen prediction and the gradient reaches the weights (DynMM code).
    A convex mix of lower-triangular factors with positive diagonals stays a valid factor."""
    mean = sum(weights[:, i, None] * p.mean for i, p in enumerate(preds))
    tril = sum(weights[:, i, None, None] * p.scale_tril for i, p in enumerate(preds))
    return GaussianPrediction(mean, tril)


def scatter_predictions(batch: int, parts: list[tuple[Tensor, GaussianPrediction]]
                        ) -> GaussianPrediction:
    """Assemble a [B] prediction from (sample indices, prediction of those samples) parts."""
    ref = parts[0][1].mean
    mean = ref.new_empty(batch, 2)
    tril = ref.new_empty(batch, 2, 2)
    for idx, p in parts:
        mean[idx], tril[idx] = p.mean, p.scale_tril
    return GaussianPrediction(mean, tril)
