"""Power sources and the headroom -> layer-budget mapping, without ROS.

Sources share one interface: `read(t_s) -> PowerReading | None` (None: nothing to read now).
`detect_source` picks the best one present: Jetson INA3221 rails (hwmon sysfs), jtop, NVML,
Intel RAPL (powercap sysfs); `SimulatedSource` plays a config/power/*.yaml profile.
`BudgetMapper` turns headroom (limit - draw) into a budget with hysteresis and a minimum dwell.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import yaml

NAN = float("nan")


@dataclass
class PowerReading:
    power_w: float
    power_limit_w: float
    temperature_c: float = NAN
    source: str = ""
    reason: str = ""

    @property
    def headroom_w(self) -> float:
        return self.power_limit_w - self.power_w


class Ina3221Source:
    """Jetson INA3221 rails: hwmon `in<k>_label` + `curr<k>_input` (mA) + `in<k>_input` (mV)."""

    name = "ina3221"

    def __init__(self, root: str | Path, limit_w: float) -> None:
        self.limit_w = limit_w
        self.rails = []  # (voltage file, current file)
        for hw in sorted(Path(root, "class/hwmon").glob("hwmon*")):
            if (hw / "name").exists() and "ina3221" in (hw / "name").read_text():
                for label in sorted(hw.glob("in*_label")):
                    k = label.name[2:-6]
                    v, c = hw / f"in{k}_input", hw / f"curr{k}_input"
                    if v.exists() and c.exists():
                        self.rails.append((v, c))
        if not self.rails:
            raise FileNotFoundError(f"no INA3221 rails under {root}/class/hwmon")

    def read(self, t_s: float) -> PowerReading:
        watts = sum(float(v.read_text()) * float(c.read_text()) * 1e-6 for v, c in self.rails)
        return PowerReading(watts, self.limit_w, NAN, self.name)


class RaplSource:
    """Intel RAPL package energy counter (µJ) -> average power between two reads."""

    name = "rapl"

    def __init__(self, root: str | Path, limit_w: float) -> None:
        self.limit_w = limit_w
        self.files = sorted(Path(root, "class/powercap").glob("intel-rapl:[0-9]/energy_uj"))
        if not self.files:
            raise FileNotFoundError(f"no RAPL energy counters under {root}/class/powercap")
        self.last: tuple[float, float] | None = None

    def read(self, t_s: float) -> PowerReading | None:
        energy = sum(float(f.read_text()) for f in self.files)
        last, self.last = self.last, (t_s, energy)
        if last is None or t_s <= last[0] or energy < last[1]:  # first read or counter wrapped
            return None
        return PowerReading((energy - last[1]) * 1e-6 / (t_s - last[0]), self.limit_w, NAN,
                            self.name)


class JtopSource:
    name = "jtop"

    def __init__(self, limit_w: float) -> None:
        from jtop import jtop  # only on a Jetson with jetson-stats
        self.limit_w = limit_w
        self.jetson = jtop()
        self.jetson.start()

    def read(self, t_s: float) -> PowerReading:
        tot = self.jetson.power.get("tot", {})
        temps = [v.get("temp", NAN) for v in self.jetson.temperature.values()]
        return PowerReading(tot.get("power", NAN) / 1000.0, self.limit_w,
                            max(temps, default=NAN), self.name)


class NvmlSource:
    name = "nvml"

    def __init__(self, limit_w: float) -> None:
        import pynvml  # only where the NVIDIA driver and pynvml are present
        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.limit_w = limit_w

    def read(self, t_s: float) -> PowerReading:
        n, h = self.nvml, self.handle
        limit = n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
        return PowerReading(n.nvmlDeviceGetPowerUsage(h) / 1000.0, min(limit, self.limit_w),
                            float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)), self.name)


class SimulatedSource:
    """A profile: `steps: [{t, power_limit_w, power_w, temperature_c, reason}]`, t in s from
    the first read; the last step holds."""

    name = "simulated"

    def __init__(self, profile: str | Path) -> None:
        data = yaml.safe_load(Path(profile).read_text()) or {}
        steps = data.get("steps") or []
        if not steps or any("t" not in s or "power_limit_w" not in s for s in steps):
            raise ValueError(f"{profile}: expected `steps: [{{t, power_limit_w, ...}}]`, "
                             f"got {steps!r}")
        self.steps = sorted(steps, key=lambda s: float(s["t"]))
        self.times = [float(s["t"]) for s in self.steps]
        self.t0: float | None = None

    def read(self, t_s: float) -> PowerReading:
        if self.t0 is None:
            self.t0 = t_s
        s = self.steps[max(bisect_right(self.times, t_s - self.t0) - 1, 0)]
        return PowerReading(float(s.get("power_w", 0.0)), float(s["power_limit_w"]),
                            float(s.get("temperature_c", NAN)), self.name, str(s.get("reason", "")))


def detect_source(kind: str, sysfs_root: str, limit_w: float, profile: str):
    """The named source, or for `auto` the first one present (simulated as the last resort)."""
    makers = {
        "ina3221": lambda: Ina3221Source(sysfs_root, limit_w),
        "jtop": lambda: JtopSource(limit_w),
        "nvml": lambda: NvmlSource(limit_w),
        "rapl": lambda: RaplSource(sysfs_root, limit_w),
        "simulated": lambda: SimulatedSource(profile),
    }
    if kind != "auto":
        if kind not in makers:
            raise ValueError(f"power source: expected auto | manual | {' | '.join(makers)}, "
                             f"got {kind!r}")
        return makers[kind]()
    for name in ("ina3221", "jtop", "nvml", "rapl", "simulated"):
        try:
            return makers[name]()
        except Exception:
            continue
    raise RuntimeError("no power source found")


class BudgetMapper:
    """Headroom (W) -> layers by thresholds, with hysteresis and a minimum dwell time.

    `levels_w[i]` is the headroom that allows `levels_layers[i]` (both ascending). A move up
    needs the headroom to clear the next threshold by `hysteresis_w`; a move down happens when
    it falls below the current threshold minus `hysteresis_w`. After a change, the budget stays
    for at least `min_dwell_s`.
    """

    def __init__(self, levels_w: list[float], levels_layers: list[int], hysteresis_w: float,
                 min_dwell_s: float) -> None:
        ascending = sorted(levels_w) == list(levels_w) and sorted(levels_layers) == list(
            levels_layers)
        if len(levels_w) != len(levels_layers) or not levels_w or not ascending:
            raise ValueError(f"levels: expected equally long ascending lists, got {levels_w} "
                             f"and {levels_layers}")
        self.levels_w, self.levels_layers = list(levels_w), list(levels_layers)
        self.hysteresis_w, self.min_dwell_s = hysteresis_w, min_dwell_s
        self.level: int | None = None
        self.changed_at = -math.inf

    def raw_level(self, headroom_w: float) -> int:
        return max(bisect_right(self.levels_w, headroom_w) - 1, 0)

    def update(self, headroom_w: float, t_s: float) -> int:
        """The budget in force at time `t_s` given the headroom now."""
        if self.level is None:
            self.level, self.changed_at = self.raw_level(headroom_w), t_s
        elif t_s - self.changed_at >= self.min_dwell_s and math.isfinite(headroom_w):
            lvl = self.level
            while lvl + 1 < len(self.levels_w) and \
                    headroom_w >= self.levels_w[lvl + 1] + self.hysteresis_w:
                lvl += 1
            while lvl > 0 and headroom_w < self.levels_w[lvl] - self.hysteresis_w:
                lvl -= 1
            if lvl != self.level:
                self.level, self.changed_at = lvl, t_s
        return self.levels_layers[self.level]
