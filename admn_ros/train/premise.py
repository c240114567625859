"""The premise of adaptive depth, measured on the evaluated frames (issue 20).

Allocation can only pay when depth matters and each modality can carry the target on its own.
Curves per noise setting, k = the smallest `min_blocks` .. D blocks in `split_mask` order (the
forced blocks, then every other block: the static order LayerDrop-trained backbones are pruned
in):

- `all`: every backbone runs k blocks (k = D is the upper bound);
- `<modality>`: that backbone runs k blocks, every other one only its `min_blocks`.

`clean` uses the frames as recorded; a noise setting uses the same corruption draws as the first
seed of Table 1, so the curves and the table agree at their shared points.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from admn_ros.core.config import ModelConfig
from admn_ros.core.noise import NoiseConfig, corrupt
from admn_ros.core.policies import split_mask
from admn_ros.train.data import Split
from admn_ros.train.figures import panel_row, save_figure
from admn_ros.train.runner import CachingRunner

CLEAN = "clean"


def premise_blocks(model_cfg: ModelConfig) -> list[int]:
    """The k of the curves: the smallest `min_blocks` .. D."""
    return list(range(min(model_cfg.min_blocks_list), model_cfg.depth + 1))


def premise_counts(model_cfg: ModelConfig) -> dict[str, list[list[int]]]:
    """Per curve, the per-modality block counts at each k of `premise_blocks`."""
    low, ks = model_cfg.min_blocks_list, premise_blocks(model_cfg)
    curves = {"all": [[max(k, lo) for lo in low] for k in ks]}
    for j, mod in enumerate(model_cfg.modalities):
        curves[mod] = [[max(k, lo) if i == j else lo for i, lo in enumerate(low)] for k in ks]
    return curves


@torch.no_grad()
def premise(runner: CachingRunner, split: Split, order: Tensor, model_cfg: ModelConfig,
            noise: NoiseConfig, kinds: list[str], generators: dict[str, torch.Generator],
            batch_size: int = 64) -> dict:
    """{"blocks": [k...], "curves": {kind: {curve: [mean error cm per k]}}}; `kinds` may hold
    `clean` (no generator needed) and noise settings (their generator in `generators`)."""
    curves = premise_counts(model_cfg)
    low = model_cfg.min_blocks_list
    masks = {name: [split_mask(c, model_cfg.depth, low) for c in counts]  # [M, D] per k
             for name, counts in curves.items()}
    out: dict[str, dict[str, list[float]]] = {}
    for kind in kinds:
        sums = {name: torch.zeros(len(ms)) for name, ms in masks.items()}
        for i in range(0, len(order), batch_size):
            batch = split.batch(order[i:i + batch_size], torch.device("cpu"))
            x = batch["inputs"] if kind == CLEAN else \
                corrupt(batch["inputs"], noise, kind, generators[kind]).inputs
            target = batch["target"]
            runner.new_batch()
            for name, ms in masks.items():
                for k, m in enumerate(ms):
                    mask = m.expand(len(target), -1, -1)  # [B, M, D]
                    sums[name][k] += (runner(x, mask).mean - target).norm(dim=-1).sum()
        out[kind] = {name: [round(float(s) / len(order), 2) for s in v]
                     for name, v in sums.items()}
    return {"blocks": premise_blocks(model_cfg), "min_blocks": low,
            "modalities": list(model_cfg.modalities), "curves": out}


def premise_lines(res: dict) -> list[str]:
    """Markdown: one table per setting, rows = curves, columns = k."""
    pre = res.get("premise") or {}
    if not pre:
        return []
    ks = pre["blocks"]
    lines = ["## Does depth matter? Error (cm) when backbones run k of their blocks", "",
             f"`all`: every backbone runs k blocks; `<modality>`: only that one does, the others "
             f"keep their `min_blocks` ({pre['min_blocks']}); every other block first. "
             "Same frames as the tables above (first corruption seed).", ""]
    for kind, curves in pre["curves"].items():
        lines += [f"**{kind}**", "", "| curve | " + " | ".join(f"k={k}" for k in ks) + " |",
                  "|---" * (len(ks) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + " |"
                  for name, vals in curves.items()]
        lines.append("")
    return lines


def plot_premise(res: dict, out_dir: Path) -> Path | None:
    """`<recipe>_premise.png`: error vs k, one panel per setting."""
    pre = res.get("premise") or {}
    if not pre:
        return None
    kinds = list(pre["curves"])
    fig, axes = panel_row(len(kinds), 4.5, 3.6)
    for ax, kind in zip(axes, kinds, strict=True):
        for name, vals in pre["curves"][kind].items():
            ax.plot(pre["blocks"], vals, "-o", markersize=3, label=name)
        ax.set_title(f"{kind}: k blocks per backbone")
        ax.set_xlabel("k (blocks of each backbone that run)")
        ax.set_ylabel("mean error (cm)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, out_dir / f"{res['recipe']}_premise.png")
