"""Does a controller's allocation follow the noise? Scores controller checkpoints of one budget
on the recipe's validation frames under one noise setting: the mean error of the controller,
naive and the full model, overall and per noise pattern (which modalities are noisy on at
least 2 of the 3 nodes), and the block counts the controller gives each pattern.

    python benchmarks/controller_probe.py --config config/train/demo_rand1_ref_alone.yaml \
        --weights runs/demo_rand1_ref_alone --budget 6 \
        --controller paper=runs/a/controller_L6.pt candidates=runs/b/controller_L6.pt \
        --out docs/results/controller_probe.md

`--premise` adds the premise curves (train/premise.py: error when backbones run k of their
blocks, clean and under the noise) on the same frames; without controllers it prints only those.

Development tool: the validation split only (`eval.tune_samples` frames), one corruption seed.
"""

from __future__ import annotations

import argparse
import datetime
from collections import Counter, defaultdict
from pathlib import Path

import torch

from admn_ros.core.model import downsample
from admn_ros.core.noise import corrupt
from admn_ros.core.policies import make_policy
from admn_ros.train.evaluate import tuning_set
from admn_ros.train.premise import CLEAN, premise, premise_lines
from admn_ros.train.provenance import cpu_name
from admn_ros.train.runner import CachingRunner, noise_generator
from admn_ros.train.tasks import localisation_error_cm
from admn_ros.train.weights import load_controller

SEED = 999  # corruption draws (not the eval's seeds)


def pattern_names(sigma: torch.Tensor, modalities: list[str]) -> list[str]:
    """Per sample, the modalities noisy on at least half the nodes ('clean' if none)."""
    noisy = (sigma >= 0.5).float().mean(1) >= 0.5  # [B, M]
    return ["+".join(m for m, v in zip(modalities, row, strict=True) if v) or "clean"
            for row in noisy.tolist()]


@torch.no_grad()
def probe(config: str, weights: str, controllers: dict[str, str], budget: int,
          kind: str) -> str:
    ts = tuning_set(config, weights)
    mcfg, model = ts.model_cfg, ts.models.model
    ctrls = {name: load_controller(path, mcfg).eval() for name, path in controllers.items()}
    naive = make_policy("naive", mcfg)
    runner = CachingRunner(model)
    gen = noise_generator(SEED, 0, 0)
    err: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for i in range(0, len(ts.frames), ts.cfg.eval.batch_size):
        batch = ts.split.batch(ts.frames[i:i + ts.cfg.eval.batch_size], torch.device("cpu"))
        c = corrupt(batch["inputs"], ts.cfg.noise, kind, gen)
        lowres = downsample(c.inputs, mcfg.controller.img_size)
        b = len(batch["target"])
        masks = {"full": torch.ones(b, mcfg.num_modalities, mcfg.depth, dtype=torch.bool),
                 "naive": naive(lowres, budget)}
        masks |= {n: ctrl(lowres, budget, sample=False).mask.bool() for n, ctrl in ctrls.items()}
        runner.new_batch()
        patterns = pattern_names(c.sigma, mcfg.modalities)
        for name, mask in masks.items():
            e = localisation_error_cm(runner(c.inputs, mask).mean, batch["target"]).tolist()
            for j, p in enumerate(patterns):
                for key in (p, "all"):
                    err[key][name].append(e[j])
                if name in ctrls:
                    counts[p][name]["/".join(map(str, mask[j].sum(1).tolist()))] += 1
    names = ["full", "naive", *ctrls]
    lines = [f"# Controller probe: L = {budget}, {kind} noise, {len(ts.frames)} val frames",
             "", f"{datetime.date.today()}, {cpu_name()}; `{config}`, weights `{weights}`; "
             "controllers: " + ", ".join(f"{n} = `{p}`" for n, p in controllers.items()), "",
             "Mean error in cm; per controller the most common block counts "
             f"({'/'.join(mcfg.modalities)}).", "",
             "| noisy (>= 2 of 3 nodes) | frames | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for key in ["all", *sorted(k for k in err if k != "all")]:
        cells = []
        for n in names:
            mean = sum(err[key][n]) / len(err[key][n])
            top = "" if n not in ctrls or key == "all" else \
                " (" + ", ".join(f"{k} x{v}" for k, v in counts[key][n].most_common(2)) + ")"
            cells.append(f"{mean:.1f}{top}")
        lines.append(f"| {key} | {len(err[key]['full'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def premise_on_val(config: str, weights: str, kind: str) -> str:
    """The premise curves (clean and `kind`) on the probe's frames, as markdown."""
    ts = tuning_set(config, weights)
    res = premise(CachingRunner(ts.models.model), ts.split, ts.frames, ts.model_cfg,
                  ts.cfg.noise, [CLEAN, kind], {kind: noise_generator(SEED, 0, 0)},
                  ts.cfg.eval.batch_size)
    return "\n".join(premise_lines({"premise": res})) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True, help="run folder with admn.pt")
    p.add_argument("--controller", nargs="*", default=[], help="NAME=PATH ...")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--noise", default="binary")
    p.add_argument("--premise", action="store_true", help="add the premise curves")
    p.add_argument("--out", default=None, help="markdown file (default: stdout only)")
    args = p.parse_args()
    if not (args.controller or args.premise):
        p.error("nothing to do: give --controller NAME=PATH ... and/or --premise")
    controllers = dict(c.split("=", 1) for c in args.controller)
    text = probe(args.config, args.weights, controllers, args.budget, args.noise) \
        if controllers else ""
    if args.premise:
        text += premise_on_val(args.config, args.weights, args.noise)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
