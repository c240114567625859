"""Power sources and the headroom -> layer-budget mapping, without ROS.

Sources share one interface: `read(t_s) -> PowerReading | None` (None: nothing to read now).
`detect_source("auto")` picks the first measured source present: Jetson INA3221 rails (hwmon
sysfs, the module-input rails of the board), jtop, NVML, Intel RAPL (powercap sysfs); none is
an error. `SimulatedSource` plays a config/power/*.yaml profile, only when asked for by name.
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


# Module-input rails of each Jetson INA3221 layout (hwmon `in<k>_label` values). A board is
# recognised by its labels; the rails listed are summed. Where the board has a VDD_IN rail it
# already is the module total (on Orin NX/Nano and Xavier NX, VDD_CPU_GPU_CV and VDD_SOC are
# measured downstream of it): adding them would count the same watts twice.
JETSON_RAILS: dict[str, tuple[str, ...]] = {
    "orin_nx_nano": ("VDD_IN",),  # Orin NX / Orin Nano (also Xavier NX): 0x40 ch1
    "orin_agx": ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),  # 0x40; 0x41 holds sub-rails
    "xavier_agx": ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"),  # 0x40 + 0x41
}


def ina3221_rails(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """`{label: (voltage file mV, current file mA)}` of every INA3221 channel under
    `<root>/class/hwmon` that has a label and both readings."""
    rails = {}
    for hw in sorted(Path(root, "class/hwmon").glob("hwmon*")):
        name = hw / "name"
        if not name.exists() or "ina3221" not in name.read_text():
            continue
        for label in sorted(hw.glob("in*_label")):
            k = label.name[2:-len("_label")]
            v, c = hw / f"in{k}_input", hw / f"curr{k}_input"
            if v.exists() and c.exists():
                rails[label.read_text().strip()] = (v, c)
    return rails


def jetson_board(labels: set[str]) -> str:
    """The `JETSON_RAILS` layout whose module-input rails are all among `labels`."""
    for board, rails in JETSON_RAILS.items():
        if set(rails) <= labels:
            return board
    raise ValueError(f"INA3221 rails {sorted(labels)}: expected the module-input rails of a "
                     f"known Jetson layout {dict(JETSON_RAILS)}")


class Ina3221Source:
    """Jetson module input power from the INA3221 rails (hwmon sysfs): the rails of the board's
    layout in `JETSON_RAILS`, each `in<k>_input` (mV) x `curr<k>_input` (mA)."""

    name = "ina3221"

    def __init__(self, root: str | Path, limit_w: float) -> None:
        self.limit_w = limit_w
        found = ina3221_rails(root)
        if not found:
            raise FileNotFoundError(f"no INA3221 rails under {root}/class/hwmon")
        self.board = jetson_board(set(found))
        self.rails = [found[label] for label in JETSON_RAILS[self.board]]

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


# Sources `auto` tries, best first. The simulated profile is never among them: on a machine
# without sensors a budget that follows a demo timer would look measured.
MEASURED_SOURCES = ("ina3221", "jtop", "nvml", "rapl")


class NoPowerSourceError(FileNotFoundError):
    """`auto` found no measured power source; the message says why for each one."""


def detect_source(kind: str, sysfs_root: str, limit_w: float, profile: str):
    """The named source, or for `auto` the first measured one present. `auto` with none is a
    `NoPowerSourceError`: a fixed budget (or `simulated`, for a replay) must be asked for."""
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
    why = []
    for name in MEASURED_SOURCES:
        try:
            return makers[name]()
        except Exception as exc:  # drivers and bindings fail in many ways; try the next one
            why.append(f"{name}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
    raise NoPowerSourceError(
        f"power source auto: no measured source found ({'; '.join(why)}); give a fixed budget "
        "(budget:=<layers>, `manual_budget`) or, for a replay, source `simulated`")


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
