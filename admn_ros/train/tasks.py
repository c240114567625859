"""What each stage optimises. A task owns its trainable module and turns a batch into a loss;
the loop in `engine.py` is the same for every stage.

- `MAETask` (stage `mae`): masked-autoencoder pretraining of every modality's backbone with
  LayerDrop on the encoder (never on the decoder), MSE on the masked patches.
- `BackboneTask` (stage `backbone`): fusion finetuning with LayerDrop (one mask per batch,
  real skipping), first blocks optionally frozen, Gaussian corruption after `clean_epochs`;
  optionally + `single_modality_weight` x the loss of each modality alone through the fusion
  (`SingleModalityFusion`).
- `ControllerTask` (stages `controller` and `controller-ae`): frozen ADMN; Gumbel top-L
  straight-through masks run the backbones in blend mode; loss = localisation loss +
  noise-sigma L1 (supervised) or + reconstruction MSE (unsupervised AE head); the first
  `warmup_noise_epochs` train only the noise / AE head. Budget fixed, or drawn per sample from
  a range for the universal (budget-token) controller. With `objective: candidates` the
  localisation loss is replaced by `candidate_loss` (one budget per step).
- `BaselineTask` (stages `dynmm`, `mmexit`, `m2sn`): a competing method (docs/BASELINES.md)
  warm-started from the ADMN checkpoint, trained on corrupted batches; DynMM / M2SN run their
  stage I loss for the first `pretrain_epochs`, then stage II (task + lambda x cost); M2SN's
  Gumbel temperature is annealed per epoch over stage II; MMExit trains all exits jointly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from admn_ros.core.baselines import M2SN, save_baseline_checkpoint
from admn_ros.core.config import ModelConfig, NoiseConfig
from admn_ros.core.controller import Controller, forced_slots, top_l_mask
from admn_ros.core.fusion import GaussianPrediction
from admn_ros.core.layerdrop import LayerDrop
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.noise import corrupt
from admn_ros.core.vit import TOKEN_INIT_STD, Block, VisionTransformer, init_weights
from admn_ros.train.allocation_bounds import split_candidates
from admn_ros.train.augment import jitter_brightness
from admn_ros.train.config import STAGE_ONE_METHODS, StageConfig
from admn_ros.train.runner import CachingRunner


def localisation_error_cm(mean: Tensor, target: Tensor) -> Tensor:
    """Per-sample Euclidean error [B] in cm."""
    return (mean - target).norm(dim=-1)


def target_loss(model: ADMN, pred: GaussianPrediction, target: Tensor,
                dist_weight: float) -> tuple[Tensor, Tensor]:
    """(the model's loss + dist_weight x mean error, mean error in cm): what the backbone
    and controller stages minimise."""
    err = localisation_error_cm(pred.mean, target).mean()
    return model.loss(pred, target) + dist_weight * err, err


def pick_kind(kinds: list[str], generator: torch.Generator) -> str:
    return kinds[int(torch.randint(len(kinds), (1,), generator=generator))]


# --------------------------------------------------------------------------------------------
# stage 0: MAE pretraining
# --------------------------------------------------------------------------------------------
class MAEDecoder(nn.Module):
    """Light MAE decoder for one backbone: embed, mask tokens, blocks, per-patch pixels."""

    def __init__(self, vit: VisionTransformer, dim: int, depth: int, num_heads: int = 4) -> None:
        super().__init__()
        p, c = vit.patch_embed.patch_size, vit.in_chans
        self.embed = nn.Linear(vit.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, vit.patch_embed.num_patches + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, 4.0) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, p * p * c)
        nn.init.trunc_normal_(self.mask_token, std=TOKEN_INIT_STD)
        nn.init.trunc_normal_(self.pos_embed, std=TOKEN_INIT_STD)
        self.apply(init_weights)

    def forward(self, latent: Tensor, restore: Tensor) -> Tensor:
        """latent [N, 1 + keep, E], restore [N, P] -> predicted patches [N, P, p*p*C]."""
        x = self.embed(latent)
        n, p = restore.shape
        masks = self.mask_token.expand(n, p + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], masks], 1)  # [N, P, d] in shuffled order
        x_ = torch.gather(x_, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]


def patchify(x: Tensor, p: int) -> Tensor:
    """[N, C, H, W] -> [N, P, p*p*C]."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


class MAEModule(nn.Module):
    def __init__(self, model: ADMN, st: StageConfig) -> None:
        super().__init__()
        self.model = model
        self.decoders = nn.ModuleDict({
            m: MAEDecoder(vit, st.decoder_dim, st.decoder_depth)
            for m, vit in model.backbones.items()
        })

    def forward(self, inputs: dict[str, Tensor], active: Tensor, mask_ratio: float,
                generator: torch.Generator) -> Tensor:
        """Sum over modalities of the masked-patch MSE; `active` [M, D] LayerDrop mask."""
        total = 0.0
        for i, (m, vit) in enumerate(self.model.backbones.items()):
            # [N, C, H, W]: nodes share the backbone; the encoder sees what finetuning feeds it
            x = vit.standardize(inputs[m].flatten(0, 1))
            tokens = vit.patch_embed(x) + vit.pos_embed[:, 1:]
            n, p, e = tokens.shape
            keep = max(1, int(p * (1 - mask_ratio)))
            noise = torch.rand(n, p, generator=generator).to(x.device)
            shuffle = noise.argsort(1)
            restore = shuffle.argsort(1)
            vis = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, e))
            cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(n, -1, -1)
            h = torch.cat([cls, vis], 1)
            for j in active[i].nonzero().flatten().tolist():  # LayerDrop on the encoder only
                h = vit.blocks[j](h)
            pred = self.decoders[m](vit.norm(h), restore)
            target = patchify(x, vit.patch_embed.patch_size)
            masked = torch.ones(n, p, device=x.device)
            masked[:, :keep] = 0
            masked = torch.gather(masked, 1, restore)  # 1 = masked patch
            err = ((pred - target) ** 2).mean(-1)
            total = total + (err * masked).sum() / masked.sum()
        return total


