"""The deadline budget: how many blocks fit the sensor period, learned online; no ROS.

`StepTimes` keeps the step times the fusion node measured per active-block count L over a
recent window and predicts the time of any L: its own median where it has enough samples,
else a line through the medians of the Ls it has (a fixed cost plus a cost per block), else
the one L it has scaled by L (an over-estimate upwards: the fixed cost scales too). Old
samples expire, so a slowdown that has passed stops counting.

`DeadlineBudget` turns that into a latency budget with hysteresis: it steps down as soon as the
budget in force takes more than `load * (1 + hysteresis)` of the target period, to the largest
L predicted within `load`; it steps up only after `dwell_s`, to the largest L predicted within
`load * (1 - hysteresis)`. The candidates are the budgets the graph can serve.

`budget_in_force` combines it with the power budget: the smaller of the two, rounded down to a
budget a learned controller covers.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

import numpy as np


class StepTimes:
    """Recent step times (ms) per active-block count, with a prediction for any count."""

    def __init__(self, window_s: float, min_samples: int, keep: int = 50) -> None:
        if window_s <= 0 or min_samples < 1:
            raise ValueError(f"StepTimes: expected window_s > 0 and min_samples >= 1, got "
                             f"{window_s} and {min_samples}")
        self.window_s, self.min_samples, self.keep = window_s, min_samples, keep
        self.samples: dict[int, deque[tuple[float, float]]] = {}  # L -> (t_s, ms)

    def add(self, layers: int, ms: float, t_s: float) -> None:
        self.samples.setdefault(layers, deque(maxlen=self.keep)).append((t_s, ms))

    def medians(self, t_s: float) -> dict[int, float]:
        """Median step time of every L with at least `min_samples` inside the window."""
        out = {}
        for layers, q in self.samples.items():
            recent = [ms for t, ms in q if t_s - t <= self.window_s]
            if len(recent) >= self.min_samples:
                out[layers] = float(np.median(recent))
        return out

    def latest(self, layers: int, t_s: float) -> float | None:
        """Median of the last `min_samples` step times at `layers` (None before that many):
        what the budget in force costs now."""
        recent = [ms for t, ms in self.samples.get(layers, ()) if t_s - t <= self.window_s]
        return float(np.median(recent[-self.min_samples:])) \
            if len(recent) >= self.min_samples else None

    def predict(self, layers: int, t_s: float) -> float | None:
        """Predicted step time (ms) at `layers`; None before enough samples."""
        med = self.medians(t_s)
        if layers in med:
            return med[layers]
        if len(med) >= 2:
            xs = np.array(sorted(med), float)
            slope, fixed = np.polyfit(xs, [med[int(x)] for x in xs], 1)
            line = fixed + max(slope, 0.0) * layers
            nearest = min(med, key=lambda x: abs(x - layers))
            return max(line, med[nearest]) if layers > nearest else line
        if med:
            (known, ms), = med.items()
            return ms * layers / known
        return None


@dataclass
class DeadlineDecision:
    layers: int
    reason: str


class DeadlineBudget:
    """The latency budget among `candidates` (ascending budgets the graph can serve)."""

    def __init__(self, candidates: list[int], target_period_s: float, load: float,
                 hysteresis: float, dwell_s: float, steps: StepTimes) -> None:
        if not candidates or sorted(set(candidates)) != list(candidates):
            raise ValueError(f"DeadlineBudget: expected ascending budgets, got {candidates}")
        if target_period_s <= 0 or not 0 < load <= 1 or not 0 <= hysteresis < 1:
            raise ValueError(f"DeadlineBudget: expected target_period_s > 0, 0 < load <= 1, "
                             f"0 <= hysteresis < 1; got {target_period_s}, {load}, {hysteresis}")
        self.candidates, self.steps = list(candidates), steps
        self.target_ms = target_period_s * 1000.0
        self.load, self.hysteresis, self.dwell_s = load, hysteresis, dwell_s
        self.layers = self.candidates[-1]  # until measured: no limit
        self.changed_at = -math.inf

    def largest_within(self, limit_ms: float, t_s: float) -> int:
        """The largest candidate predicted within `limit_ms` (the smallest if none is)."""
        fits = [c for c in self.candidates
                if (ms := self.steps.predict(c, t_s)) is not None and ms <= limit_ms]
        return max(fits, default=self.candidates[0])

    def update(self, in_force: int, t_s: float) -> DeadlineDecision:
        """The latency budget now, given the budget in force (the L being measured)."""
        current = self.steps.latest(in_force, t_s)
        budget_ms = self.load * self.target_ms
        if current is None:
            return DeadlineDecision(self.layers, "")
        if current > budget_ms * (1 + self.hysteresis):
            if in_force > self.layers:  # already asked for less than the graph can serve
                return DeadlineDecision(self.layers, "")
            want = min(self.largest_within(budget_ms, t_s), self.below(in_force))
            return self._set(want, t_s, f"step {current:.0f} ms at L={in_force} > "
                                        f"{budget_ms:.0f} ms ({self.load:g} x "
                                        f"{self.target_ms:.1f} ms)")
        if t_s - self.changed_at >= self.dwell_s:
            want = self.largest_within(budget_ms * (1 - self.hysteresis), t_s)
            if want > max(self.layers, in_force):
                return self._set(want, t_s, f"step {current:.0f} ms at L={in_force}; "
                                            f"L={want} fits {budget_ms:.0f} ms")
        return DeadlineDecision(self.layers, "")

    def below(self, layers: int) -> int:
        """The next candidate under `layers` (the smallest one at the bottom)."""
        i = bisect_right(self.candidates, layers - 1) - 1
        return self.candidates[max(i, 0)]

    def _set(self, layers: int, t_s: float, reason: str) -> DeadlineDecision:
        if layers != self.layers:
            self.layers, self.changed_at = layers, t_s
            return DeadlineDecision(layers, reason)
        return DeadlineDecision(layers, "")


def round_down(layers: int, covered: list[int]) -> int:
    """The largest covered budget <= `layers` (the smallest covered one below them all)."""
    i = bisect_right(covered, layers) - 1
    return covered[max(i, 0)]


def budget_in_force(power: int, latency: int | None, covered: list[int] | None,
                    possible: tuple[int, int]) -> tuple[int, str]:
    """(layers, which limit binds: `power` | `deadline`) from the power budget and the latency
    budget (None: none yet), rounded down to a `covered` budget (None: every one). A power
    budget the network cannot run (outside `possible`) is passed on unchanged, so the
    controller reports it."""
    if not possible[0] <= power <= possible[1]:
        return power, "power"
    layers, why = (latency, "deadline") if latency is not None and latency < power else (
        power, "power")
    return (round_down(layers, covered) if covered else layers), why
