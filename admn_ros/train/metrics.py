"""Metric logging: CSV + JSONL per run, TensorBoard when `torch.utils.tensorboard` imports."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any


class SmoothedMeans:
    """Running means of scalar metrics over an epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def update(self, n: int = 1, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] += float(v) * n
            self.counts[k] += n

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / max(1, self.counts[k]) for k in self.sums}


class MetricWriter:
    """Appends one row per epoch to metrics.csv / metrics.jsonl (main rank only)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(f"[train] tensorboard not installed: metrics go to {self.dir}/metrics.csv, "
                  f"metrics.jsonl only")
        else:
            self.tb = SummaryWriter(str(self.dir / "tb"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        path = self.dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if isinstance(v, int | float) and math.isfinite(v) and k not in ("step",):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
