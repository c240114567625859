"""One-file checkpoints (weights + model config + version) and MAE/timm backbone loading.

File layout (`torch.save` dict): `{"format": "admn_ros/1", "kind": "admn" | "controller",
"model_config": dict, "state_dict": dict, "meta": dict}`. Each kind's class and stored configs
come from a registry (`KINDS`, `CheckpointKind`): other layers pass theirs as `kinds=` (the
baselines add a `"baseline_config"` entry), so one save/load serves every kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from admn_ros.core.config import (
    ModelConfig,
    config_diff,
    load_model_config,
    main_network_diff,
    to_dict,
)
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.core.vit import VisionTransformer

FORMAT = "admn_ros/1"
SHARD_FORMAT = "admn_ros/1-shard"  # part of a checkpoint's state dict, in a file of its own


@dataclass(frozen=True)
class ConfigEntry:
    """One config a module kind stores: file key `<name>_config`, module attribute, loader,
    and the diff that decides whether a file's config fits the module."""

    name: str
    attr: str
    load: Callable[[Any], Any]
    diff: Callable[[Any, Any], list[str]] = config_diff


MODEL_CONFIG = ConfigEntry("model", "cfg", load_model_config)
# the main network ignores the controller section: a backbone trained before a controller
# option changed still loads
MAIN_NETWORK_CONFIG = ConfigEntry("model", "cfg", load_model_config, main_network_diff)


@dataclass(frozen=True)
class CheckpointKind:
    """How one module kind is stored: its class and its configs, in constructor order."""

    cls: type[nn.Module]
    configs: tuple[ConfigEntry, ...] = (MODEL_CONFIG,)


# the core's kinds; other layers (baselines) pass their own registry as `kinds=`
KINDS: dict[str, CheckpointKind] = {"admn": CheckpointKind(ADMN, (MAIN_NETWORK_CONFIG,)),
                                    "controller": CheckpointKind(Controller)}
# wrappers that training scripts put in front of encoder keys
KEY_PREFIXES = ("module.", "model.", "encoder.", "backbone.")
# keys of MAE decoders / timm classifier heads that a backbone does not have
IGNORED_KEY_PREFIXES = ("decoder", "mask_token", "head", "fc_norm")
# entries under which checkpoints commonly nest the weights (MAE: "model", others "state_dict")
NESTED_STATE_KEYS = ("model", "state_dict", "module")
# backbone state that training sets from data (VisionTransformer.input_reference), never part
# of pretrained weights: kept as the model has it when loading those
DATA_BUFFERS = ("input_reference",)


@dataclass
class Checkpoint:
    kind: str
    model_config: ModelConfig
    module: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict)  # every stored config, by entry name


def _kind_of(module: nn.Module, kinds: Mapping[str, CheckpointKind]) -> str:
    for kind, spec in kinds.items():
        if isinstance(module, spec.cls):
            return kind
    names = [spec.cls.__name__ for spec in kinds.values()]
    raise ValueError(f"checkpoint: expected a module in {names}, got {type(module).__name__}")


