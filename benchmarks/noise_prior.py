"""Is the controller's noise prior worth having? Chosen on the validation split
(docs/ARCHITECTURE.md, "Controller"): one universal controller per prior value, trained by
the recipe's controller stage on the same backbone, then scored on val frames under every
noise setting at the recipe's eval budgets (mean error, and the blocks each modality gets).

    python benchmarks/noise_prior.py --config config/train/demo.yaml --priors 0 3

Backbone: `--weights` (a run folder with admn.pt) or the recipe's shipped `models_dir`.
Controllers go to `<out>/prior_<p>/`; the report to `<results>/<recipe>_noise_prior.{json,md}`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

import torch
import yaml

from admn_ros.core.checkpoint import load_checkpoint, save_checkpoint
from admn_ros.core.config import to_dict
from admn_ros.core.model import ADMN, downsample
from admn_ros.core.noise import corrupt
from admn_ros.train.config import replace_controller
from admn_ros.train.evaluate import NOISE_SETTINGS, TUNE_SEED_OFFSET, tuning_set
from admn_ros.train.main import run_stage
from admn_ros.train.provenance import cpu_name
from admn_ros.train.runner import CachingRunner, noise_generator


def train_universal(cfg, backbone: ADMN, prior: float, out: Path) -> Path:
    """The recipe's universal controller with `noise_prior` = prior, on `backbone`."""
    model_cfg = replace_controller(backbone.cfg, noise_prior=prior)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.yaml").write_text(yaml.safe_dump(to_dict(model_cfg)))
    admn = ADMN(model_cfg)
    admn.load_state_dict(backbone.state_dict())
    save_checkpoint(out / "admn.pt", admn)
    ctrl = dataclasses.replace(cfg.controller, budgets=[], universal=True)
    run_stage(dataclasses.replace(cfg, model=str(out / "model.yaml"), out_dir=str(out),
                                  controller=ctrl), "controller", resume=True)
    return out / "controller_universal.pt"


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--priors", type=float, nargs="+", default=[0.0, 3.0])
    parser.add_argument("--weights", default=None, help="run folder (default: shipped)")
    parser.add_argument("--out", default="runs/noise_prior", help="controllers' folder")
    parser.add_argument("--results", default="docs/results", help="report folder")
    args = parser.parse_args()

    ts = tuning_set(args.config, args.weights)
    cfg, ev, model_cfg, model = ts.cfg, ts.cfg.eval, ts.model_cfg, ts.models.model
    split, frames, budgets = ts.split, ts.frames, ts.budgets
    with torch.enable_grad():
        ctrls = {p: load_checkpoint(train_universal(cfg, model, p, Path(args.out) /
                                                    f"prior_{p:g}"), kind="controller")
                 .module.eval() for p in args.priors}
    runner = CachingRunner(model)
    err = {(p, k, b): 0.0 for p in ctrls for k in NOISE_SETTINGS for b in budgets}
    blocks = {key: torch.zeros(model_cfg.num_modalities) for key in err}
    for k, kind in enumerate(NOISE_SETTINGS):
        gen = noise_generator(ev.noise_seed + TUNE_SEED_OFFSET, k, 0)
        for i in range(0, len(frames), ev.batch_size):
            batch = split.batch(frames[i:i + ev.batch_size], torch.device("cpu"))
            x = corrupt(batch["inputs"], cfg.noise, kind, gen).inputs
            lowres = downsample(x, model_cfg.controller.img_size)
            runner.new_batch()
            for p, ctrl in ctrls.items():
                for b in budgets:
                    mask = ctrl(lowres, b, sample=False).mask.bool()
                    e = (runner(x, mask).mean - batch["target"]).norm(dim=-1)
                    err[(p, kind, b)] += float(e.sum())
                    blocks[(p, kind, b)] += mask.sum(-1).sum(0).float()
    n = len(frames)
    res = {"recipe": cfg.recipe, "split": split.name, "frames": n, "budgets": budgets,
           "priors": args.priors, "cpu": cpu_name(), "date": datetime.date.today().isoformat(),
           "error_cm": {f"{p:g}/{k}/{b}": round(v / n, 2) for (p, k, b), v in err.items()},
           "blocks": {f"{p:g}/{k}/{b}": [round(float(v) / n, 2) for v in c]
                      for (p, k, b), c in blocks.items()}}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.recipe}_noise_prior.json").write_text(json.dumps(res, indent=1))
    mods = "/".join(model_cfg.modalities)
    lines = [f"# Controller noise prior: {cfg.recipe}, {split.name} split", "",
             f"{n} {split.name} frames; one universal controller per prior, same backbone and "
             f"recipe; {res['date']}, {res['cpu']}. Mean error (cm), and mean blocks {mods}.",
             "", "| noise | prior | " + " | ".join(f"L={b}" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for kind in NOISE_SETTINGS:
        for p in args.priors:
            cells = " | ".join(
                f"{res['error_cm'][f'{p:g}/{kind}/{b}']:.2f} "
                f"({'/'.join(f'{v:.1f}' for v in res['blocks'][f'{p:g}/{kind}/{b}'])})"
                for b in budgets)
            lines.append(f"| {kind} | {p:g} | {cells} |")
    (out / f"{cfg.recipe}_noise_prior.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
