"""Strict YAML configs of the data layer: scenes (generator), data.yaml (layout, sources, splits).

Loaded with the core's generic strict loader (`admn_ros.core.config.from_dict`); errors name
the file (or "scene" / "data config" for dicts) and the key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from admn_ros.core.config import from_dict, load_yaml
from admn_ros.paths import share_dir

T = TypeVar("T")

CONFIG_DIR = share_dir() / "config"
SCENES_DIR = CONFIG_DIR / "scenes"
DATA_CONFIG = CONFIG_DIR / "data.yaml"


def _build(cls: type[T], raw: Any, where: str) -> T:
    """`from_dict` (the core's strict loader), its errors prefixed with the file or source."""
    try:
        return from_dict(cls, raw)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _load_yaml(path: Path) -> dict:
    try:
        return load_yaml(path)
    except OSError as err:
        raise ValueError(f"{path}: cannot read config ({err})") from None


# --------------------------------------------------------------------------- scene config
@dataclass(frozen=True)
class TimingConfig:
    start_ms: int = 1_700_000_000_000
    camera_hz: float = 15.0
    radar_hz: float = 4.0
    mocap_hz: float = 120.0
    clock_jitter_ms: float = 4.0


@dataclass(frozen=True)
class ArenaConfig:
    x: tuple[float, ...] = (-2.0, 2.0)
    z: tuple[float, ...] = (-2.0, 2.0)
    room_margin_m: float = 0.6
    wall_height: float = 1.5
    floor_tile_m: float = 0.5
    floor_colors: tuple[tuple[float, ...], ...] = ((150, 140, 125), (105, 100, 92))
    wall_colors: tuple[tuple[float, ...], ...] = ((170, 185, 200),)
    wall_stripe_m: float = 0.3


@dataclass(frozen=True)
class NodeConfig:
    position: tuple[float, ...]
    look_at: tuple[float, ...] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CameraConfig:
    width: int = 160
    height: int = 120
    hfov_deg: float = 80.0
    jpeg_quality: int = 90
    pixel_noise: float = 3.0
    light_gain: tuple[float, ...] = (0.6, 1.3)
    light_period_s: tuple[float, ...] = (8.0, 20.0)
    light_dir: tuple[float, ...] = (0.4, 1.0, 0.3)


@dataclass(frozen=True)
class DepthConfig:
    min_mm: int = 300
    max_mm: int = 6000
    noise_coeff: float = 0.0015
    hole_fraction: float = 0.02
    edge_holes: bool = True


@dataclass(frozen=True)
class RadarConfig:
    range_bins: int = 64
    range_res_m: float = 0.1
    doppler_bins: int = 32
    max_speed_mps: float = 2.0
    azimuth_grid: int = 64
    fov_deg: float = 60.0
    car_amplitude: float = 400.0
    range_sigma_bins: float = 0.8
    doppler_sigma_bins: float = 0.8
    azimuth_sigma_deg: float = 8.0
    clutter_amplitude: float = 40.0
    multipath_gain: float = 0.3
    noise_floor: float = 1.0


@dataclass(frozen=True)
class CarConfig:
    size: tuple[float, ...] = (0.30, 0.12, 0.15)
    color: tuple[float, ...] = (220, 30, 30)
    top_color: tuple[float, ...] = (250, 230, 40)
    speed_mps: tuple[float, ...] = (0.0, 0.9)
    speed_change_s: tuple[float, ...] = (1.5, 4.0)
    stop_probability: float = 0.1
    turn_rate_max: float = 1.6
    turn_change_s: tuple[float, ...] = (0.5, 2.0)
    wall_margin_m: float = 0.45


@dataclass(frozen=True)
class DistractorConfig:
    center: tuple[float, ...] = (0.9, -0.8)
    size: tuple[float, ...] = (0.35, 0.5, 0.35)
    color: tuple[float, ...] = (40, 90, 200)


@dataclass(frozen=True)
class MoversConfig:
    """Other vehicles driving like the car (none by default), rendered in every modality:
    look-alikes that a sensor tells from the car by a detail (config/scenes/traffic.yaml)."""

    count: int = 0
    size: tuple[float, ...] = (0.50, 0.30, 0.26)  # length, height, width (m)
    color: tuple[float, ...] = (40, 150, 60)
    top_color: tuple[float, ...] = (200, 200, 190)
    radar_gain: float = 2.0  # radar cross-section relative to the car's

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"movers.count: expected >= 0, got {self.count}")


