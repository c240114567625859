"""Multimodal early exit (after MMExit, Hou et al.) on the ADMN backbones, fusion and head.

Exits sit at backbone depths shared by all modalities: exit k at depth d_k runs blocks
0..d_k-1 of every backbone, then the fusion and a Gaussian head on those features. Design:
one fusion transformer shared by all exits (the core's `Fusion`), told the depth by a learned
per-exit embedding added to every backbone feature (zero at init), and one light Gaussian head
per exit (the last exit uses the ADMN head itself). Backbones trained with LayerDrop already
give usable features at every depth, so an ADMN checkpoint is a good starting point.

Training: every exit in one pass, loss = sum_k w_k task_k (uniform w by default; the paper's
gradient-based re-weighting is not implemented). Inference (eval mode): the backbones advance
block by block; at each exit depth the still-running samples are fused, and those whose
predicted uncertainty (`uncertainty`: "trace" sqrt(tr Sigma / 2) or "det" det(Sigma)^(1/4),
in cm) is at most the knob leave; the last exit takes the rest.

Knob `threshold_cm` in [0, inf]: the largest accepted predicted std. 0 -> every sample runs to
the last exit (full cost); inf -> every sample leaves at the first exit. Cost is non-increasing
in the threshold (each sample's exit can only move earlier).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from admn_ros.core.baselines.common import (
    BaselineModule,
    LossTerms,
    check_batch,
    check_knob,
    knob_for_budget,
    prefix_features,
    scatter_predictions,
)
from admn_ros.core.baselines.config import MMExitConfig
from admn_ros.core.config import ModelConfig
from admn_ros.core.cost import CostModel
from admn_ros.core.fusion import GaussianHead, GaussianPrediction
from admn_ros.core.model import ADMN
from admn_ros.core.vit import TOKEN_INIT_STD


class MMExitOutput(NamedTuple):
    pred: GaussianPrediction  # prediction at each sample's exit
    mask: Tensor  # [B, M, D] bool backbone blocks executed (0..d_k-1 for every modality)
    flops: Tensor  # [B] float64 FLOPs per sample (one fusion + head per exit evaluated)
    exit: Tensor  # [B] long index into exit_depths
    uncertainty: Tensor  # [B] predicted std (cm) at the exit taken
    exit_preds: list[GaussianPrediction] | None  # every exit (training forward)
    threshold: float


def predicted_std(pred: GaussianPrediction, kind: str) -> Tensor:
    """[B] predicted std in cm: sqrt(tr(Sigma) / 2) ("trace") or det(Sigma)^(1/4) ("det")."""
    if kind == "trace":
        return (pred.covariance.diagonal(dim1=-2, dim2=-1).sum(-1) / 2).sqrt()
    diag = pred.scale_tril.diagonal(dim1=-2, dim2=-1)  # det(Sigma) = (L00 L11)^2
    return diag.prod(-1).sqrt()


class MMExit(BaselineModule):
    KIND = "mmexit"
    cfg: MMExitConfig

    def __init__(self, model_cfg: ModelConfig, cfg: MMExitConfig | dict | None = None) -> None:
        super().__init__(model_cfg, cfg)
        self.exit_depths = self.cfg.exit_depths or list(range(1, model_cfg.depth + 1))
        k = len(self.exit_depths)
        w = torch.tensor(self.cfg.exit_weights or [1.0] * k)
        self.register_buffer("exit_weights", w / w.sum(), persistent=False)
        # --- shared backbones, fusion and final head ---
        self.model = ADMN(model_cfg)
        # --- per-exit depth embedding (backbone feature space) and light heads ---
        e = model_cfg.backbone.embed_dim
        self.depth_embed = nn.Parameter(torch.zeros(k, e)) if self.cfg.depth_embedding else None
        self.exit_heads = nn.ModuleList(
            GaussianHead(model_cfg.fusion.dim, model_cfg.fusion) for _ in range(k - 1)
        )
        self.initialize_weights()
        self._init_costs()

    def initialize_weights(self) -> None:
        # like the ADMN head: small weights start every exit near the arena centre
        for head in self.exit_heads:
            for lin in (head.mean, head.tril):
                nn.init.trunc_normal_(lin.weight, std=TOKEN_INIT_STD)
                nn.init.zeros_(lin.bias)

    def _init_costs(self) -> None:
        cm, cfg = CostModel(self.model_cfg), self.model_cfg
        s = cfg.num_nodes
        stem = s * sum(cm.backbone_stem_flops(m) for m in cfg.modalities)
        block = s * sum(cm.backbone_block_flops(m) for m in cfg.modalities)
        self.full_flops = cm.full_cost()
        self.exit_flops = torch.tensor(  # [K]: exit k has run k + 1 fusions
            [stem + d * block + (i + 1) * cm.fusion_flops()
             for i, d in enumerate(self.exit_depths)], dtype=torch.float64)

    def head(self, k: int) -> GaussianHead:
        return self.model.head if k == len(self.exit_depths) - 1 else self.exit_heads[k]

    def exit_prediction(self, k: int, feats: dict[str, Tensor]) -> GaussianPrediction:
        """Exit k on backbone features `{m: [B, S, E]}` at depth exit_depths[k]."""
        if self.depth_embed is not None:
            feats = {m: f + self.depth_embed[k] for m, f in feats.items()}
        return self.head(k)(self.model.fusion(feats))

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, Tensor], lowres: dict[str, Tensor] | None = None,
                knob: float | None = None) -> MMExitOutput:
        """knob: threshold_cm (None: cfg default). lowres is not used (no gate)."""
        thr = check_knob("threshold_cm", self.cfg.threshold_cm if knob is None else knob,
                         0.0, math.inf)
        b = check_batch(self.model_cfg, inputs, lowres)
        if self.training:
            preds = self._all_exits(inputs)
            std = torch.stack([predicted_std(p, self.cfg.uncertainty) for p in preds], 1)
            exit_ = self.first_exit(std, thr)
            pred = GaussianPrediction(
                torch.stack([p.mean for p in preds], 1)[torch.arange(b), exit_],
                torch.stack([p.scale_tril for p in preds], 1)[torch.arange(b), exit_])
            std = std[torch.arange(b), exit_]
        else:
            preds = None
            pred, exit_, std = self._early_exit(inputs, thr, b)
        depths = torch.tensor(self.exit_depths, device=exit_.device)[exit_]  # [B]
        mask = torch.arange(self.model_cfg.depth, device=exit_.device) < depths[:, None, None]
        mask = mask.expand(-1, self.model_cfg.num_modalities, -1)
        return MMExitOutput(pred, mask, self.exit_flops[exit_.cpu()], exit_, std, preds, thr)

    def first_exit(self, std: Tensor, threshold: float) -> Tensor:
        """std [B, K] -> [B] index of the first exit with std <= threshold (else the last)."""
        ok = std <= threshold
        ok[:, -1] = True
        return ok.float().argmax(1)  # argmax returns the first maximum

    def _all_exits(self, inputs: dict[str, Tensor]) -> list[GaussianPrediction]:
        feats = {}
        for m, x in inputs.items():
            f = prefix_features(self.model.backbones[m], x.flatten(0, 1), self.exit_depths)
            feats[m] = f.unflatten(0, x.shape[:2])  # [B, S, K, E]
        return [self.exit_prediction(k, {m: f[:, :, k] for m, f in feats.items()})
                for k in range(len(self.exit_depths))]

    def _early_exit(self, inputs: dict[str, Tensor], threshold: float, batch: int
                    ) -> tuple[GaussianPrediction, Tensor, Tensor]:
        """Real early exit: only still-running samples advance through the blocks."""
        s = self.model_cfg.num_nodes
        vits = self.model.backbones
        tokens = {}
        for m, x in inputs.items():
            vits[m].check_input(x.flatten(0, 1))
            tokens[m] = vits[m].embed(x.flatten(0, 1))  # [n*S, T, E]
        idx = torch.arange(batch, device=next(iter(inputs.values())).device)
        exit_ = torch.empty(batch, dtype=torch.long, device=idx.device)
        std_out = torch.empty(batch, device=idx.device)
        parts = []
        for i in range(self.model_cfg.depth):
            tokens = {m: vits[m].blocks[i](t) for m, t in tokens.items()}
            if i + 1 not in self.exit_depths:
                continue
            k = self.exit_depths.index(i + 1)
            feats = {m: vits[m].pool(t).unflatten(0, (len(idx), s))
                     for m, t in tokens.items()}
            pred = self.exit_prediction(k, feats)
            std = predicted_std(pred, self.cfg.uncertainty)
            done = (std <= threshold) | (k == len(self.exit_depths) - 1)
            if bool(done.any()):
                parts.append((idx[done], GaussianPrediction(pred.mean[done],
                                                            pred.scale_tril[done])))
                exit_[idx[done]], std_out[idx[done]] = k, std[done]
            if bool(done.all()):
                break
            idx = idx[~done]
            tokens = {m: t.unflatten(0, (len(done), s))[~done].flatten(0, 1)
                      for m, t in tokens.items()}
        return scatter_predictions(batch, parts), exit_, std_out

    # ---------------------------------------------------------------- losses
    def loss(self, out: MMExitOutput, target: Tensor) -> LossTerms:
        """Joint loss sum_k w_k task(exit k); no resource term (the threshold sets cost)."""
        if out.exit_preds is None:
            raise ValueError("loss: expected the output of a training-mode forward (every "
                             "exit's prediction), got an eval-mode output")
        per_exit = torch.stack([self.model.loss(p, target) for p in out.exit_preds])
        task = (self.exit_weights * per_exit).sum()
        return LossTerms(task, task, task.new_zeros(()))

    # ---------------------------------------------------------------- operating point
    @torch.no_grad()
    def knob_for_budget(self, inputs: dict[str, Tensor], budget_flops: float) -> float:
        """The smallest threshold (best accuracy) whose mean FLOPs on `inputs` fit the budget."""
        preds = self._all_exits(inputs)  # every exit, as in training (no dropout anywhere)
        std = torch.stack([predicted_std(p, self.cfg.uncertainty) for p in preds], 1)

        def mean_flops(thr: float) -> float:
            return float(self.exit_flops[self.first_exit(std, thr).cpu()].mean())

        return knob_for_budget(mean_flops, budget_flops, "MMExit", "threshold_cm", 0.0,
                               math.inf, increasing=False)
