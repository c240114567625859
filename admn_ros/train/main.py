"""`admn train STAGE --config FILE`: parse the recipe, build the stage's task(s), run the loop.

Stage outputs (core checkpoints under the recipe's `out_dir`):
`mae.pt`, `admn.pt` (backbones + fusion), `controller_L{L}.pt`, `controller_universal.pt`,
`controller_ae.pt` (universal AE) / `controller_ae_L{L}.pt`, and for the competing methods
`dynmm.pt`, `mmexit.pt`, `m2sn.pt` (baseline checkpoints, docs/BASELINES.md). Each job also keeps
`<out_dir>/<job>/checkpoint.pt` (training state, every epoch) and `metrics.csv/.jsonl`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from admn_ros.core.checkpoint import load_checkpoint, load_pretrained_backbone, save_checkpoint
from admn_ros.core.config import ModelConfig, config_diff, load_model_config, to_dict
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.noise import corrupt
from admn_ros.data.preprocess import input_settings
from admn_ros.train import distributed as D
from admn_ros.train.config import (
    BASELINE_STAGES,
    StageConfig,
    TrainConfig,
    as_dict,
    replace_controller,
    validate,
)
from admn_ros.train.data import (
    Split,
    input_reference,
    iterate_batches,
    load_split,
    steps_per_epoch,
)
from admn_ros.train.engine import NonFiniteLossError, lr_lambda, train_one_epoch
from admn_ros.train.metrics import MetricWriter
from admn_ros.train.provenance import provenance
from admn_ros.train.state import atomic_save, load_training_state, rng_state, set_rng_state
from admn_ros.train.tasks import (
    BackboneTask,
    BaselineTask,
    ControllerTask,
    MAETask,
    localisation_error_cm,
)

VAL_NOISE_SEED = 4321  # fixed corruption of the validation subset (comparable across epochs)
VAL_SAMPLES = 256  # validation subset per epoch (cheap on CPU)


@dataclass
class Job:
    name: str  # run folder under out_dir
    output: Path  # core checkpoint written when the job finishes
    build: Callable[[], object]  # -> task
    st: StageConfig  # what it trains with (the stage's, with a budget's overrides)


# --------------------------------------------------------------------------------------------
# what each stage trains
# --------------------------------------------------------------------------------------------
def controller_config(model_cfg: ModelConfig, budget: int | tuple[int, int],
                      unsupervised: bool) -> ModelConfig:
    changes = {"ae_head": unsupervised, "noise_head": not unsupervised}
    if unsupervised:  # the AE variant has no noise estimate to condition on
        changes["noise_prior"] = 0.0
    if isinstance(budget, tuple):
        changes.update(budget_token=True, budget_min=budget[0], budget_max=budget[1])
    return replace_controller(model_cfg, **changes)


def load_admn(path: Path, model_cfg: ModelConfig) -> ADMN:
    if not path.is_file():
        raise ValueError(f"{path}: expected the backbone stage's output; run "
                         f"`admn train backbone --config ...` first")
    return load_checkpoint(path, into=ADMN(model_cfg), kind="admn").module


def find_controller(out: Path) -> Path | None:
    """The trained controller whose trunk best suits a gate: universal, else the largest L."""
    if (out / "controller_universal.pt").is_file():
        return out / "controller_universal.pt"
    per_budget = sorted(out.glob("controller_L*.pt"),
                        key=lambda p: int(p.stem[len("controller_L"):]))
    return per_budget[-1] if per_budget else None


def build_baseline_task(cfg: TrainConfig, stage: str, model_cfg: ModelConfig) -> BaselineTask:
    """The method from its config, warm-started from the ADMN checkpoint (and a controller)."""
    from admn_ros.core.baselines import build_baseline, init_from_admn, load_baseline_config
    from admn_ros.train.weights import check_compatible

    out, st = cfg.path(cfg.out_dir), cfg.stage(stage)
    bcfg = load_baseline_config(cfg.path(st.baseline_config or f"config/baselines/{stage}.yaml"),
                                method=stage)
    module = build_baseline(model_cfg, bcfg)
    admn_path = cfg.path(st.init) if st.init else out / "admn.pt"
    if not admn_path.is_file():
        raise ValueError(f"{admn_path}: expected the backbone stage's output; run "
                         f"`admn train backbone --config ...` first")
    init_from_admn(module, admn_path)
    trunk = getattr(module, "gate_trunk", None) or getattr(module, "nav_trunk", None)
    if st.gate_init and trunk is not None:
        ctrl_path = find_controller(out) if st.gate_init == "auto" else cfg.path(st.gate_init)
        if ctrl_path is None:
            if D.is_main():
                print(f"[train] {stage}: gate_init auto: no controller in {out}, gate from "
                      f"scratch")
        else:
            c = load_checkpoint(ctrl_path, kind="controller")
            check_compatible(c.model_config, model_cfg, ctrl_path)
            trunk.load_from_controller(c.module)
            if D.is_main():
                print(f"[train] {stage}: gate trunk from {ctrl_path}")
    return BaselineTask(stage, module, st, cfg.noise)


def controller_budgets(st: StageConfig, model_cfg: ModelConfig) -> list[int | tuple[int, int]]:
    """A controller stage's jobs: one per budget, then (lo, hi) for the universal one."""
    budgets: list[int | tuple[int, int]] = list(st.budgets)
    if st.universal:
        rng = st.universal_range or ([min(st.budgets), max(st.budgets)] if st.budgets
                                     else list(model_cfg.budget_range))
        budgets.append((rng[0], rng[1]))
    return budgets