@dataclass(frozen=True)
class SceneConfig:
    """Everything the generator needs to render one recording."""

    name: str = "default"
    seed_offset: int = 0
    timing: TimingConfig = field(default_factory=TimingConfig)
    arena: ArenaConfig = field(default_factory=ArenaConfig)
    nodes: dict[str, NodeConfig] = field(default_factory=dict)
    camera: CameraConfig = field(default_factory=CameraConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    radar: RadarConfig = field(default_factory=RadarConfig)
    car: CarConfig = field(default_factory=CarConfig)
    distractor: DistractorConfig | None = field(default_factory=DistractorConfig)
    movers: MoversConfig = field(default_factory=MoversConfig)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError(f"scene {self.name!r}: expected at least one node under 'nodes'")
        for name in self.nodes:
            if not (name.startswith("node") and name[4:].isdigit()):
                raise ValueError(f"scene {self.name!r}: node names must be node<k>, got {name!r}")


def load_scene(name_or_path: str | Path | dict = "default") -> SceneConfig:
    """Load a scene by name (config/scenes/NAME.yaml), by path, or from a dict."""
    if isinstance(name_or_path, dict):
        raw, where = name_or_path, "scene"
    else:
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml"):
            path = SCENES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in SCENES_DIR.glob("*.yaml"))
            raise ValueError(f"scene {name_or_path!r} not found; known scenes: {known}")
        raw, where = _load_yaml(path), str(path)
    return _build(SceneConfig, raw, where)


# --------------------------------------------------------------------------- data.yaml
@dataclass(frozen=True)
class DepthJpegConfig:
    colormap: str = "jet"
    max_mm: int = 6000


@dataclass(frozen=True)
class LayoutConfig:
    """Names of the GDTM datasets and files that hold each modality."""

    datasets: dict[str, str] = field(
        default_factory=lambda: {
            "rgb": "zed_camera_left",
            "depth": "realsense_camera_depth",
            "radar": "range_doppler",
            "radar_azimuth": "azimuth_static",
        }
    )
    mocap: str = "mocap"
    car_types: tuple[str, ...] = ("truck", "red_car", "green_car", "car")
    files: dict[str, str] = field(
        default_factory=lambda: {
            "rgb": "zed.hdf5",
            "depth": "realsense.hdf5",
            "radar": "mmwave.hdf5",
            "mocap": "mocap.hdf5",
        }
    )
    depth_jpeg: DepthJpegConfig = field(default_factory=DepthJpegConfig)


@dataclass(frozen=True)
class DepthSourceConfig:
    """Which dataset is depth ("" = layout.datasets.depth) and how it maps to millimetres."""

    dataset: str = ""
    mode: str = "mm"


@dataclass(frozen=True)
class RadarSourceConfig:
    """How range-doppler values map to the model's input range (see `admn_ros.data.sources`)."""

    mode: str = "magnitude"
    mean: float = 4353.0
    std: float = 705.0
    span_std: float = 3.0


@dataclass(frozen=True)
class SourceConfig:
    depth: DepthSourceConfig = field(default_factory=DepthSourceConfig)
    radar: RadarSourceConfig = field(default_factory=RadarSourceConfig)


@dataclass(frozen=True)
class PreprocessConfig:
    depth_max_mm: float = 6000.0
    depth_hole_fill_px: int = 0
    radar_input: str = "magnitude"
    radar_db_min: float = 0.0
    radar_db_max: float = 60.0


@dataclass(frozen=True)
class BagConfig:
    """Topic and frame names of the rosbag2 form of a recording ({node} is substituted)."""

    topics: dict[str, str] = field(default_factory=lambda: {
        "rgb": "/{node}/camera/color/image_raw",
        "depth": "/{node}/camera/depth/image_raw",
        "radar": "/{node}/radar/range_doppler",
        "radar_azimuth": "/{node}/radar/range_azimuth",
    })
    mocap_topic: str = "/mocap/car/pose"
    tf_static_topic: str = "/tf_static"
    world_frame: str = "world"
    frames: dict[str, str] = field(default_factory=lambda: {
        "rgb": "{node}_color_optical_frame",
        "depth": "{node}_depth_optical_frame",
        "radar": "{node}_radar",
        "radar_azimuth": "{node}_radar",
    })
    rgb_encoding: str = "rgb8"
    image_format: str = "png"
    jpeg_quality: int = 95


@dataclass(frozen=True)
class DataConfig:
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    bag: BagConfig = field(default_factory=BagConfig)
    source: str = "auto"
    sources: dict[str, SourceConfig] = field(default_factory=lambda: {
        "admn": SourceConfig(),
        "gdtm": SourceConfig(DepthSourceConfig("realsense_camera_depth", "gray_minmax"),
                             RadarSourceConfig(mode="frame_minmax")),
    })
    splits: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
    )


def load_data_config(path: str | Path | dict | None = None) -> DataConfig:
    """Load config/data.yaml (default), another YAML file, or a dict."""
    if isinstance(path, dict):
        return _build(DataConfig, path, "data config")
    path = Path(path) if path is not None else DATA_CONFIG
    return _build(DataConfig, _load_yaml(path), str(path))
