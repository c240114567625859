"""Which block order prunes a LayerDrop-trained backbone best, chosen on the validation split
(docs/ARCHITECTURE.md, "Policies"): the naive allocation (L/M blocks per modality) with each
candidate order, at the recipe's eval budgets, on clean and binary-corrupted val frames.

    python benchmarks/block_order.py --config config/train/demo.yaml [--weights runs/demo]

Weights: a run folder with admn.pt, else the recipe's shipped `models_dir`. Writes
`<out>/<recipe>_block_order.json` and `.md` (default out: docs/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from admn_ros.core.noise import corrupt
from admn_ros.core.policies import even_split, every_other, split_mask
from admn_ros.train.evaluate import TUNE_SEED_OFFSET, tuning_set
from admn_ros.train.provenance import cpu_name
from admn_ros.train.runner import CachingRunner, noise_generator


def orders(depth: int) -> dict[str, list[int]]:
    """Candidate orders in which blocks are added (after the forced ones)."""
    def spread(blocks: list[int]) -> list[int]:  # 0, 4, 2, 6, 1, 5, 3, 7: halve the gaps
        if len(blocks) <= 2:
            return blocks
        return [*spread(blocks[::2]), *spread(blocks[1::2])]
    return {"sequential": list(range(depth)), "every_other": every_other(depth),
            "spread": spread(list(range(depth)))}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--weights", default=None, help="run folder (default: the recipe's)")
    parser.add_argument("--out", default="docs/results", help="report folder")
    args = parser.parse_args()

    ts = tuning_set(args.config, args.weights)
    cfg, ev, models, split, frames, budgets = (ts.cfg, ts.cfg.eval, ts.models, ts.split,
                                               ts.frames, ts.budgets)
    runner = CachingRunner(models.model)
    low, d = ts.model_cfg.min_blocks_list, ts.model_cfg.depth
    cands = {name: {b: split_mask(even_split(b, low, d), d, low, order) for b in budgets}
             for name, order in orders(d).items()}
    sums = {(kind, name, b): 0.0 for kind in ("clean", "binary") for name in cands
            for b in budgets}
    gen = noise_generator(ev.noise_seed + TUNE_SEED_OFFSET, 0, 0)
    for i in range(0, len(frames), ev.batch_size):
        batch = split.batch(frames[i:i + ev.batch_size], torch.device("cpu"))
        for kind in ("clean", "binary"):
            x = batch["inputs"] if kind == "clean" else \
                corrupt(batch["inputs"], cfg.noise, kind, gen).inputs
            runner.new_batch()
            for name, masks in cands.items():
                for b, mask in masks.items():
                    pred = runner(x, mask.expand(len(batch["target"]), -1, -1))
                    sums[(kind, name, b)] += float((pred.mean - batch["target"])
                                                   .norm(dim=-1).sum())
    errors = {f"{kind}/{name}/{b}": round(v / len(frames), 2) for (kind, name, b), v in
              sums.items()}
    res = {"recipe": cfg.recipe, "split": split.name, "frames": len(frames),
           "weights": models.source, "weight_files": models.files, "budgets": budgets,
           "orders": orders(d), "error_cm": errors, "cpu": cpu_name(),
           "date": datetime.date.today().isoformat()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{cfg.recipe}_block_order.json").write_text(json.dumps(res, indent=1))
    lines = [f"# Block order of the naive allocation: {cfg.recipe}, {split.name} split",
             "", f"{len(frames)} {split.name} frames, weights {models.source} "
             f"({', '.join(f'{k} {v}' for k, v in models.files.items())}); {res['date']}, "
             f"{res['cpu']}. Mean error (cm) of L/M blocks per modality in each order.", ""]
    for kind in ("clean", "binary"):
        lines += [f"| {kind} | " + " | ".join(f"L={b}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for name, order in orders(d).items():
            cells = " | ".join(f"{errors[f'{kind}/{name}/{b}']:.2f}" for b in budgets)
            lines.append(f"| {name} {order} | {cells} |")
        lines.append("")
    (out / f"{cfg.recipe}_block_order.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