class MAETask:
    name = "mae"

    def __init__(self, model: ADMN, st: StageConfig, noise: NoiseConfig, seed: int) -> None:
        self.model, self.st = model, st
        self.module = MAEModule(model, st)
        self.layerdrop = LayerDrop.from_config(model.cfg)
        self.seed = seed

    def loss(self, batch: dict, epoch: int, step: int, gen: torch.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        shared = torch.Generator().manual_seed(self.seed * 1_000_003 + step)  # same on all ranks
        active = self.layerdrop.sample(epoch, generator=shared) if self.st.layerdrop else \
            torch.ones(self.model.cfg.num_modalities, self.model.cfg.depth, dtype=torch.bool)
        loss = self.module(batch["inputs"], active, self.st.mask_ratio, gen)
        return loss, {"loss": loss.item()}


# --------------------------------------------------------------------------------------------
# stage 1: backbone + fusion finetuning
# --------------------------------------------------------------------------------------------
def freeze_early_blocks(model: ADMN, n: int) -> None:
    """Freeze patch embedding, tokens and the first n blocks of every backbone (n = 0: none)."""
    if n <= 0:
        return
    for vit in model.backbones.values():
        for part in (vit.patch_embed, *list(vit.blocks)[:n]):
            part.requires_grad_(False)
        vit.cls_token.requires_grad_(False)
        vit.pos_embed.requires_grad_(False)


class SingleModalityFusion(nn.Module):
    """The backbone stage's forward with per-modality deep supervision: the fused prediction
    for the LayerDrop mask, and for each modality that runs more than its forced blocks the
    prediction from it alone, the others reduced to their forced blocks (what a whole-modality
    drop leaves). Those forced-block features are computed without gradients, so this loss
    teaches each modality's deeper blocks and the fusion to localise, never the forced blocks
    (which would make depth worthless: block 0 alone would carry the target)."""

    def __init__(self, model: ADMN) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Tensor], active: Tensor
                ) -> tuple[GaussianPrediction, dict[str, GaussianPrediction]]:
        """`active` bool [M, D] -> (fused prediction, {modality: its prediction alone})."""
        cfg = self.model.cfg
        feats = self.model.encode_all(inputs, active)  # {m: [B, S, E]}
        forced = forced_slots(cfg.num_modalities, cfg.depth, active.device,
                              cfg.min_blocks_list).view_as(active)
        with torch.no_grad():
            reduced = self.model.encode_all(inputs, forced)
        alone = {m: self.model.fuse({**reduced, m: feats[m]})
                 for i, m in enumerate(cfg.modalities)
                 if int(active[i].sum()) > cfg.min_blocks_list[i]}
        return self.model.fuse(feats), alone


