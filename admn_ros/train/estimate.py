"""Expected duration of a recipe on this machine, from a short measured warm-up.

`scripts/train.sh` prints it before it commits to the run: every stage's planned steps (the
recipe's, the same on every machine) times the seconds per step measured here on synthetic
inputs of the model's shape (a step's cost does not depend on the pixels). Controllers'
head-only warm-up steps are timed separately (they skip the backbones).

    python -m admn_ros.train.estimate --config config/train/demo.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from admn_ros.core.config import ModelConfig
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.train.config import StageConfig, TrainConfig, load_train_config, validate
from admn_ros.train.engine import set_train_mode
from admn_ros.train.main import (
    controller_budgets,
    controller_config,
    epoch_plan,
    head_only_epochs,
)
from admn_ros.train.provenance import cpu_name
from admn_ros.train.tasks import BackboneTask, ControllerTask, MAETask

TRAIN_STAGES = ("mae", "backbone", "controller", "controller-ae")  # what `make train` runs


@dataclass
class StageEstimate:
    stage: str
    jobs: int
    steps: int  # all jobs
    head_steps: int  # of which head-only (controllers' warm-up)
    s_per_step: float
    s_per_head_step: float

    @property
    def seconds(self) -> float:
        return ((self.steps - self.head_steps) * self.s_per_step
                + self.head_steps * self.s_per_head_step)


def synthetic_batch(model_cfg: ModelConfig, batch_size: int, gen: torch.Generator) -> dict:
    s, size = model_cfg.num_nodes, model_cfg.backbone.img_size
    inputs = {m: torch.rand(batch_size, s, c, size, size, generator=gen)
              for m, c in model_cfg.in_chans.items()}
    target = (torch.rand(batch_size, 2, generator=gen) - 0.5) * 200
    return {"inputs": inputs, "target": target, "index": torch.arange(batch_size)}


def time_steps(task, st: StageConfig, model_cfg: ModelConfig, epoch: int, steps: int) -> float:
    """Mean seconds of one optimisation step (after one untimed step)."""
    gen = torch.Generator().manual_seed(0)
    params = [p for p in task.module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=st.lr)
    set_train_mode(task, task.module)
    elapsed = 0.0
    for i in range(steps + 1):
        batch = synthetic_batch(model_cfg, st.batch_size, gen)
        start = time.perf_counter()
        loss, _ = task.loss(batch, epoch, i, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            elapsed += time.perf_counter() - start
    return elapsed / steps


def controller_estimate(stage: str, st: StageConfig, model_cfg: ModelConfig, cfg: TrainConfig,
                        n_train: int, warm_steps: int) -> StageEstimate:
    """A controller stage: each job timed by its own settings (objective, steps per epoch): a
    scored-candidates job per budget (its step grows with the budget), task-loss jobs once per
    kind (per-budget or universal); the seconds per step are their mean."""
    unsupervised = stage == "controller-ae"
    budgets = controller_budgets(st, model_cfg)
    timed: dict[tuple[str, object], tuple[float, float]] = {}
    steps = head_steps = 0
    seconds = head_seconds = 0.0
    for b in budgets:
        stb = st.for_budget(b)
        head = head_only_epochs(stb, stage)  # a controller task is named after its stage
        key = (stb.objective, b if stb.objective != "task" else isinstance(b, tuple))
        if key not in timed:
            ctrl = Controller(controller_config(model_cfg, b, unsupervised))
            task = ControllerTask(ADMN(model_cfg), ctrl, stb, cfg.noise, b, unsupervised)
            main_epoch = min(stb.epochs - 1, head)
            timed[key] = (time_steps(task, stb, model_cfg, main_epoch, warm_steps),
                          time_steps(task, stb, model_cfg, 0, warm_steps) if head else 0.0)
        plan = epoch_plan(stb, n_train, stage)
        steps += sum(plan[head:])
        head_steps += sum(plan[:head])
        seconds += sum(plan[head:]) * timed[key][0]
        head_seconds += sum(plan[:head]) * timed[key][1]
    return StageEstimate(stage, len(budgets), steps + head_steps, head_steps,
                         seconds / max(steps, 1), head_seconds / max(head_steps, 1))


def estimate(cfg: TrainConfig, n_train: int, warm_steps: int = 3) -> list[StageEstimate]:
    """Per stage of `make train` (epochs > 0): planned steps and measured seconds per step."""
    model_cfg = cfg.model_config()
    validate(cfg, model_cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = []
    for stage in TRAIN_STAGES:
        st = cfg.stage(stage)
        if st.epochs == 0:
            continue
        if stage in ("controller", "controller-ae"):
            out.append(controller_estimate(stage, st, model_cfg, cfg, n_train, warm_steps))
            continue
        cls = MAETask if stage == "mae" else BackboneTask
        task = cls(ADMN(model_cfg), st, cfg.noise, cfg.seed)
        plan = epoch_plan(st, n_train, task.name)
        main_epoch = min(st.epochs - 1, st.clean_epochs if stage == "backbone" else 0)
        per_step = time_steps(task, st, model_cfg, main_epoch, warm_steps)
        out.append(StageEstimate(stage, 1, sum(plan), 0, per_step, 0.0))
    return out


def report(estimates: list[StageEstimate], threads: int) -> str:
    lines = [f"[estimate] measured on {cpu_name()}, {threads} thread(s):"]
    for e in estimates:
        head = (f" (+ {e.head_steps} head-only x {e.s_per_head_step:.3f} s)" if e.head_steps
                else "")
        lines.append(f"[estimate]   {e.stage}: {e.jobs} job(s), {e.steps - e.head_steps} steps "
                     f"x {e.s_per_step:.2f} s{head} = {e.seconds / 60:.1f} min")
    total = sum(e.seconds for e in estimates)
    lines.append(f"[estimate] expected training time: {total / 60:.0f} min (+ export and eval); "
                 "other load on the machine makes it longer")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from admn_ros.data.dataset import GDTMDataset

    parser = argparse.ArgumentParser(prog="python -m admn_ros.train.estimate",
                                     description="expected duration of a recipe on this machine")
    parser.add_argument("--config", required=True)
    parser.add_argument("--warm-steps", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config)
        model_cfg = cfg.model_config()
        n_train = len(GDTMDataset(cfg.path(cfg.data.root), "train", model_cfg.backbone.img_size,
                                  modalities=model_cfg.modalities, nodes=model_cfg.nodes,
                                  cache="none"))
        print(report(estimate(cfg, n_train, args.warm_steps), torch.get_num_threads()),
              flush=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"estimate: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
