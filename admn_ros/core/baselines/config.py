"""Strict configs of the baselines (`config/baselines/*.yaml`), built with the core's `from_dict`.

Each file names its method (`method: dynmm | mmexit | m2sn`); the model itself (backbones,
fusion, head, low-res input size and gate trunk) comes from the ModelConfig
(`config/model/*.yaml`), so a baseline and ADMN share one architecture and one cost model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from admn_ros.core.config import ModelConfig, from_dict, load_yaml


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected > 0, got {value}")


def _depths(name: str, depths: list[int], lo: int, hi: int) -> None:
    if not depths or any(not lo <= d <= hi for d in depths) or depths != sorted(set(depths)):
        raise ValueError(f"{name}: expected strictly increasing depths in {lo}..{hi}, "
                         f"got {depths}")


@dataclass
class DynMMConfig:
    """DynMM (Xue & Marculescu, CVPR 2023): modality-level + fusion-level gating.

    experts: modality subsets, each run at full backbone depth (None: every non-empty subset).
    fusion_gating: the gate also decides, per fusion block, run or skip (identity).
    lam: the lambda of the resource-aware loss used in training (`loss` default).
    lam_in_decision: lambda also enters the hard decision as a cost prior (log p - lambda c),
        so one gate serves nearby operating points and cost is monotone in lambda.
    absent: how a modality outside the expert enters the fusion: "zero", a zero feature (a
        learned "absent" token; the paper), or "forced", its backbone's forced blocks only
        (`min_blocks`, counted in the cost), as ADMN runs a modality it gives no blocks: the
        input a fusion trained with whole-modality LayerDrop has seen.
    """

    method: Literal["dynmm"] = "dynmm"
    experts: list[list[str]] | None = None
    fusion_gating: bool = True
    lam: float = 0.1
    lam_in_decision: bool = True
    gumbel_tau: float = 1.0
    gate_hidden: int = 64
    absent: Literal["zero", "forced"] = "zero"

    def check(self, model: ModelConfig) -> None:
        _positive("gumbel_tau", self.gumbel_tau)
        _positive("gate_hidden", self.gate_hidden)
        if not self.lam >= 0:
            raise ValueError(f"lam: expected a value in [0, inf), got {self.lam}")
        for i, ex in enumerate(self.experts or []):
            if not ex or len(set(ex)) != len(ex) or not set(ex) <= set(model.modalities):
                raise ValueError(f"experts[{i}]: expected a non-empty set of modalities from "
                                 f"{model.modalities}, got {ex}")
        if self.experts is not None:
            keys = [frozenset(e) for e in self.experts]
            if not keys or len(set(keys)) != len(keys):
                raise ValueError(f"experts: expected distinct modality subsets, got "
                                 f"{self.experts}")


@dataclass
class MMExitConfig:
    """Multimodal early exit at depths shared by all modalities.

    exit_depths: backbone depths with an exit (None: 1..D); must end at D.
    uncertainty: "trace" -> sqrt(tr(Sigma) / 2), "det" -> det(Sigma)^(1/4); both in cm.
    exit_weights: weights of the per-exit losses (None: uniform); normalised to sum 1.
    depth_embedding: a learned per-exit vector added to every backbone feature before the
        shared fusion transformer (zero at init, so exit D starts as the ADMN path).
    threshold_cm: default knob, the largest predicted std (cm) at which a sample may exit.
    """

    method: Literal["mmexit"] = "mmexit"
    exit_depths: list[int] | None = None
    uncertainty: Literal["trace", "det"] = "trace"
    exit_weights: list[float] | None = None
    depth_embedding: bool = True
    threshold_cm: float = 25.0

    def check(self, model: ModelConfig) -> None:
        if not self.threshold_cm >= 0:
            raise ValueError(f"threshold_cm: expected a value in [0, inf], got "
                             f"{self.threshold_cm}")
        d = model.depth
        depths = self.exit_depths or list(range(1, d + 1))
        _depths("exit_depths", depths, 1, d)
        if depths[-1] != d:
            raise ValueError(f"exit_depths: expected the last exit at the full depth {d} "
                             f"(every sample must be able to exit), got {depths}")
        if self.exit_weights is not None:
            w = self.exit_weights
            if len(w) != len(depths) or any(x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"exit_weights: expected {len(depths)} non-negative weights "
                                 f"with a positive sum, got {w}")


@dataclass
class M2SNConfig:
    """M2SN: per-modality shortcut modules chosen by a light navigator on low-res inputs.

    shortcut_depths: depths after which a shortcut can replace the rest of a backbone
        (None: 1..D-1); the full depth D (no shortcut) is always an option.
    lam: lambda of the cost-aware loss used in training; lam_in_decision as for DynMM.
    tau_start/tau_end/tau_schedule: Gumbel temperature annealing (`anneal_tau`).
    hard: navigator weights straight-through one-hot in training (paper: soft weights).
    """

    method: Literal["m2sn"] = "m2sn"
    shortcut_depths: list[int] | None = None
    lam: float = 0.1
    lam_in_decision: bool = True
    tau_start: float = 5.0
    tau_end: float = 0.5
    tau_schedule: Literal["exponential", "linear", "cosine"] = "exponential"
    hard: bool = False

    def check(self, model: ModelConfig) -> None:
        d = model.depth
        if d < 2:
            raise ValueError(f"backbone.depth: M2SN needs a depth >= 2 for shortcuts, got {d}")
        _depths("shortcut_depths", self.shortcut_depths or list(range(1, d)), 1, d - 1)
        _positive("tau_start", self.tau_start)
        _positive("tau_end", self.tau_end)
        if not self.lam >= 0:
            raise ValueError(f"lam: expected a value in [0, inf), got {self.lam}")


BaselineConfig = DynMMConfig | MMExitConfig | M2SNConfig
CONFIGS: dict[str, type] = {"dynmm": DynMMConfig, "mmexit": MMExitConfig, "m2sn": M2SNConfig}


def load_baseline_config(source: str | Path | Mapping[str, Any] | BaselineConfig,
                         method: str | None = None) -> BaselineConfig:
    """A baseline config from a YAML path, a dict (with a `method` key) or a config object.
    `method` checks which method the source describes."""
    if isinstance(source, DynMMConfig | MMExitConfig | M2SNConfig):
        cfg = source
    else:
        data = load_yaml(source) if isinstance(source, str | Path) else dict(source)
        name = data.get("method", method)
        if name not in CONFIGS:
            raise ValueError(f"method: expected one of {list(CONFIGS)}, got {name!r}")
        cfg = from_dict(CONFIGS[name], data)
    if method is not None and cfg.method != method:
        raise ValueError(f"baseline config: expected method {method!r}, got {cfg.method!r}")
    return cfg
