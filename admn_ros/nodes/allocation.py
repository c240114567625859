"""The controller step without ROS: choose the allocation for one sample under a budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from admn_ros.core.config import ModelConfig
from admn_ros.core.controller import Controller
from admn_ros.core.model import downsample
from admn_ros.core.policies import make_policy


@dataclass
class Allocation:
    active: Tensor  # bool [M, D]
    noise: list[float]  # per modality, empty without a noise head
    controller: str
    ms: float


class Allocator:
    """Learned controllers (the budget's own, else the universal one, else the nearest budget's)
    or a named policy (`naive`, `random`, `upper_bound`, `single:<m>`) when none is given."""

    def __init__(self, cfg: ModelConfig, universal: Controller | None,
                 per_budget: dict[int, Controller], policy: str = "learned") -> None:
        self.cfg = cfg
        self.universal, self.per_budget = universal, per_budget
        if universal is None and not per_budget and policy == "learned":
            raise ValueError("policy 'learned': expected controller weights, got none")
        self.policy = None if policy == "learned" else make_policy(policy, cfg)
        self.full = make_policy("upper_bound", cfg)
        self.policy_name = policy

    def check_budget(self, layers: int) -> None:
        lo, hi = self.cfg.network_budget_range  # what the network can run
        if not lo <= layers <= hi:
            raise ValueError(f"budget {layers} is impossible: expected {lo} <= L <= {hi} "
                             f"({self.cfg.num_modalities} modalities x {self.cfg.depth} blocks, "
                             f"min_blocks {self.cfg.min_blocks_list})")

    def budgets(self) -> list[int]:
        """Every budget this allocator serves: a learned controller's (or the policy's), and
        full depth, which needs no choice."""
        lo, hi = self.cfg.network_budget_range
        return [b for b in range(lo, hi + 1) if b == hi or self.policy is not None
                or self._covers(b)]

    def _covers(self, layers: int) -> bool:
        try:
            self._controller(layers)
        except ValueError:
            return False
        return True

    def _controller(self, layers: int) -> tuple[Controller, str]:
        if layers in self.per_budget:
            return self.per_budget[layers], f"learned-L{layers}"
        u = self.universal
        if u is not None and u.budget_min <= layers <= u.budget_max:
            return u, "learned-universal"
        fits = [b for b, c in self.per_budget.items() if c.budget_min <= layers <= c.budget_max]
        if not fits:
            raise ValueError(f"budget {layers}: no shipped controller covers it (per-budget "
                             f"{sorted(self.per_budget)}, universal "
                             f"{'none' if u is None else f'{u.budget_min}..{u.budget_max}'})")
        best = min(fits, key=lambda b: (abs(b - layers), b))
        return self.per_budget[best], f"learned-L{best}"

    @torch.no_grad()
    def __call__(self, inputs: dict[str, Tensor], layers: int) -> Allocation:
        """inputs: `{m: [1, S, C, s, s]}` full resolution; returns the [M, D] mask for L."""
        self.check_budget(layers)
        t0 = time.perf_counter()
        lowres = downsample(inputs, self.cfg.controller.img_size)
        noise: list[float] = []
        if self.policy is not None:
            mask, name = self.policy(lowres, layers), self.policy_name
        elif layers == self.cfg.total_blocks:  # every block runs: nothing to choose
            mask, name = self.full(lowres, layers), "upper_bound"
        else:
            ctl, name = self._controller(layers)
            out = ctl(lowres, layers, sample=False)
            mask = out.mask.bool()
            if out.noise is not None:
                noise = [float(v) for v in out.noise[0]]
        ms = (time.perf_counter() - t0) * 1000.0
        return Allocation(mask[0], noise, name, ms)
