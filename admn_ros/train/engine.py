"""The training loop shared by every stage (MAE's `engine_pretrain.train_one_epoch` shape)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from admn_ros.train import distributed as D
from admn_ros.train.metrics import SmoothedMeans


class NonFiniteLossError(RuntimeError):
    """A NaN / inf loss: training stops; the last good checkpoint stays on disk."""


def set_train_mode(task, module: nn.Module) -> None:
    """`module` in train mode; a frozen main network (controller stages) in eval mode."""
    module.train()
    if hasattr(task, "model") and task.module is not task.model and task.name != "mae" \
            and not getattr(task, "trains_model", False):
        task.model.eval()


def train_one_epoch(task, module: nn.Module, batches: Iterable[dict], total: int,
                    optimizer: torch.optim.Optimizer, scheduler, epoch: int, step: int,
                    generator: torch.Generator, grad_clip: float | None = None,
                    desc: str = "", out_of_time: Callable[[], bool] | None = None
                    ) -> tuple[dict[str, float], int]:
    """One pass over `batches` (ends early once `out_of_time()` on any rank);
    returns (mean metrics over ranks, global step after)."""
    set_train_mode(task, module)
    means = SmoothedMeans()
    bar = tqdm(batches, total=total, desc=desc, disable=not D.is_main(), leave=False,
               dynamic_ncols=True)
    for batch in bar:
        loss, metrics = task.loss(batch, epoch, step, generator)
        if D.any_rank(not math.isfinite(loss.item())):
            idx = batch["index"][:8].tolist()
            raise NonFiniteLossError(
                f"{task.name}: non-finite loss ({loss.item()}) at epoch {epoch}, step {step}, "
                f"batch of samples {idx}{'...' if len(batch['index']) > 8 else ''}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        means.update(len(batch["target"]), **metrics)
        bar.set_postfix({k: f"{v:.3g}" for k, v in means.means().items()
                         if k in ("loss", "error_cm", "aux")})
        if out_of_time is not None and D.any_rank(out_of_time()):
            break
    bar.close()
    return D.mean_across_ranks(means.means()), step


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str,
              time_fraction: Callable[[], float] | None = None, hold_steps: int = 0):
    """Multiplier of the base learning rate at a step: the first `hold_steps` at the base rate
    (a controller's head-only warm-up epochs, outside the step schedule), then a linear warm-up,
    then the schedule over max(step progress, `time_fraction()`) when a wall-clock budget is
    set. The budget covers the whole job, hold included, so a hold that takes a fifth of it
    starts the schedule a fifth of the way in (keep holds short against the budget)."""

    def f(step: int) -> float:
        if step < hold_steps:
            return 1.0
        step -= hold_steps
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - hold_steps - warmup_steps)
        if time_fraction is not None:
            t = max(t, time_fraction())
        t = min(1.0, max(0.0, t))
        if schedule == "cosine":
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))
        if schedule == "linear":
            return 1.0 - 0.98 * t
        return 1.0

    return f
