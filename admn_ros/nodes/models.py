"""Loading the shipped weights for the nodes, with errors that say what to do."""

from __future__ import annotations

import pickle
import re

import torch

from admn_ros.core.checkpoint import load_checkpoint
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.data.preprocess import check_input_settings
from admn_ros.nodes.common import resolve
from admn_ros.train.weights import verify_listed

GET_WEIGHTS = ("get the default weights with `make train` (writes models/), or pass the "
               "`weights` parameter / `--weights` pointing at a checkpoint")


class WeightsError(RuntimeError):
    """Missing, corrupted or mismatched weights: the message names the path and the fix."""


def load_module(path: str, kind: str) -> tuple[torch.nn.Module, dict]:
    """An eval-mode ADMN or Controller from a core checkpoint, and its meta."""
    p = resolve(path)
    if not p.is_file():
        raise WeightsError(f"{kind} weights not found at {p}: {GET_WEIGHTS}")
    try:
        verify_listed(p)  # against SHA256SUMS beside it (shipped weights), shards included
        ck = load_checkpoint(p, kind=kind)
    except pickle.UnpicklingError:
        raise WeightsError(f"{p}: not a usable {kind} checkpoint (not a PyTorch checkpoint "
                           f"file: it cannot be unpickled); {GET_WEIGHTS}") from None
    except (ValueError, RuntimeError, OSError) as exc:  # on one line (torch's span several)
        why = " ".join(str(exc).split())
        raise WeightsError(f"{p}: not a usable {kind} checkpoint ({why}); {GET_WEIGHTS}") from None
    try:
        check_input_settings(ck.meta.get("preprocess"), str(p))
    except ValueError as exc:
        raise WeightsError(str(exc)) from None
    return ck.module.eval(), dict(ck.meta)


def load_admn(path: str) -> ADMN:
    return load_module(path, "admn")[0]


def load_controllers(paths: list[str]) -> tuple[Controller | None, dict[int, Controller]]:
    """(universal controller or None, {budget: per-budget controller})."""
    universal, per_budget = None, {}
    files = []
    for pattern in paths:  # entries may be glob patterns (models/controller_demo_L*.pt)
        found = sorted(str(p) for p in resolve(pattern).parent.glob(resolve(pattern).name))
        files += found if "*" in pattern else [pattern]
    for path in files:
        ctl, meta = load_module(path, "controller")
        if ctl.cfg.controller.budget_token:
            universal = ctl
        else:
            m = re.search(r"_L(\d+)\.pt$", str(path))
            per_budget[int(meta.get("budget") or (m.group(1) if m else 0))] = ctl
    return universal, per_budget


def controller_budgets(paths: list[str]) -> tuple[list[int] | None, tuple[int, int] | None]:
    """(budgets the controllers at `paths` serve, (fewest, most) blocks the network can run),
    from the checkpoints' own configs; (None, None) without controllers (any budget)."""
    from admn_ros.nodes.allocation import Allocator

    universal, per_budget = load_controllers(paths)
    if universal is None and not per_budget:
        return None, None
    cfg = (universal or next(iter(per_budget.values()))).cfg
    return Allocator(cfg, universal, per_budget).budgets(), cfg.network_budget_range
