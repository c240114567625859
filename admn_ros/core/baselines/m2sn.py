"""M2SN (modality-aware shortcut network) on the ADMN backbones, fusion and head.

Shortcuts: after each shortcut depth d of a modality's backbone, a light module maps the
normalised CLS feature at depth d to an estimate of the full-depth feature (paper: a linear
feature generator; here a residual LayerNorm + Linear, zero-initialised so it starts as the
identity, which LayerDrop-trained backbones already make a fair estimate). The options of a
modality are the shortcut depths plus the full depth D (no shortcut).

Navigator: the controller's trunk on the low-res inputs (`LowResEncoder`) and one linear layer
giving per-modality logits over the options [B, M, K]; one decision per modality and sample.

Training: Stage I (`pretrain_loss`) trains every shortcut jointly: for each option k, all
modalities use option k and the task loss is averaged over k (the paper trains them one by
one; one joint pass here). Stage II (`loss`): Gumbel-softmax weights (soft, as in the paper,
or straight-through with `hard`) mix every option's feature per modality, loss = task +
lambda * normalised cost; the temperature is annealed with `anneal_tau`. Eval forward runs, per
modality, only blocks 0..d-1 of the chosen option and its shortcut (real skipping).

Knob lambda in [0, LAM_MAX]; like DynMM it also enters the decision as a cost prior
(log p - lambda * c, `lam_in_decision`), so cost is non-increasing in lambda.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.baselines.common import (
    LAM_MAX,
    BaselineModule,
    LossTerms,
    LowResEncoder,
    anneal_tau,
    check_batch,
    check_knob,
    gumbel_softmax_st,
    knob_for_budget,
    lambda_loss,
    linear_flops,
    prefix_features,
    prefix_mask,
)
from admn_ros.core.baselines.config import M2SNConfig
from admn_ros.core.config import ModelConfig
from admn_ros.core.cost import CostModel
from admn_ros.core.fusion import GaussianPrediction
from admn_ros.core.model import ADMN

TAU_MAX = 1.0e3  # temperatures above this are a uniform mix for any practical logits


class M2SNOutput(NamedTuple):
    pred: GaussianPrediction
    mask: Tensor  # [B, M, D] bool backbone blocks executed
    flops: Tensor  # [B] float64 FLOPs per sample (navigator included)
    choice: Tensor  # [B, M] long option index per modality (argmax of the weights)
    cost: Tensor  # [B] normalised cost (differentiable in training)
    option_feats: dict[str, Tensor] | None  # {m: [B, S, K, E]} every option (training)
    lam: float


class Shortcut(nn.Module):
    """[N, E] feature at an early depth -> estimate of the full-depth feature."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        # zero: the shortcut starts as the identity (early features of a LayerDrop backbone)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(self.norm(x))