def plan(cfg: TrainConfig, stage: str, model_cfg: ModelConfig, train: Split) -> list[Job]:
    """The jobs of a stage. `train`: the split a new model's input references come from
    (`ModelConfig.input_reference`)."""
    out = cfg.path(cfg.out_dir)
    st = cfg.stage(stage)
    if stage in BASELINE_STAGES:
        return [Job(stage, out / f"{stage}.pt",
                    lambda: build_baseline_task(cfg, stage, model_cfg), st)]
    if stage in ("mae", "backbone"):
        def build_admn() -> object:
            model = ADMN(model_cfg)
            if st.pretrained:
                for vit in model.backbones.values():
                    load_pretrained_backbone(vit, cfg.path(st.pretrained))
            init = cfg.path(st.init) if st.init else (out / "mae.pt" if stage == "backbone"
                                                      and (out / "mae.pt").exists() else None)
            if init is not None:  # LayerDrop is how this stage trains, not what it starts from
                load_checkpoint(init, into=model, kind="admn", ignore=("layerdrop",))
            else:
                for m in model_cfg.input_reference:
                    model.backbones[m].input_reference.copy_(input_reference(train, m))
            task_cls = MAETask if stage == "mae" else BackboneTask
            return task_cls(model, st, cfg.noise, cfg.seed)

        name = "mae" if stage == "mae" else "admn"
        return [Job(name, out / f"{name}.pt", build_admn, st)]

    unsupervised = stage == "controller-ae"
    admn_path = cfg.path(st.init) if st.init else out / "admn.pt"
    budgets = controller_budgets(st, model_cfg)
    prefix = "controller_ae" if unsupervised else "controller"
    jobs = []
    for b in budgets:
        if isinstance(b, tuple):
            name = prefix if unsupervised else f"{prefix}_universal"
        else:
            name = f"{prefix}_L{b}"

        stb = st.for_budget(b)

        def build(b: int | tuple[int, int] = b, stb: StageConfig = stb) -> object:
            model = load_admn(admn_path, model_cfg)
            ctrl = Controller(controller_config(model_cfg, b, unsupervised))
            return ControllerTask(model, ctrl, stb, cfg.noise, b, unsupervised)

        jobs.append(Job(name, out / f"{name}.pt", build, stb))
    if not jobs:
        raise ValueError(f"{stage}: expected budgets or universal: true, got neither")
    return jobs


