"""Power sources on fake sysfs trees: each Jetson INA3221 layout reads its module input power,
and `auto` never falls back to the simulated profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from admn_ros.nodes.power import (
    Ina3221Source,
    NoPowerSourceError,
    SimulatedSource,
    detect_source,
)

ROOT = Path(__file__).resolve().parents[1]

# (label, mV, mA) per INA3221 chip as each board's hwmon driver lists them
BOARDS = {
    # Orin NX / Nano: VDD_IN is the module total; the other two rails are inside it
    "orin_nx_nano": ([[("VDD_IN", 5000, 1600), ("VDD_CPU_GPU_CV", 5000, 600),
                       ("VDD_SOC", 5000, 300)]], 8.0),
    # Orin AGX: three input rails on 0x40, sub-rails on 0x41 (not added)
    "orin_agx": ([[("VDD_GPU_SOC", 5000, 1000), ("VDD_CPU_CV", 5000, 400),
                   ("VIN_SYS_5V0", 5000, 600)],
                  [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 100), ("NC", 0, 0)]], 10.0),
    # Xavier AGX: six rails on two chips, their sum is the module power
    "xavier_agx": ([[("GPU", 19000, 100), ("CPU", 19000, 100), ("SOC", 19000, 100)],
                    [("CV", 19000, 100), ("VDDRQ", 19000, 100), ("SYS5V", 5000, 200)]],
                   5 * 1.9 + 1.0),
}


def fake_jetson(root: Path, chips: list[list[tuple[str, int, int]]]) -> Path:
    hwmon = root / "class/hwmon"
    (hwmon / "hwmon0").mkdir(parents=True)
    (hwmon / "hwmon0/name").write_text("cpu_thermal\n")  # another driver: ignored
    for n, rails in enumerate(chips, 1):
        hw = hwmon / f"hwmon{n}"
        hw.mkdir()
        (hw / "name").write_text("ina3221\n")
        for k, (label, mv, ma) in enumerate(rails, 1):
            (hw / f"in{k}_label").write_text(label + "\n")
            (hw / f"in{k}_input").write_text(f"{mv}\n")
            (hw / f"curr{k}_input").write_text(f"{ma}\n")
    return root


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_each_jetson_layout_reads_its_module_input(tmp_path, board):
    chips, watts = BOARDS[board]
    src = Ina3221Source(fake_jetson(tmp_path, chips), limit_w=15.0)
    assert src.board == board
    reading = src.read(0.0)
    assert reading.power_w == pytest.approx(watts)
    assert reading.headroom_w == pytest.approx(15.0 - watts)
    assert detect_source("auto", str(tmp_path), 15.0, "").name == "ina3221"


def test_unknown_rail_layout_is_a_clear_error(tmp_path):
    fake_jetson(tmp_path, [[("VDD_MYSTERY", 5000, 100)]])
    with pytest.raises(ValueError, match=r"VDD_MYSTERY.*known Jetson layout"):
        Ina3221Source(tmp_path, 15.0)


def test_auto_without_sensors_is_an_error_not_the_simulated_profile(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "jtop", None)  # import fails
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    with pytest.raises(NoPowerSourceError, match="fixed budget") as err:
        detect_source("auto", str(tmp_path), 15.0, str(ROOT / "config/power/demo_steps.yaml"))
    for name in ("ina3221", "jtop", "nvml", "rapl"):
        assert f"{name}:" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # a start-up error the nodes print in a line
    by_name = detect_source("simulated", str(tmp_path), 15.0,
                            str(ROOT / "config/power/demo_steps.yaml"))
    assert isinstance(by_name, SimulatedSource)
