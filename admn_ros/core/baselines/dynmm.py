"""DynMM (Xue & Marculescu, CVPR 2023) on the ADMN backbones, fusion and head.

Modality level: a gate on the low-res inputs picks one expert per sample; an expert is a subset
of modalities, each run at full backbone depth (a row of `expert_masks` [E, M]). A modality
outside the expert enters the fusion as a zero feature (its adapter bias plus node/modality
embeddings: a learned "absent" token), or with `absent: forced` as its forced blocks' feature
(what ADMN runs for a modality it gives nothing), so all experts share one fusion and head.
Fusion level: the same gate decides, per fusion transformer block, run or skip (identity).

Training (paper 3.3-3.4): Gumbel-softmax straight-through decisions; the training forward runs
every expert and mixes their predictions with the one-hot weights (forward = chosen expert,
gradient reaches the gate), loss = task + lambda * cost / full ADMN cost. Stage I
(`pretrain_loss` with `random_gate=True`) trains all experts under random fusion decisions.
Eval forward runs only the chosen expert's backbones and fusion blocks (real skipping).

Knob lambda in [0, LAM_MAX]: the resource weight. It also enters the decision as a cost prior,
argmax(log p - lambda * c) (`lam_in_decision`), which makes cost non-increasing in lambda for a
trained gate; with `lam_in_decision: false` lambda only acts through training (paper).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.baselines.common import (
    LAM_MAX,
    BaselineModule,
    LossTerms,
    LowResEncoder,
    check_batch,
    check_knob,
    fuse_masked,
    fusion_block_flops,
    gumbel_softmax_st,
    knob_for_budget,
    lambda_loss,
    linear_flops,
    mix_predictions,
    scatter_predictions,
)
from admn_ros.core.baselines.config import DynMMConfig
from admn_ros.core.config import ModelConfig
from admn_ros.core.cost import CostModel
from admn_ros.core.fusion import GaussianPrediction
from admn_ros.core.model import ADMN

SKIP, RUN = 0, 1  # fusion-block decision classes


class DynMMOutput(NamedTuple):
    pred: GaussianPrediction  # chosen expert's prediction (mix with one-hot weights in training)
    mask: Tensor  # [B, M, D] bool backbone blocks executed
    fusion_keep: Tensor  # [B, F] bool fusion blocks executed
    flops: Tensor  # [B] float64 FLOPs per sample (gate included)
    expert: Tensor  # [B] long chosen expert
    cost: Tensor  # [B] cost / full ADMN cost (differentiable in training)
    expert_preds: list[GaussianPrediction] | None  # every expert (training forward)
    lam: float


class DynMM(BaselineModule):
    KIND = "dynmm"
    cfg: DynMMConfig

    def __init__(self, model_cfg: ModelConfig, cfg: DynMMConfig | dict | None = None) -> None:
        super().__init__(model_cfg, cfg)
        mods = model_cfg.modalities
        experts = self.cfg.experts or [
            list(c) for r in range(1, len(mods) + 1) for c in itertools.combinations(mods, r)
        ]
        self.experts = [sorted(e, key=mods.index) for e in experts]
        self.register_buffer("expert_masks", torch.tensor(
            [[m in e for m in mods] for e in self.experts], dtype=torch.bool), persistent=False)
        # blocks each expert runs [E, M, D]: all of its modalities', and the others' forced
        # blocks with `absent: forced`
        blocks = self.expert_masks[:, :, None].expand(-1, -1, model_cfg.depth).clone()
        if self.cfg.absent == "forced":
            for i, k in enumerate(model_cfg.min_blocks_list):
                blocks[:, i, :k] = True
        self.register_buffer("expert_blocks", blocks, persistent=False)
        self.num_fusion_gates = model_cfg.fusion.depth if self.cfg.fusion_gating else 0
        # --- shared multimodal network (backbones, fusion, head) ---
        self.model = ADMN(model_cfg)
        # --- gate: controller trunk on low-res inputs -> expert logits, fusion-block logits ---
        self.gate_trunk = LowResEncoder(model_cfg)
        d, h = model_cfg.controller.dim, self.cfg.gate_hidden
        self.gate_head = nn.Sequential(
            nn.Linear(d, h), nn.GELU(), nn.Linear(h, len(self.experts) + 2 * self.num_fusion_gates)
        )
        self._init_costs()

    def _init_costs(self) -> None:
        cm, cfg = CostModel(self.model_cfg), self.model_cfg
        s, depth = cfg.num_nodes, cfg.depth

        def backbone_flops(blocks: list[int]) -> Tensor:  # [M] stem + `blocks` per modality
            return torch.tensor([s * (cm.backbone_stem_flops(m) + k * cm.backbone_block_flops(m))
                                 for m, k in zip(cfg.modalities, blocks, strict=True)],
                                dtype=torch.float64)

        on_flops = backbone_flops([depth] * len(cfg.modalities))
        off_flops = (backbone_flops(cfg.min_blocks_list) if self.cfg.absent == "forced"
                     else torch.zeros(len(cfg.modalities), dtype=torch.float64))
        self.full_flops = cm.full_cost()  # the normaliser: ADMN with every block
        on = self.expert_masks.cpu().double()  # [E, M]
        self.expert_flops = (on * on_flops + (1 - on) * off_flops).sum(1)  # [E]
        self.fusion_block_flops = fusion_block_flops(cfg)
        gated = self.num_fusion_gates * self.fusion_block_flops
        self.fixed_flops = (cm.fusion_flops() - gated + self.gate_trunk.flops()
                            + linear_flops(self.gate_head))

    # ---------------------------------------------------------------- decisions
    def gate_logits(self, lowres: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """-> expert logits [B, E], fusion logits [B, F, 2] (skip, run)."""
        z = self.gate_head(self.gate_trunk(lowres))
        e = len(self.experts)
        return z[:, :e], z[:, e:].unflatten(1, (self.num_fusion_gates, 2))

    def decide(self, logits: tuple[Tensor, Tensor], lam: float, sample: bool,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> expert weights [B, E] one-hot (ST), fusion keep [B, F] 0/1 (ST)."""
        ex, fu = F.log_softmax(logits[0], -1), F.log_softmax(logits[1], -1)
        if self.cfg.lam_in_decision:
            ex = ex - lam * (self.expert_flops / self.full_flops).to(ex)
            fu = fu - lam * torch.tensor([0.0, self.fusion_block_flops / self.full_flops]).to(fu)
        tau = self.cfg.gumbel_tau
        g = gumbel_softmax_st(ex, tau, sample, generator=generator)
        keep = gumbel_softmax_st(fu, tau, sample, generator=generator)[..., RUN]
        return g, keep

    def flops_of(self, expert: Tensor, keep: Tensor) -> Tensor:
        """FLOPs [B] of chosen experts [B] and fusion decisions [B, F]."""
        blocks = keep.detach().double().cpu().sum(1) * self.fusion_block_flops
        return self.expert_flops[expert.cpu()] + blocks + self.fixed_flops

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, Tensor], lowres: dict[str, Tensor],
                knob: float | None = None, *, sample: bool | None = None,
                random_gate: bool = False,
                generator: torch.Generator | None = None) -> DynMMOutput:
        """knob: lambda (None: cfg.lam). sample: Gumbel noise (default: self.training).
        random_gate: uniform random expert and fusion decisions (Stage I pre-training)."""
        lam = check_knob("lam", self.cfg.lam if knob is None else knob, 0.0, LAM_MAX)
        b = check_batch(self.model_cfg, inputs, lowres)
        sample = self.training if sample is None else sample
        logits = self.gate_logits(lowres)
        if random_gate:  # Gumbel noise on equal logits: uniform random decisions
            logits, sample = (torch.zeros_like(logits[0]), torch.zeros_like(logits[1])), True
        g, keep = self.decide(logits, lam, sample, generator)
        expert = g.argmax(-1)
        keep_bool = keep > 0.5
        if not self.num_fusion_gates:
            keep = keep_bool = None

        if self.training:
            preds = self._all_experts(inputs, keep)
            pred = mix_predictions(g, preds)
        else:
            preds = None
            pred = self._chosen_experts(inputs, expert, keep_bool, b)

        if keep_bool is None:
            keep_bool = torch.zeros(b, 0, dtype=torch.bool)
            keep = torch.zeros(b, 0, device=g.device)
        cost = (g @ (self.expert_flops / self.full_flops).to(g)
                + keep.sum(1) * (self.fusion_block_flops / self.full_flops)
                + self.fixed_flops / self.full_flops)
        mask = self.expert_blocks[expert]  # [B, M, D]
        return DynMMOutput(pred, mask, keep_bool, self.flops_of(expert, keep_bool), expert, cost,
                           preds, lam)

    def _features(self, inputs: dict[str, Tensor], modality: str, on: bool = True) -> Tensor:
        """Backbone features [B, S, E]: every block (`on`), else what the modality contributes
        outside an expert (`absent`: zeros, or its forced blocks)."""
        x = inputs[modality]
        if on or self.cfg.absent == "forced":
            active = None
            if not on:
                k = self.model_cfg.min_blocks_list[self.model_cfg.modalities.index(modality)]
                active = torch.arange(self.model_cfg.depth, device=x.device) < k
            return self.model.encode(modality, x.flatten(0, 1), active).unflatten(0, x.shape[:2])
        b, s = x.shape[:2]
        return x.new_zeros(b, s, self.model_cfg.backbone.embed_dim)

    def _expert_features(self, feats: dict[str, tuple[Tensor, Tensor]], e: int
                         ) -> dict[str, Tensor]:
        used = self.expert_masks[e].tolist()
        return {m: f[0] if on else f[1] for (m, f), on in zip(feats.items(), used, strict=True)}

    def _all_experts(self, inputs: dict[str, Tensor], keep: Tensor | None
                     ) -> list[GaussianPrediction]:
        feats = {m: (self._features(inputs, m), self._features(inputs, m, on=False))
                 for m in self.model_cfg.modalities}
        return [self.model.head(fuse_masked(self.model.fusion, self._expert_features(feats, e),
                                            keep))
                for e in range(len(self.experts))]

    def _chosen_experts(self, inputs: dict[str, Tensor], expert: Tensor, keep: Tensor | None,
                        batch: int) -> GaussianPrediction:
        parts = []
        for e in expert.unique().tolist():
            idx = (expert == e).nonzero().flatten()
            sub = {m: x[idx] for m, x in inputs.items()}
            feats = {m: self._features(sub, m, on)
                     for m, on in zip(self.model_cfg.modalities, self.expert_masks[e].tolist(),
                                      strict=True)}
            k = None if keep is None else keep[idx]
            parts.append((idx, self.model.head(fuse_masked(self.model.fusion, feats, k))))
        return scatter_predictions(batch, parts)

    # ---------------------------------------------------------------- losses
    def loss(self, out: DynMMOutput, target: Tensor, lam: float | None = None) -> LossTerms:
        """Stage II: task(chosen expert) + lambda * mean normalised cost (paper eq. 3-4)."""
        return lambda_loss(self.model, out, target, lam)

    def pretrain_loss(self, out: DynMMOutput, target: Tensor) -> LossTerms:
        """Stage I: mean task loss over all experts (use with `random_gate=True`)."""
        if out.expert_preds is None:
            raise ValueError("pretrain_loss: expected the output of a training-mode forward "
                             "(every expert's prediction), got an eval-mode output")
        task = torch.stack([self.model.loss(p, target) for p in out.expert_preds]).mean()
        return LossTerms(task, task, task.new_zeros(()))

    # ---------------------------------------------------------------- operating point
    @torch.no_grad()
    def knob_for_budget(self, lowres: dict[str, Tensor], budget_flops: float) -> float:
        """The largest-cost lambda whose mean FLOPs on `lowres` stay within the budget."""
        logits = self.gate_logits(lowres)

        def mean_flops(lam: float) -> float:
            g, keep = self.decide(logits, lam, sample=False)
            return float(self.flops_of(g.argmax(-1), keep > 0.5).mean())

        return knob_for_budget(mean_flops, budget_flops, "DynMM", "lam", 0.0, LAM_MAX,
                               increasing=False)