def job_settings(st: StageConfig) -> dict:
    """A job's stage settings as its training state records them (other budgets' overrides
    left out: they do not change this job)."""
    settings = to_dict(st)
    settings.pop("per_budget", None)
    return settings


def head_only_epochs(st: StageConfig, task_name: str) -> int:
    """Controller warm-up epochs (noise / AE head only): own step cap, base lr, no schedule."""
    return st.warmup_noise_epochs if task_name.startswith("controller") else 0


def epoch_plan(st: StageConfig, n_train: int, task_name: str) -> list[int]:
    """Steps of each epoch of a job: the recipe's amount of training, whatever the machine."""
    head_only = head_only_epochs(st, task_name)
    return [steps_per_epoch(n_train, st.batch_size,
                            st.max_warmup_steps if e < head_only else st.max_steps_per_epoch)
            for e in range(st.epochs)]


# --------------------------------------------------------------------------------------------
# validation (main rank, a fixed subset with fixed corruptions)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def validate_task(task, val: Split, st: StageConfig, cfg: TrainConfig,
                  device: torch.device) -> dict[str, float]:
    if task.name == "mae":
        return {}
    n = min(len(val), VAL_SAMPLES)
    idx = torch.linspace(0, len(val) - 1, n).long()
    gen = torch.Generator().manual_seed(VAL_NOISE_SEED)
    model = task.model
    model.eval()
    errs: dict[str, list[torch.Tensor]] = {}
    for i in range(0, n, st.batch_size):
        batch = val.batch(idx[i:i + st.batch_size], device)
        noisy = corrupt(batch["inputs"], cfg.noise, "binary", gen).inputs
        if task.name in BASELINE_STAGES:  # the method at its config's knob, eval mode
            lowres = downsample(noisy, model.model_cfg.controller.img_size)
            out = model(noisy, lowres)
            errs.setdefault("val_binary_cm", []).append(
                localisation_error_cm(out.pred.mean, batch["target"]))
            errs.setdefault("val_gflops", []).append(out.flops.float() / 1e9)
            continue
        if task.name == "backbone":
            runs = {"val_clean_cm": (batch["inputs"], None), "val_binary_cm": (noisy, None)}
        else:
            ctrl = task.controller
            ctrl.eval()
            b = task.budget if isinstance(task.budget, int) else \
                (task.budget[0] + task.budget[1]) // 2
            lowres = downsample(noisy, ctrl.cfg.controller.img_size)
            mask = ctrl(lowres, b, sample=False).mask.bool()
            runs = {f"val_binary_L{b}_cm": (noisy, mask)}
        for key, (x, active) in runs.items():
            pred = model(x, active)
            errs.setdefault(key, []).append(localisation_error_cm(pred.mean, batch["target"]))
    return {k: float(torch.cat(v).mean()) for k, v in errs.items()}


