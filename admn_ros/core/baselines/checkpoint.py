"""One-file checkpoints of the baselines, in the core's file layout plus the method config.

Layout (`torch.save` dict): `{"format": core FORMAT, "kind": "dynmm" | "mmexit" | "m2sn",
"model_config": dict, "baseline_config": dict, "state_dict": dict, "meta": dict}`, written and
read by the core's `save_checkpoint` / `load_checkpoint` with the registry `BASELINE_KINDS`.
The core loader's default registry rejects these kinds (it only builds ADMN / Controller), and
`load_baseline_checkpoint(kind=...)` rejects a file of another method or an ADMN file, each with
a ValueError naming both kinds. `init_from_admn` warm-starts a baseline's backbones, fusion and
head from an ADMN checkpoint through the core loader (`kind="admn"`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from admn_ros.core.baselines.config import BaselineConfig, load_baseline_config
from admn_ros.core.baselines.dynmm import DynMM
from admn_ros.core.baselines.m2sn import M2SN
from admn_ros.core.baselines.mmexit import MMExit
from admn_ros.core.checkpoint import (
    CheckpointKind,
    ConfigEntry,
    load_checkpoint,
    save_checkpoint,
)
from admn_ros.core.config import ModelConfig, load_model_config

BASELINES: dict[str, type[nn.Module]] = {"dynmm": DynMM, "mmexit": MMExit, "m2sn": M2SN}
Baseline = DynMM | MMExit | M2SN
# the core checkpoint registry of the baselines: module(model_cfg, cfg), both stored
BASELINE_KINDS: dict[str, CheckpointKind] = {
    kind: CheckpointKind(cls, (ConfigEntry("model", "model_cfg", load_model_config),
                               ConfigEntry("baseline", "cfg",
                                           partial(load_baseline_config, method=kind))))
    for kind, cls in BASELINES.items()
}


@dataclass
class BaselineCheckpoint:
    kind: str
    model_config: ModelConfig
    config: BaselineConfig
    module: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)


def build_baseline(model_cfg: ModelConfig, cfg: BaselineConfig | Mapping[str, Any]) -> Baseline:
    """The baseline module that `cfg` (its `method` key) describes."""
    cfg = load_baseline_config(cfg)
    return BASELINES[cfg.method](model_cfg, cfg)


def save_baseline_checkpoint(path: str | Path, module: Baseline,
                             meta: Mapping[str, Any] | None = None) -> None:
    """Weights, both configs and `meta` in one file (the core writer, atomic replace)."""
    save_checkpoint(path, module, meta, kinds=BASELINE_KINDS)


def load_baseline_checkpoint(path: str | Path, into: Baseline | None = None,
                             kind: str | None = None) -> BaselineCheckpoint:
    """Load a baseline (the core loader). `kind` (or `into`'s kind) must match the file's; with
    `into`, both configs must equal the file's (ValueError naming the differing fields)."""
    ck = load_checkpoint(path, into, kind, kinds=BASELINE_KINDS)
    return BaselineCheckpoint(ck.kind, ck.model_config, ck.configs["baseline"], ck.module,
                              ck.meta)


def init_from_admn(module: Baseline, path: str | Path) -> None:
    """Load an ADMN checkpoint's backbones, fusion and head into `module.model` (the configs
    must match: the core loader names differing fields)."""
    load_checkpoint(path, into=module.model, kind="admn")