def save_checkpoint(path: str | Path, module: nn.Module, meta: Mapping[str, Any] | None = None,
                    kinds: Mapping[str, CheckpointKind] | None = None) -> None:
    """Write weights, the module's configs (ADMN / Controller: its ModelConfig) and `meta`
    (epoch, metrics, ...) to one file. `kinds`: the registry `module` belongs to (core KINDS)."""
    kinds = KINDS if kinds is None else kinds
    kind = _kind_of(module, kinds)
    payload = {
        "format": FORMAT,
        "kind": kind,
        **{f"{e.name}_config": to_dict(getattr(module, e.attr)) for e in kinds[kind].configs},
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "meta": dict(meta or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a file


def read_checkpoint(path: str | Path,
                    kinds: Mapping[str, CheckpointKind] | None = None) -> dict[str, Any]:
    """The raw checkpoint dict after checking its format and that its kind is a core kind or
    one of `kinds`."""
    known = {**KINDS, **(kinds or {})}
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected an admn_ros checkpoint (format {FORMAT!r}), "
                         f"got {got!r}")
    if data.get("kind") not in known:
        raise ValueError(f"{path}: expected kind in {list(known)}, got {data.get('kind')!r}")
    shards = data.get("meta", {}).get("shards", [])
    if shards:
        data = {**data, "state_dict": merge_shards(Path(path), data["state_dict"], shards)}
    return data


def merge_shards(main: Path, state: Mapping[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    """`state` plus the parts stored in shard files beside `main` (large models are split so
    that every shipped file stays small)."""
    merged = dict(state)
    for name in names:
        shard = main.parent / name
        if not shard.is_file():
            raise ValueError(f"{shard}: expected the shard {name!r} of {main.name}, got no file")
        part = torch.load(shard, map_location="cpu", weights_only=True)
        if not isinstance(part, dict) or part.get("format") != SHARD_FORMAT \
                or part.get("of") != main.name:
            raise ValueError(f"{shard}: expected a shard of {main.name} (format "
                             f"{SHARD_FORMAT!r})")
        merged.update(part["state_dict"])
    return merged


def load_checkpoint(path: str | Path, into: nn.Module | None = None, kind: str | None = None,
                    kinds: Mapping[str, CheckpointKind] | None = None,
                    ignore: tuple[str, ...] = ()) -> Checkpoint:
    """Load a checkpoint. With `into`, its configs must equal the file's (ValueError naming the
    differing fields) and weights are loaded into it; otherwise a module is built from the file.
    `kind` ("admn" | "controller", or a key of `kinds`) and `into`'s kind check what the file
    holds. `kinds`: the registry to build from (default: the core's KINDS). `ignore`: config
    sections (e.g. "layerdrop") that may differ, for a file that only initialises training."""
    kinds = KINDS if kinds is None else kinds
    want = kind
    if into is not None:
        want = _kind_of(into, kinds)
        if kind is not None and kind != want:
            raise ValueError(f"kind: expected {want!r} (the module's), got {kind!r}")
    data = read_checkpoint(path, kinds)
    got = data["kind"]
    if want is not None and got != want:
        raise ValueError(f"{path}: expected a {want!r} checkpoint, got {got!r}")
    if got not in kinds:
        raise ValueError(f"{path}: expected kind in {list(kinds)}, got {got!r}")
    entries = kinds[got].configs
    configs = {e.name: e.load(data[f"{e.name}_config"]) for e in entries}
    if into is None:
        into = kinds[got].cls(*configs.values())
    else:
        _check_configs(path, into, entries, configs, ignore)
    into.load_state_dict(data["state_dict"])
    return Checkpoint(got, configs["model"], into, data.get("meta", {}), configs)


def _check_configs(path: str | Path, module: nn.Module, entries: tuple[ConfigEntry, ...],
                   configs: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """ValueError naming the fields where `module`'s configs differ from the file's (prefixed
    with the entry name when a kind stores more than one config), but those in `ignore`'s
    sections (single-config kinds)."""
    if len(entries) == 1:
        (e,) = entries
        diff = [k for k in e.diff(getattr(module, e.attr), configs[e.name])
                if k.split(".")[0] not in ignore]
        what = f"{e.name} config"
    else:
        diff = [f"{e.name}.{k}" for e in entries
                for k in e.diff(getattr(module, e.attr), configs[e.name])]
        what = "config"
    if diff:
        raise ValueError(f"{path}: {what} differs from the module's in {diff}")


# --------------------------------------------------------------------------------------------
# MAE / timm backbone weights
# --------------------------------------------------------------------------------------------
def _unwrap(state: Mapping[str, Any]) -> Mapping[str, Tensor]:
    for key in NESTED_STATE_KEYS:
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in KEY_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _extra_block(key: str, depth: int) -> bool:
    """`blocks.N.*` with N >= depth: a deeper source model (its extra blocks are dropped)."""
    parts = key.split(".")
    return len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() and int(parts[1]) >= depth


def adapt_patch_embed(weight: Tensor, in_chans: int) -> Tensor:
    """[E, C_src, p, p] -> [E, in_chans, p, p]: channel mean, repeated (scaled to keep the
    response to a uniform input), e.g. RGB -> 1-channel depth."""
    if weight.shape[1] == in_chans:
        return weight
    mean = weight.mean(1, keepdim=True) * weight.shape[1] / in_chans
    return mean.repeat(1, in_chans, 1, 1)


def resize_pos_embed(pos: Tensor, grid: int) -> Tensor:
    """[1, 1 + g*g, E] -> [1, 1 + grid*grid, E]: bicubic on the patch grid, CLS kept."""
    cls, patches = pos[:, :1], pos[:, 1:]
    old = round(patches.shape[1] ** 0.5)
    if old * old != patches.shape[1]:
        raise ValueError(f"pos_embed: expected 1 + a square number of tokens, "
                         f"got {pos.shape[1]}")
    if old == grid:
        return pos
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)  # [1, E, g, g]
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic",
                            align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
    return torch.cat([cls, patches], 1)


@dataclass
class LoadReport:
    loaded: list[str]
    ignored: list[str]  # decoder / head keys and extra blocks of a deeper source
    adapted: list[str]  # keys changed by channel adaptation or position-embedding resize


def load_pretrained_backbone(backbone: VisionTransformer,
                             source: str | Path | Mapping[str, Any]) -> LoadReport:
    """Load MAE (models_mae) or timm ViT weights into `backbone` by name.

    Accepts a file path or a state dict (optionally nested under "model"/"state_dict").
    Strips `module.`/`model.`/`encoder.`/`backbone.` prefixes, ignores decoder/head keys and
    blocks beyond the backbone's depth, adapts patch-embedding input channels and resizes
    position embeddings. Missing keys or other shape mismatches -> ValueError naming them.
    """
    if isinstance(source, str | Path):
        source = torch.load(source, map_location="cpu", weights_only=True)
    state = {_strip(k): v for k, v in _unwrap(source).items() if isinstance(v, Tensor)}
    own = backbone.state_dict()
    out: dict[str, Tensor] = {}
    ignored, adapted, mismatched = [], [], []
    for key, value in state.items():
        if key not in own:
            ignored.append(key)
            continue
        want = own[key].shape
        if key == "patch_embed.proj.weight" and value.shape[1] != want[1]:
            value = adapt_patch_embed(value, want[1])
            adapted.append(key)
        elif key == "pos_embed" and value.shape != want:
            value = resize_pos_embed(value, backbone.patch_embed.grid_size)
            adapted.append(key)
        if value.shape != want:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(want)}")
            continue
        out[key] = value
    missing = sorted(set(own) - set(state) - set(DATA_BUFFERS))
    if mismatched or missing:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + "; ".join(mismatched))
        if missing:
            parts.append(f"missing keys: {missing}")
        raise ValueError("load_pretrained_backbone: " + " | ".join(parts))
    unexpected = [k for k in ignored
                  if not k.startswith(IGNORED_KEY_PREFIXES) and not _extra_block(k, backbone.depth)]
    if unexpected:
        raise ValueError(f"load_pretrained_backbone: unexpected keys {sorted(unexpected)}")
    backbone.load_state_dict({**{k: own[k] for k in DATA_BUFFERS if k in own}, **out})
    return LoadReport(sorted(out), sorted(ignored), adapted)