# --------------------------------------------------------------------------------------------
# one job: build, resume, loop over epochs, checkpoint, export
# --------------------------------------------------------------------------------------------
def run_job(job: Job, cfg: TrainConfig, train: Split, val: Split, device: torch.device,
            resume: bool, stop_after_epochs: int | None,
            time_budget_min: float | None = None) -> Path | None:
    """Train one job for exactly the recipe's steps (epochs x steps per epoch); with
    `time_budget_min` (the explicit `--time-budget` option) it may stop earlier, and then says so
    in the log, its metrics and its checkpoint's meta (`stopped at step N of M`)."""
    st = job.st
    run_dir = cfg.path(cfg.out_dir) / job.name
    ckpt_path = run_dir / "checkpoint.pt"
    torch.manual_seed(cfg.seed + D.rank())
    task = job.build()
    module = task.module.to(device)
    if hasattr(task, "model"):
        task.model.to(device)
    export = task.controller if hasattr(task, "controller") else task.model
    export_cfg = getattr(task, "export_config", None) or export.cfg  # its ModelConfig
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=st.lr, weight_decay=st.weight_decay)
    head_only = head_only_epochs(st, task.name)
    plan_steps = epoch_plan(st, len(train), task.name)

    steps = steps_per_epoch(train, st.batch_size, st.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"split 'train': expected at least batch_size x ranks = "
                         f"{st.batch_size * D.world_size()} samples, got {len(train)}")
    planned = sum(plan_steps)  # the recipe's amount of training
    clock = {"start": time.time()}

    def time_fraction() -> float:  # share of the wall-clock budget spent (resume-aware)
        return (time.time() - clock["start"]) / (60.0 * time_budget_min)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(planned, int(st.warmup_epochs * steps), st.schedule,
                             time_fraction if time_budget_min else None,
                             hold_steps=sum(plan_steps[:head_only])))
    out_of_time = (lambda: time_fraction() >= 1.0) if time_budget_min else None
    start_epoch, step, history = 0, 0, []
    if resume and ckpt_path.exists():
        state = load_training_state(ckpt_path)
        diff = config_diff(load_model_config(state["model_config"]), export_cfg)
        if diff:
            raise ValueError(f"checkpoint {ckpt_path}: model config mismatch in {diff}")
        if "baseline_config" in state:  # older states lack newer fields: compare as loaded
            from admn_ros.core.baselines import load_baseline_config

            if load_baseline_config(state["baseline_config"]) != export.cfg:
                raise ValueError(f"checkpoint {ckpt_path}: baseline config differs from "
                                 f"{state['baseline_config']}")
        diff = config_diff(state.get("stage_config", job_settings(st)), job_settings(st))
        if diff:
            raise ValueError(f"checkpoint {ckpt_path}: trained with other stage settings "
                             f"({', '.join(diff)}) than the recipe's; delete {run_dir} to "
                             f"train it with the recipe's")
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        clock["start"] -= state.get("elapsed", 0.0)
        if state.get("out_of_time"):
            start_epoch = st.epochs
        set_rng_state(state["rng"])
        if D.is_main():
            print(f"[train] {job.name}: resumed from {ckpt_path} at epoch {start_epoch}, "
                  f"step {step}")
    if start_epoch >= st.epochs and job.output.exists():
        if D.is_main():
            print(f"[train] {job.name}: already finished ({job.output})")
        return job.output
    if D.is_distributed():
        task.module = DistributedDataParallel(module, find_unused_parameters=True)
    writer = MetricWriter(run_dir, enabled=D.is_main())
    for epoch in range(start_epoch, st.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + D.rank() * 104729 + epoch)
        batches = iterate_batches(train, st.batch_size, device, shuffle=True, seed=cfg.seed,
                                  epoch=epoch, max_steps=plan_steps[epoch])
        try:
            metrics, step = train_one_epoch(
                task, task.module, batches, plan_steps[epoch], optimizer, scheduler, epoch,
                step, gen, st.grad_clip, desc=f"{job.name} {epoch + 1}/{st.epochs}",
                out_of_time=out_of_time)
        except NonFiniteLossError as exc:
            kept = ckpt_path if ckpt_path.exists() else "none yet"
            raise NonFiniteLossError(f"{exc}; stopped, last good checkpoint kept: {kept}") from None
        spent = out_of_time is not None and out_of_time() and step < planned
        row = {"epoch": epoch, "step": step, "steps_planned": planned,
               "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.time() - clock["start"], 1), **metrics,
               "stopped_early": int(spent)}
        if D.is_main():
            row.update(validate_task(task, val, st, cfg, device))
            history.append(row)
            writer.write(row)
            atomic_save({"format": "admn_ros/train-state/1", "job": job.name,
                         "model_config": to_dict(export_cfg), "recipe": as_dict(cfg),
                         "stage_config": job_settings(st),
                         **({"baseline_config": to_dict(export.cfg)}
                            if export_cfg is not export.cfg else {}),
                         "module": module.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step,
                         "history": history, "rng": rng_state(),
                         "elapsed": time.time() - clock["start"], "out_of_time": spent},
                        ckpt_path)
            print(f"[train] {job.name} epoch {epoch + 1}/{st.epochs} step {step}: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                              if isinstance(v, float) and k not in ("epoch", "step")),
                  flush=True)
        D.barrier()
        if stop_after_epochs is not None and epoch + 1 - start_epoch >= stop_after_epochs:
            writer.close()
            return None  # simulated interruption (tests)
        if D.any_rank(spent):
            break
    writer.close()
    check_ranks_agree(export, job.name)
    if D.is_main():
        stopped = step < planned
        if stopped:
            print(f"[train] *** {job.name}: STOPPED EARLY at step {step} of {planned} "
                  f"({100 * step / planned:.0f} %): --time-budget {time_budget_min:g} min spent. "
                  f"These weights are NOT what the recipe trains; run without --time-budget "
                  f"for the recipe's result. ***", flush=True)
        meta = {"job": job.name, "stage": task.name, "recipe": cfg.recipe, "seed": cfg.seed,
                "epochs": st.epochs, "step": step, "steps_planned": planned,
                "stopped_early": stopped,
                **({"stopped": f"stopped at step {step} of {planned} (time budget "
                               f"{time_budget_min:g} min)"} if stopped else {}),
                "time_budget_min": time_budget_min,
                "provenance": provenance(time.time() - clock["start"]),
                "preprocess": input_settings(),  # checked where the weights are loaded
                "metrics": {k: v for k, v in (history[-1] if history else {}).items()
                            if isinstance(v, int | float)}}
        if hasattr(task, "budget"):
            meta["budget"] = list(task.budget) if isinstance(task.budget, tuple) else task.budget
        if hasattr(task, "save"):
            task.save(job.output, meta)
        else:
            save_checkpoint(job.output, export, meta)
        print(f"[train] {job.name}: wrote {job.output}", flush=True)
    D.barrier()
    return job.output


