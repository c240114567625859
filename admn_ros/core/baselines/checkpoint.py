"""One-file checkpoints of the baselines, in the core's file layout plus the method config.

Layout (`torch.save` dict): `{"format": core FORMAT, "kind": "dynmm" | "mmexit" | "m2sn",
"model_config": dict, "baseline_config": dict, "state_dict": dict, "meta": dict}`. The core's
`load_checkpoint` rejects these kinds (it only builds ADMN / Controller), and
`load_baseline_checkpoint(kind=...)` rejects a file of another method or an ADMN file, each with
a ValueError naming both kinds. `init_from_admn` warm-starts a baseline's backbones, fusion and
head from an ADMN checkpoint through the core loader (`kind="admn"`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from admn_ros.core.baselines.config import BaselineConfig, load_baseline_config
from admn_ros.core.baselines.dynmm import DynMM
from admn_ros.core.baselines.m2sn import M2SN
from admn_ros.core.baselines.mmexit import MMExit
from admn_ros.core.checkpoint import FORMAT, load_checkpoint
from admn_ros.core.config import ModelConfig, config_diff, load_model_config, to_dict

BASELINES: dict[str, type[nn.Module]] = {"dynmm": DynMM, "mmexit": MMExit, "m2sn": M2SN}
Baseline = DynMM | MMExit | M2SN


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


def _kind_of(module: nn.Module) -> str:
    kind = getattr(module, "KIND", None)
    if kind not in BASELINES or not isinstance(module, BASELINES[kind]):
        raise ValueError(f"baseline checkpoint: expected one of {list(BASELINES)}, got "
                         f"{type(module).__name__}")
    return kind


def save_baseline_checkpoint(path: str | Path, module: Baseline,
                             meta: Mapping[str, Any] | None = None) -> None:
    """Weights, both configs and `meta` in one file (atomic replace)."""
    payload = {
        "format": FORMAT,
        "kind": _kind_of(module),
        "model_config": to_dict(module.model_cfg),
        "baseline_config": to_dict(module.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "meta": dict(meta or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_baseline_checkpoint(path: str | Path, into: Baseline | None = None,
                             kind: str | None = None) -> BaselineCheckpoint:
    """Load a baseline. `kind` (or `into`'s kind) must match the file's; with `into`, both
    configs must equal the file's (ValueError naming the differing fields)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected an admn_ros checkpoint (format {FORMAT!r}), "
                         f"got {got!r}")
    want = _kind_of(into) if into is not None else kind
    if kind is not None and into is not None and kind != want:
        raise ValueError(f"kind: expected {want!r} (the module's), got {kind!r}")
    got = data.get("kind")
    if want is not None and got != want:
        raise ValueError(f"{path}: expected a {want!r} checkpoint, got {got!r}")
    if got not in BASELINES:
        raise ValueError(f"{path}: expected a baseline kind in {list(BASELINES)}, got {got!r} "
                         "(ADMN checkpoints load with core.checkpoint.load_checkpoint)")
    model_cfg = load_model_config(data["model_config"])
    cfg = load_baseline_config(data["baseline_config"], got)
    if into is None:
        into = BASELINES[got](model_cfg, cfg)
    else:
        diff = [f"model.{k}" for k in config_diff(into.model_cfg, model_cfg)]
        diff += [f"baseline.{k}" for k in config_diff(into.cfg, cfg)]
        if diff:
            raise ValueError(f"{path}: config differs from the module's in {diff}")
    into.load_state_dict(data["state_dict"])
    return BaselineCheckpoint(got, model_cfg, cfg, into, data.get("meta", {}))


def init_from_admn(module: Baseline, path: str | Path) -> None:
    """Load an ADMN checkpoint's backbones, fusion and head into `module.model` (the configs
    must match: the core loader names differing fields)."""
    load_checkpoint(path, into=module.model, kind="admn")