class M2SN(BaselineModule):
    KIND = "m2sn"
    cfg: M2SNConfig

    def __init__(self, model_cfg: ModelConfig, cfg: M2SNConfig | dict | None = None) -> None:
        super().__init__(model_cfg, cfg)
        d = model_cfg.depth
        self.options = [*(self.cfg.shortcut_depths or range(1, d)), d]  # depths, last = full
        k, e = len(self.options), model_cfg.backbone.embed_dim
        # --- shared multimodal network ---
        self.model = ADMN(model_cfg)
        # --- shortcuts: one per modality and shortcut depth ---
        self.shortcuts = nn.ModuleDict(
            {m: nn.ModuleList(Shortcut(e) for _ in range(k - 1)) for m in model_cfg.modalities}
        )
        # --- navigator: controller trunk on low-res inputs -> [B, M, K] logits ---
        self.nav_trunk = LowResEncoder(model_cfg)
        self.nav_head = nn.Linear(model_cfg.controller.dim, model_cfg.num_modalities * k)
        self._init_costs()

    def _init_costs(self) -> None:
        cm, cfg = CostModel(self.model_cfg), self.model_cfg
        s = cfg.num_nodes
        sc = linear_flops(Shortcut(cfg.backbone.embed_dim))
        self.full_flops = cm.full_cost()
        self.option_flops = torch.tensor(  # [M, K] per modality and option, all nodes
            [[s * (cm.backbone_stem_flops(m) + d * cm.backbone_block_flops(m)
                   + (sc if d < cfg.depth else 0.0)) for d in self.options]
             for m in cfg.modalities], dtype=torch.float64)
        self.fixed_flops = (cm.fusion_flops() + self.nav_trunk.flops()
                            + linear_flops(self.nav_head))

    # ---------------------------------------------------------------- decisions
    def nav_logits(self, lowres: dict[str, Tensor]) -> Tensor:
        z = self.nav_head(self.nav_trunk(lowres))
        return z.unflatten(1, (self.model_cfg.num_modalities, len(self.options)))  # [B, M, K]

    def decide(self, logits: Tensor, lam: float, tau: float, sample: bool, hard: bool,
               generator: torch.Generator | None = None) -> Tensor:
        """-> weights [B, M, K] (soft, or one-hot straight-through with `hard`)."""
        scores = F.log_softmax(logits, -1)
        if self.cfg.lam_in_decision:
            scores = scores - lam * (self.option_flops / self.full_flops).to(scores)
        return gumbel_softmax_st(scores, tau, sample, hard, generator)

    def flops_of(self, choice: Tensor) -> Tensor:
        """FLOPs [B] for options [B, M]."""
        rows = torch.arange(self.model_cfg.num_modalities)
        return self.option_flops[rows, choice.cpu()].sum(1) + self.fixed_flops

    def tau_at(self, step: int, total_steps: int) -> float:
        """The configured Gumbel temperature schedule at a training step."""
        c = self.cfg
        return anneal_tau(step, total_steps, c.tau_start, c.tau_end, c.tau_schedule)

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, Tensor], lowres: dict[str, Tensor],
                knob: float | None = None, *, tau: float | None = None,
                sample: bool | None = None,
                generator: torch.Generator | None = None) -> M2SNOutput:
        """knob: lambda (None: cfg.lam). tau: Gumbel temperature (None: cfg.tau_end; anneal
        with `tau_at`). sample: Gumbel noise (default: self.training)."""
        lam = check_knob("lam", self.cfg.lam if knob is None else knob, 0.0, LAM_MAX)
        tau = check_knob("tau", self.cfg.tau_end if tau is None else tau, 0.0, TAU_MAX)
        if tau == 0:
            raise ValueError(f"tau: expected a value in (0, {TAU_MAX}], got 0")
        check_batch(self.model_cfg, inputs, lowres)
        sample = self.training if sample is None else sample
        logits = self.nav_logits(lowres)
        if self.training:
            w = self.decide(logits, lam, tau, sample, self.cfg.hard, generator)
            feats = self._all_options(inputs)
            mixed = {m: (feats[m] * w[:, i, None, :, None]).sum(2)  # [B, S, E]
                     for i, m in enumerate(self.model_cfg.modalities)}
            pred = self.model.fuse(mixed)
        else:
            w = self.decide(logits, lam, tau, False, True)
            feats = None
            pred = self.model.fuse(self._chosen_options(inputs, w.argmax(-1)))
        choice = w.argmax(-1)  # [B, M]
        cost = (w * (self.option_flops / self.full_flops).to(w)).sum((1, 2)) \
            + self.fixed_flops / self.full_flops
        depths = torch.tensor(self.options, device=choice.device)[choice]  # [B, M]
        mask = torch.arange(self.model_cfg.depth, device=choice.device) < depths[..., None]
        return M2SNOutput(pred, mask, self.flops_of(choice), choice, cost, feats, lam)

    def _all_options(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """{m: [B, S, K, E]}: every option's feature (shortcuts applied) in one pass."""
        out = {}
        for m in self.model_cfg.modalities:
            x = inputs[m]
            f = prefix_features(self.model.backbones[m], x.flatten(0, 1), self.options)
            cols = [sc(f[:, j]) for j, sc in enumerate(self.shortcuts[m])] + [f[:, -1]]
            out[m] = torch.stack(cols, 1).unflatten(0, x.shape[:2])
        return out

    def _chosen_options(self, inputs: dict[str, Tensor], choice: Tensor) -> dict[str, Tensor]:
        """{m: [B, S, E]} running only the chosen prefix (+ shortcut) per sample group."""
        d = self.model_cfg.depth
        out = {}
        for i, m in enumerate(self.model_cfg.modalities):
            x, feat = inputs[m], None
            for j in choice[:, i].unique().tolist():
                idx = (choice[:, i] == j).nonzero().flatten()
                depth = self.options[j]
                f = self.model.encode(m, x[idx].flatten(0, 1), prefix_mask(d, depth, x.device))
                if depth < d:
                    f = self.shortcuts[m][j](f)
                if feat is None:
                    feat = f.new_empty(x.shape[0], x.shape[1], f.shape[-1])
                feat[idx] = f.unflatten(0, (len(idx), x.shape[1]))
            out[m] = feat
        return out

    # ---------------------------------------------------------------- losses
    def loss(self, out: M2SNOutput, target: Tensor, lam: float | None = None) -> LossTerms:
        """Stage II: task(mixed features) + lambda * mean normalised cost (paper eq. 4)."""
        return lambda_loss(self.model, out, target, lam)

    def pretrain_loss(self, out: M2SNOutput, target: Tensor) -> LossTerms:
        """Stage I: mean over options k of the task loss with every modality at option k."""
        if out.option_feats is None:
            raise ValueError("pretrain_loss: expected the output of a training-mode forward "
                             "(every option's features), got an eval-mode output")
        k = len(self.options)
        task = torch.stack([
            self.model.loss(self.model.fuse({m: f[:, :, j] for m, f in out.option_feats.items()}),
                            target)
            for j in range(k)]).mean()
        return LossTerms(task, task, task.new_zeros(()))

    # ---------------------------------------------------------------- operating point
    @torch.no_grad()
    def knob_for_budget(self, lowres: dict[str, Tensor], budget_flops: float) -> float:
        """The largest-cost lambda whose mean FLOPs on `lowres` stay within the budget."""
        logits = self.nav_logits(lowres)

        def mean_flops(lam: float) -> float:
            w = self.decide(logits, lam, self.cfg.tau_end, sample=False, hard=True)
            return float(self.flops_of(w.argmax(-1)).mean())

        return knob_for_budget(mean_flops, budget_flops, "M2SN", "lam", 0.0, LAM_MAX,
                               increasing=False)