def check_ranks_agree(module: torch.nn.Module, name: str) -> None:
    """Under DDP, every rank must end with the same weights; RuntimeError if not."""
    if not D.is_distributed():
        return
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten().cpu() for p in module.parameters()])
        weights = (torch.arange(len(flat)) % 7919).double()
        local = torch.stack([flat.sum(), (flat * weights).sum()])
        local = local.to(next(module.parameters()).device)
    sums = [torch.zeros_like(local) for _ in range(D.world_size())]
    torch.distributed.all_gather(sums, local)
    spread = max(float((s - sums[0]).abs().max()) for s in sums)
    if spread > 1e-6 * max(1.0, float(sums[0].abs().max())):
        raise RuntimeError(f"{name}: ranks disagree on the weights (checksums "
                           f"{[s.tolist() for s in sums]})")
    if D.is_main():
        print(f"[train] {name}: all {D.world_size()} ranks agree on the weights "
              f"(checksum {float(sums[0][0]):.6f})", flush=True)


def run_stage(cfg: TrainConfig, stage: str, resume: bool = False,
              stop_after_epochs: int | None = None, jobs: list[str] | None = None,
              time_budget_min: float | None = None) -> list[Path]:
    """Run one stage of a recipe; returns the outputs written (or found finished).
    `time_budget_min`: wall-clock cap of each job (quick experiments; the run then records that
    it stopped early)."""
    if time_budget_min is not None and not time_budget_min > 0:
        raise ValueError(f"--time-budget: expected minutes > 0, got {time_budget_min}")
    model_cfg = cfg.model_config()
    validate(cfg, model_cfg)
    st = cfg.stage(stage)
    device = D.init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if st.epochs == 0:
        if D.is_main():
            print(f"[train] {stage}: epochs = 0 in the recipe, nothing to do")
        return []
    root = cfg.path(cfg.data.root)
    train = load_split(root, "train", model_cfg, cfg.data.min_samples)
    val = load_split(root, "val", model_cfg, 1)
    outputs = []
    for job in plan(cfg, stage, model_cfg, train):
        if jobs and job.name not in jobs:
            continue
        out = run_job(job, cfg, train, val, device, resume, stop_after_epochs, time_budget_min)
        if out is not None:
            outputs.append(out)
    return outputs
