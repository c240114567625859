"""Strict dataclass configs and YAML loading.

`from_dict(cls, data)` is generic: any dataclass whose fields are built from int, float, bool,
str, `Literal`, `X | None`, `list[X]`, `tuple[X, ...]`, `dict[str, X]` and nested dataclasses.
Unknown keys and wrong types raise ValueError naming the key path (e.g. `backbone.depth`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

NoiseKind = Literal["binary", "discrete", "continuous"]


# --------------------------------------------------------------------------------------------
# generic strict (de)serialisation
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    where = path or "<root>"
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in pairs)
        item = args[0] if args else Any
        out = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_t, val_t = args if args else (Any, Any)
        return {
            _convert(key_t, k, f"{path}.<key>"): _convert(val_t, v, f"{path}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise ValueError(f"{where}: unsupported field type {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys / wrong types -> ValueError."""
    where = path or "<root>"
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {got}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        keys = ", ".join(f"{path}.{k}" if path else str(k) for k in unknown)
        raise ValueError(f"unknown config key(s) {keys}; expected some of {sorted(fields)}")
    kwargs = {
        name: _convert(hints[name], value, f"{path}.{name}" if path else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"{where}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-python (YAML/JSON friendly) view of a dataclass config; tuples become lists."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def config_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Key paths whose values differ between two configs (dataclasses or dicts)."""
    a = to_dict(a) if dataclasses.is_dataclass(a) else a
    b = to_dict(b) if dataclasses.is_dataclass(b) else b
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(sub)
            else:
                out.extend(config_diff(a[k], b[k], sub))
        return out
    return [] if a == b else [path or "<root>"]


def main_network_diff(a: Any, b: Any) -> list[str]:
    """`config_diff` of two model configs without the `controller` section, which the main
    network (backbones, fusion, head) never reads."""
    return [k for k in config_diff(a, b) if k.split(".")[0] != "controller"]


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping. `base: <file>` (relative to this file) starts from that file's keys,
    which this file's keys override (mappings merged key by key, anything else replaced)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at top level, got {type(data).__name__}")
    if "base" not in data:
        return data
    name = data.pop("base")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: base: expected a file name, got {name!r}")
    base = Path(path).parent / name
    if not base.is_file():
        raise ValueError(f"{path}: base: {name} not found (relative to {Path(path).parent})")
    if base.resolve() in _seen:
        raise ValueError(f"{path}: base: {base} includes itself")
    return merge_mappings(load_yaml(base, (*_seen, Path(path).resolve())), data)


def merge_mappings(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over`'s keys: nested mappings merged, other values replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_mappings(out[k], v) \
            if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


# --------------------------------------------------------------------------------------------
# model config
# --------------------------------------------------------------------------------------------
@dataclass
class BackboneConfig:
    """One ViT per modality (same shape for all modalities; weights shared across nodes)."""

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # embedding per view: "token" = the CLS token (timm default), "avg" = mean of the patch
    # tokens (MAE finetuning's global_pool): each patch token can report "the car is here"
    # without attention having to find it first, which from scratch trains much sooner.
    global_pool: Literal["token", "avg"] = "token"
    # position embedding: "learned" (timm; init std 0.02) or "sincos" (MAE: fixed 2-D sin-cos,
    # O(1) from the first step, so where a patch lies is visible before any training)
    pos_embed: Literal["learned", "sincos"] = "learned"


@dataclass
class ArenaConfig:
    """Ground-plane box (cm, world frame) the predicted mean is bounded to."""

    x_min: float = -200.0
    x_max: float = 200.0
    z_min: float = -200.0
    z_max: float = 200.0


@dataclass
class FusionConfig:
    """Adapters -> transformer over S*M tokens -> readout -> Gaussian head (paper: 6/256/4)."""

    dim: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    # S*M tokens -> one vector: "flatten" (every (node, modality) slot keeps its own weights:
    # which node saw what stays explicit, as localisation needs) or "mean" (permutation-
    # invariant pool; node identity only through the learned node embedding: from scratch it
    # stalls at a constant prediction)
    readout: Literal["flatten", "mean"] = "flatten"
    arena: ArenaConfig = field(default_factory=ArenaConfig)
    init_std_cm: float = 50.0  # std of the untrained head's Gaussian
    eps_cm2: float = 1.0  # covariance floor: L L^T + eps I
    nll_weight: float = 1.0
    dist_weight: float = 0.05


@dataclass
class ControllerConfig:
    """Conv stems on low-res inputs -> transformer with CLS -> logits over all M*D slots."""

    img_size: int = 100
    stem_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    gumbel_tau: float = 1.0
    gumbel_noise_scale: float = 1.0
    noise_head: bool = True
    # > 0: each slot's logit minus a learned weight (initialised to this) x its modality's
    # predicted noise (detached), so a judged-noisy modality starts out losing blocks; 0: off
    noise_prior: float = 0.0
    ae_head: bool = False
    budget_token: bool = False
    budget_min: int | None = None  # None: M
    budget_max: int | None = None  # None: M * D


@dataclass
class LayerDropConfig:
    rate: float = 0.2
    ramp_epochs: int = 0  # linear ramp of the rate from 0 over this many epochs
    # chance a modality keeps only its min_blocks: one value, or one per modality (every
    # modality named), e.g. to drop a dominant modality more often than the others
    full_drop_prob: float | dict[str, float] = 0.1
    # chance a step's mask is instead a random mask of a random budget (core/layerdrop.py)
    budget_prob: float = 0.0
    mode: Literal["skip", "blend"] = "skip"

    def full_drop_probs(self, modalities: list[str]) -> list[float]:
        """`full_drop_prob` per modality, in `modalities` order."""
        p = self.full_drop_prob
        return [p[m] for m in modalities] if isinstance(p, dict) else [p] * len(modalities)


@dataclass
class ModelConfig:
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth", "radar"])
    in_chans: dict[str, int] = field(default_factory=lambda: {"rgb": 3, "depth": 1, "radar": 1})
    # per-modality, per-channel statistics of the [0, 1] inputs; the backbones standardise with
    # them (empty: no standardisation)
    input_mean: dict[str, list[float]] = field(default_factory=dict)
    input_std: dict[str, list[float]] = field(default_factory=dict)
    # modalities whose backbones first subtract a per-node reference image, the empty scene
    # seen by each static sensor (the training split's per-pixel median, set by training and
    # stored with the weights): what changes, not the room, is then what the input shows
    input_reference: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=lambda: ["node1", "node2", "node3"])
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    layerdrop: LayerDropConfig = field(default_factory=LayerDropConfig)
    # blocks each modality always runs (its first ones; missing: 1). 0 lets a controller switch
    # a modality off: its embedding-only token reaches the fusion (the paper's full-backbone
    # drop, trained by LayerDrop's full drop); docs/ARCHITECTURE.md
    min_blocks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_model_config(self)

    @property
    def min_blocks_list(self) -> list[int]:
        """Per modality (in `modalities` order), the blocks that always run."""
        return [self.min_blocks.get(m, 1) for m in self.modalities]

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def depth(self) -> int:
        return self.backbone.depth

    @property
    def total_blocks(self) -> int:
        return self.num_modalities * self.backbone.depth

    @property
    def network_budget_range(self) -> tuple[int, int]:
        """(fewest, most) active blocks the network can run: (max(1, sum(min_blocks)), M * D)."""
        return max(1, sum(self.min_blocks_list)), self.total_blocks

    @property
    def budget_range(self) -> tuple[int, int]:
        """(min, max) budget the controller accepts (default: `network_budget_range`)."""
        c = self.controller
        lo, hi = self.network_budget_range
        return (lo if c.budget_min is None else c.budget_min,
                hi if c.budget_max is None else c.budget_max)


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name}: expected > 0, got {value}")


def validate_model_config(cfg: ModelConfig) -> None:
    """Cross-field checks (raise ValueError with expected vs got)."""
    if not cfg.modalities:
        raise ValueError("modalities: expected at least one modality, got []")
    if len(set(cfg.modalities)) != len(cfg.modalities):
        raise ValueError(f"modalities: expected unique names, got {cfg.modalities}")
    if set(cfg.in_chans) != set(cfg.modalities):
        raise ValueError(
            f"in_chans: expected keys {cfg.modalities}, got {list(cfg.in_chans)}"
        )
    for name in ("input_mean", "input_std"):
        for m, values in getattr(cfg, name).items():
            if m not in cfg.in_chans or len(values) != cfg.in_chans[m]:
                raise ValueError(f"{name}.{m}: expected {cfg.in_chans.get(m, '?')} values for a "
                                 f"modality in {cfg.modalities}, got {values}")
    unknown = [m for m in cfg.input_reference if m not in cfg.modalities]
    if unknown or len(set(cfg.input_reference)) != len(cfg.input_reference):
        raise ValueError(f"input_reference: expected distinct modalities of {cfg.modalities}, "
                         f"got {cfg.input_reference}")
    if any(s <= 0 for values in cfg.input_std.values() for s in values):
        raise ValueError(f"input_std: expected values > 0, got {cfg.input_std}")
    if not cfg.nodes or len(set(cfg.nodes)) != len(cfg.nodes):
        raise ValueError(f"nodes: expected unique, non-empty names, got {cfg.nodes}")
    b = cfg.backbone
    for name in ("img_size", "patch_size", "embed_dim", "depth", "num_heads"):
        _positive(f"backbone.{name}", getattr(b, name))
    if b.img_size % b.patch_size:
        raise ValueError(
            f"backbone.img_size: expected a multiple of patch_size {b.patch_size}, got {b.img_size}"
        )
    if b.embed_dim % b.num_heads:
        raise ValueError(
            f"backbone.embed_dim: expected a multiple of num_heads {b.num_heads}, got {b.embed_dim}"
        )
    f = cfg.fusion
    if f.dim % f.num_heads:
        raise ValueError(f"fusion.dim: expected a multiple of num_heads {f.num_heads}, got {f.dim}")
    a = f.arena
    if not (a.x_max > a.x_min and a.z_max > a.z_min):
        raise ValueError(f"fusion.arena: expected x_max > x_min and z_max > z_min, got {a}")
    _positive("fusion.eps_cm2", f.eps_cm2)
    _positive("fusion.init_std_cm", f.init_std_cm)
    c = cfg.controller
    if c.dim % c.num_heads:
        raise ValueError(
            f"controller.dim: expected a multiple of num_heads {c.num_heads}, got {c.dim}"
        )
    _positive("controller.img_size", c.img_size)
    _positive("controller.gumbel_tau", c.gumbel_tau)
    if not c.stem_channels:
        raise ValueError("controller.stem_channels: expected at least one conv layer, got []")
    if c.noise_prior < 0 or (c.noise_prior > 0 and not c.noise_head):
        raise ValueError(f"controller.noise_prior: expected >= 0, and 0 without a noise head, "
                         f"got {c.noise_prior} (noise_head={c.noise_head})")
    bad = {k: v for k, v in cfg.min_blocks.items()
           if k not in cfg.modalities or not isinstance(v, int) or not 0 <= v <= b.depth}
    if bad:
        raise ValueError(f"min_blocks: expected 0..{b.depth} blocks for modalities in "
                         f"{cfg.modalities}, got {bad}")
    m, total = cfg.network_budget_range
    lo, hi = cfg.budget_range
    if not m <= lo <= hi <= total:
        raise ValueError(
            f"controller.budget_min/max: expected {m} <= min <= max <= {total}, got {lo}..{hi}"
        )
    ld = cfg.layerdrop
    if isinstance(ld.full_drop_prob, dict) and set(ld.full_drop_prob) != set(cfg.modalities):
        raise ValueError(f"layerdrop.full_drop_prob: expected one value or one per modality "
                         f"{cfg.modalities}, got {sorted(ld.full_drop_prob)}")
    probs = ld.full_drop_probs(cfg.modalities)
    if not (0.0 <= ld.rate < 1.0 and all(0.0 <= p <= 1.0 for p in probs)):
        raise ValueError(
            "layerdrop: expected 0 <= rate < 1 and 0 <= full_drop_prob <= 1, "
            f"got rate={ld.rate}, full_drop_prob={ld.full_drop_prob}"
        )
    if not 0.0 <= ld.budget_prob <= 1.0:
        raise ValueError(f"layerdrop.budget_prob: expected 0..1, got {ld.budget_prob}")


def load_model_config(source: str | Path | Mapping[str, Any] | ModelConfig) -> ModelConfig:
    """ModelConfig from a YAML path, a dict, or an existing ModelConfig."""
    if isinstance(source, ModelConfig):
        return source
    if isinstance(source, str | Path):
        return from_dict(ModelConfig, load_yaml(source))
    return from_dict(ModelConfig, source)


# --------------------------------------------------------------------------------------------
# corruption config (used by noise.py; training/eval configs embed it)
# --------------------------------------------------------------------------------------------
@dataclass
class NoiseConfig:
    """Gaussian-noise levels per modality on normalised [0, 1] inputs (paper A.3, 5.1.1).

    binary: sigma in {0, max}; discrete: sigma from `levels`; continuous: U(0, max),
    max = the largest level. `node_shared_prob`: per sample and modality, the probability that
    one sigma hits every node (a room-wide condition: lights out, radar interference); else
    each node draws its own (a smudged lens on one node). 0 = always per node, 1 = always shared.
    """

    kind: NoiseKind = "binary"
    levels: dict[str, list[float]] = field(
        default_factory=lambda: {
            "rgb": [0.0, 1.0, 2.0, 3.0],
            "depth": [0.0, 0.25, 0.5, 0.75],
            "radar": [0.0, 0.5, 1.0, 1.5],
        }
    )
    node_shared_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.node_shared_prob <= 1.0:
            raise ValueError(f"node_shared_prob: expected a probability in [0, 1], "
                             f"got {self.node_shared_prob}")
        for mod, lv in self.levels.items():
            if not lv or min(lv) < 0 or max(lv) <= 0:
                raise ValueError(
                    f"levels.{mod}: expected non-negative levels with max > 0, got {lv}"
                )

    def max_sigma(self, modality: str) -> float:
        if modality not in self.levels:
            raise ValueError(
                f"noise levels: expected a modality in {list(self.levels)}, got {modality!r}"
            )
        return max(self.levels[modality])
