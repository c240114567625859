"""Competing adaptive-inference baselines on the core's backbones, fusion, head and cost model:
DynMM (modality/fusion gating), MMExit (early exit), M2SN (shortcuts). See docs/BASELINES.md."""

from admn_ros.core.baselines.checkpoint import (
    BASELINES,
    build_baseline,
    init_from_admn,
    load_baseline_checkpoint,
    save_baseline_checkpoint,
)
from admn_ros.core.baselines.common import LossTerms, LowResEncoder, anneal_tau
from admn_ros.core.baselines.config import (
    DynMMConfig,
    M2SNConfig,
    MMExitConfig,
    load_baseline_config,
)
from admn_ros.core.baselines.dynmm import DynMM, DynMMOutput
from admn_ros.core.baselines.m2sn import M2SN, M2SNOutput
from admn_ros.core.baselines.mmexit import MMExit, MMExitOutput

__all__ = [
    "BASELINES", "M2SN", "DynMM", "DynMMConfig", "DynMMOutput", "LossTerms", "LowResEncoder",
    "M2SNConfig", "M2SNOutput", "MMExit", "MMExitConfig", "MMExitOutput", "anneal_tau",
    "build_baseline", "init_from_admn", "load_baseline_checkpoint", "load_baseline_config",
    "save_baseline_checkpoint",
]