class BackboneTask:
    name = "backbone"
    trains_model = True  # the engine must not switch `model` to eval mode (the module holds it)

    def __init__(self, model: ADMN, st: StageConfig, noise: NoiseConfig, seed: int) -> None:
        self.model, self.st, self.noise, self.seed = model, st, noise, seed
        self.module = SingleModalityFusion(model) if st.single_modality_weight else model
        freeze_early_blocks(model, st.freeze_blocks)
        self.layerdrop = LayerDrop.from_config(model.cfg)

    def loss(self, batch: dict, epoch: int, step: int, gen: torch.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        cfg = self.model.cfg
        inputs = batch["inputs"]
        if "rgb" in inputs and self.st.rgb_jitter:
            inputs = {**inputs, "rgb": jitter_brightness(inputs["rgb"], self.st.rgb_jitter, gen)}
        noisy = epoch >= self.st.clean_epochs and \
            float(torch.rand(1, generator=gen)) < self.st.corrupt_prob
        if noisy:
            inputs = corrupt(inputs, self.noise, pick_kind(self.st.noise_kinds, gen), gen).inputs
        shared = torch.Generator().manual_seed(self.seed * 1_000_003 + step)  # same on all ranks
        active = self.layerdrop.sample(epoch, generator=shared) if self.st.layerdrop else \
            torch.ones(cfg.num_modalities, cfg.depth, dtype=torch.bool)
        target = batch["target"]
        out = self.module(inputs, active.to(target.device))
        pred, alone = out if self.st.single_modality_weight else (out, {})
        loss, err = target_loss(self.model, pred, target, self.st.dist_weight)
        metrics = {"error_cm": err.item(), "noisy": float(noisy)}
        if alone:
            terms = [target_loss(self.model, p, target, self.st.dist_weight)
                     for p in alone.values()]
            loss = loss + self.st.single_modality_weight * torch.stack(
                [t for t, _ in terms]).mean()
            metrics["alone_cm"] = torch.stack([e for _, e in terms]).mean().item()
        return loss, {"loss": loss.item(), **metrics}


# --------------------------------------------------------------------------------------------
# stage 2: controllers
# --------------------------------------------------------------------------------------------
class ControllerTask:
    """Per-budget (`budget` int) or universal (`budget` = (lo, hi)) controller training."""

    def __init__(self, model: ADMN, controller: Controller, st: StageConfig, noise: NoiseConfig,
                 budget: int | tuple[int, int], unsupervised: bool = False) -> None:
        self.name = "controller-ae" if unsupervised else "controller"
        self.model, self.controller, self.st, self.noise = model, controller, st, noise
        self.budget, self.unsupervised = budget, unsupervised
        self.module = controller
        model.eval()
        model.requires_grad_(False)
        cfg: ModelConfig = controller.cfg
        w = [st.noise_weight.get(m, 1.0) for m in cfg.modalities]
        self.noise_w = torch.tensor(w)
        self.splits: dict[int, Tensor] = {}  # budget -> its block-count splits [K, M, D]
        self.runner = CachingRunner(model)  # candidates share their forced and common blocks

    def draw_budget(self, batch: int, gen: torch.Generator) -> int | Tensor:
        """The fixed budget, else one per sample (one per batch for `candidates`)."""
        if isinstance(self.budget, int):
            return self.budget
        lo, hi = self.budget
        if self.st.objective != "task":  # scored candidates: one budget per batch
            return int(torch.randint(lo, hi + 1, (1,), generator=gen))
        return torch.randint(lo, hi + 1, (batch,), generator=gen)

    def candidates(self, budget: int, logits: Tensor, gen: torch.Generator) -> Tensor:
        """bool [B, K, M, D]: per sample, `max_candidates` masks of `budget` blocks. "masks":
        uniform random masks; "splits": the budget's block-count splits (a random subset where
        there are more); "local": half around the controller's own pick (the pick and single
        swaps of it, from `logits` [B, M*D]), half random masks."""
        cfg = self.controller.cfg
        b, k = len(logits), self.st.max_candidates
        family = self.st.candidate_family
        if family == "splits":
            if budget not in self.splits:
                self.splits[budget] = torch.stack(split_candidates(
                    cfg.num_modalities, cfg.depth, budget, cfg.min_blocks_list))
            c = self.splits[budget]
            if len(c) > k:
                c = c[torch.randperm(len(c), generator=gen)[:k]]
            return c.expand(b, -1, -1, -1)
        local = k // 2 if family == "local" else 0
        forced = self.controller.forced.cpu()  # [M*D]
        scores = torch.rand(k - local, forced.numel(), generator=gen)  # as RandomPolicy
        rand = top_l_mask(scores, torch.full((k - local,), budget), forced).bool()  # [K', M*D]
        cands = rand.expand(b, -1, -1)  # shared by the batch: its blocks run once per sample
        if local:
            cands = torch.cat([self.around_pick(logits.detach().cpu(), budget, local, gen),
                               cands], 1)
        return cands.reshape(b, -1, cfg.num_modalities, cfg.depth)

    def around_pick(self, logits: Tensor, budget: int, n: int, gen: torch.Generator
                    ) -> Tensor:
        """bool [B, n, M*D]: the controller's top-L pick for each sample, then n - 1 copies
        with one chosen free block swapped for an unchosen one (at random)."""
        forced = self.controller.forced.cpu()
        pick = top_l_mask(logits, torch.full((len(logits),), budget), forced).bool()  # [B, C]
        out = pick[:, None].repeat(1, n, 1)  # [B, n, C]
        drop, add = pick & ~forced, ~pick
        if n == 1 or not (drop.any(1).all() and add.any(1).all()):  # nothing to swap
            return out
        u = torch.rand(2, len(pick), n - 1, pick.shape[1], generator=gen)  # [2, B, n-1, C]
        out_i = u[0].masked_fill(~drop[:, None], -1).argmax(-1, keepdim=True)  # [B, n-1, 1]
        in_i = u[1].masked_fill(~add[:, None], -1).argmax(-1, keepdim=True)
        swapped = out[:, 1:]  # a view: the swaps land in `out`
        swapped.scatter_(2, out_i, False)
        swapped.scatter_(2, in_i, True)
        return out

    def candidate_loss(self, inputs: dict[str, Tensor], target: Tensor, logits: Tensor,
                       budget: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(loss, mean error of the best candidate per sample in cm). The loss: for
        "candidates", the cross-entropy of the free slots' softmax against the
        softmin-weighted membership of the candidates; for "values", `value_fit_loss`."""
        cands = self.candidates(budget, logits, gen).to(target.device)  # [B, K, M, D]
        errs = torch.stack([localisation_error_cm(self.runner(inputs, cands[:, j]).mean,
                                                  target)
                            for j in range(cands.shape[1])], 1)  # [B, K]
        weight = torch.softmax(-errs / self.st.candidate_temperature_cm, 1)  # [B, K]
        free = ~self.controller.forced.to(target.device)  # [M*D]
        member = cands.flatten(2)[:, :, free].to(logits.dtype)  # [B, K, F]
        chosen = budget - int((~free).sum())  # the slots the controller picks
        best = errs.min(1).values.mean()
        if chosen == 0:  # only the forced blocks run: nothing to choose
            return logits.sum() * 0.0, best
        if self.st.objective == "values":
            return self.value_fit_loss(errs, member, logits[:, free]), best
        slot_target = torch.einsum("bk,bkf->bf", weight, member) / chosen  # rows sum to 1
        log_q = torch.log_softmax(logits[:, free], 1)  # [B, F]
        return -(slot_target * log_q).sum(1).mean(), best

    def value_fit_loss(self, errs: Tensor, member: Tensor, free_logits: Tensor) -> Tensor:
        """Misfit of an additive error model read from the free slots' logits [B, F]: a
        block's logit x -`candidate_temperature_cm` is its share of this input's error, so
        the sum over a candidate's blocks predicts its error (both centred over the
        candidates: the shared part cancels). Squared, in temperature units. The top-L logits
        are then the blocks that lower the error most; unlike the softmin target, every
        candidate's error teaches every slot in it, the best candidate's as much as the rest."""
        t = self.st.candidate_temperature_cm
        centred = member - member.mean(1, keepdim=True)  # [B, K, F]
        err = (errs - errs.mean(1, keepdim=True)) / t  # [B, K]
        pred = -torch.einsum("bkf,bf->bk", centred, free_logits)  # [B, K]
        return ((pred - err) ** 2).mean()

    def loss(self, batch: dict, epoch: int, step: int, gen: torch.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        c = self.controller.cfg.controller
        target = batch["target"]
        kind = pick_kind(self.st.noise_kinds, gen)
        noisy = corrupt(batch["inputs"], self.noise, kind, gen)
        lowres = downsample(noisy.inputs, c.img_size)
        budget = self.draw_budget(len(target), gen)
        out = self.module(lowres, budget)
        if self.unsupervised:
            aux = self.controller.reconstruction_loss(out, lowres)
            aux_w = self.st.recon_weight
        else:
            sigma = noisy.sigma.to(target.device)  # [B, S, M] normalised
            w = self.noise_w.to(target.device)
            aux = ((out.noise_per_node - sigma).abs() * w).sum(-1).mean()
            aux_w = 1.0
        metrics = {"aux": aux.item()}
        if epoch < self.st.warmup_noise_epochs:  # noise / AE head only
            loss = aux_w * aux
            metrics["loss"] = loss.item()
            return loss, metrics
        if self.st.objective != "task":  # "candidates" or "values": scored candidate masks
            self.runner.new_batch()
            task, best = self.candidate_loss(noisy.inputs, target, out.logits, budget, gen)
            err = localisation_error_cm(self.runner(noisy.inputs, out.mask.bool()).mean,
                                        target).mean()
            metrics["best_cm"] = best.item()
        else:
            pred = self.model(noisy.inputs, out.mask, blend=True)
            task, err = target_loss(self.model, pred, target, self.st.dist_weight)
        loss = task + aux_w * aux
        metrics.update(loss=loss.item(), task=task.item(), error_cm=err.item())
        return loss, metrics


# --------------------------------------------------------------------------------------------
# competing methods (DynMM, MMExit, M2SN)
# --------------------------------------------------------------------------------------------
class BaselineTask:
    """One baseline module (its whole state is trained and exported, `freeze_*` aside)."""

    trains_model = True  # the engine must not switch `model` to eval mode (it is the module)

    def __init__(self, method: str, module: nn.Module, st: StageConfig,
                 noise: NoiseConfig) -> None:
        self.name, self.st, self.noise = method, st, noise
        self.model = self.module = module  # the baseline itself (ADMN inside: module.model)
        self.export_config = module.model_cfg
        freeze_early_blocks(module.model, st.freeze_blocks)
        if st.freeze_model:
            module.model.requires_grad_(False)

    def save(self, path, meta: dict) -> None:
        save_baseline_checkpoint(path, self.module, meta)

    def stage_one(self, epoch: int) -> bool:
        return self.name in STAGE_ONE_METHODS and epoch < self.st.pretrain_epochs

    def tau(self, epoch: int) -> float | None:
        """M2SN's Gumbel temperature: annealed per epoch over stage II (tau_end at the last)."""
        if not isinstance(self.module, M2SN):
            return None
        stage2 = max(1, self.st.epochs - self.st.pretrain_epochs - 1)
        return self.module.tau_at(max(0, epoch - self.st.pretrain_epochs), stage2)

    def loss(self, batch: dict, epoch: int, step: int, gen: torch.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        target, inputs = batch["target"], batch["inputs"]
        if float(torch.rand(1, generator=gen)) < self.st.corrupt_prob:
            inputs = corrupt(inputs, self.noise, pick_kind(self.st.noise_kinds, gen), gen).inputs
        m, core = self.module, self.model  # module: maybe DDP-wrapped; model: the baseline
        if self.name == "mmexit":
            out = m(inputs, None)
            terms = core.loss(out, target)
        else:
            lowres = downsample(inputs, core.model_cfg.controller.img_size)
            first = self.stage_one(epoch)
            kwargs = {"random_gate": True} if first and self.name == "dynmm" else {}
            if self.name == "m2sn":
                kwargs["tau"] = self.tau(epoch)
            out = m(inputs, lowres, **kwargs)
            terms = core.pretrain_loss(out, target) if first else core.loss(out, target)
        err = localisation_error_cm(out.pred.mean.detach(), target).mean()
        return terms.total, {"loss": terms.total.item(), "task": terms.task.item(),
                             "resource": terms.resource.item(), "error_cm": float(err),
                             "gflops": float(out.flops.mean()) / 1e9}
