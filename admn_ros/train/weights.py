"""Shipped default weights: export from a recipe's run, model card, and the loader.

Files in `models/` (core checkpoint format, floating tensors stored as float16, loaded back to
float32): `admn_<recipe>.pt` (backbones + fusion), `controller_<recipe>_L{L}.pt` (one per
budget), `controller_<recipe>_universal.pt` (budget-conditioned), `controller_<recipe>_ae.pt`
(unsupervised). `SHA256SUMS` lists them; `README.md` is the model card.

    python -m admn_ros.train.weights export --config config/train/demo.yaml
    python -m admn_ros.train.weights card --config config/train/demo.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from admn_ros.core.checkpoint import SHARD_FORMAT, load_checkpoint, read_checkpoint
from admn_ros.core.config import ModelConfig, load_model_config, main_network_diff
from admn_ros.core.controller import Controller
from admn_ros.core.model import ADMN
from admn_ros.data.preprocess import check_input_settings
from admn_ros.train.config import REPO_ROOT, StageConfig, TrainConfig, load_train_config
from admn_ros.train.state import atomic_save

FORMAT = "admn_ros/1"
SUMS = "SHA256SUMS"
HOW_TO_GET = "run `make train` (or restore the files with `git checkout -- models/`)"
MAX_FILE_BYTES = 5 * 1024 * 1024
# run output name (under out_dir) -> shipped key; the shipped file is <prefix>_<recipe>[_suffix]
RUN_NAMES = re.compile(r"^(admn|controller_L\d+|controller_universal|controller_ae(?:_L\d+)?)"
                       r"\.pt$")


def shipped_name(run_name: str, recipe: str) -> str:
    """`admn` -> `admn_demo.pt`; `controller_L6` -> `controller_demo_L6.pt`, ..."""
    if run_name == "admn":
        return f"admn_{recipe}.pt"
    suffix = run_name[len("controller"):]  # "_L6", "_universal", "_ae", "_ae_L6"
    return f"controller_{recipe}{suffix}.pt"


def controller_key(file_name: str, prefix: str) -> str:
    """`controller_demo_L6.pt` -> `L6`; `controller_demo_universal.pt` -> `universal`."""
    return file_name[len(prefix) + 1:-3]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def export(cfg: TrainConfig, only: list[str] | None = None) -> list[Path]:
    """Copy a finished run's outputs to `models_dir` as float16 files + SHA256SUMS (all the
    run's outputs, or `only` these run names, e.g. a retrained `controller_universal`)."""
    run = cfg.path(cfg.out_dir)
    dest = cfg.path(cfg.models_dir)
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in run.glob("*.pt") if RUN_NAMES.match(p.name))
    if only:
        missing = [n for n in only if not (run / f"{n}.pt").is_file() or not RUN_NAMES.match(
            f"{n}.pt")]
        if missing:
            raise ValueError(f"--only: expected run outputs in {run}, missing {missing}")
        sources = [p for p in sources if p.stem in only]
    elif not any(p.name == "admn.pt" for p in sources):
        raise ValueError(f"{run}/admn.pt: expected the backbone stage's output; "
                         f"run the recipe's stages first")
    written = []
    for src in sources:
        data = read_checkpoint(src)
        sd = {k: v.to(torch.float16) if v.is_floating_point() else v
              for k, v in data["state_dict"].items()}
        meta = dict(data.get("meta", {}), stored_dtype="float16")
        out = dest / shipped_name(src.stem, cfg.recipe)
        shards = {}
        if data["kind"] == "admn":  # each backbone in a file of its own (files stay < 5 MB)
            for m in data["model_config"]["modalities"]:
                pre = f"backbones.{m}."
                shards[shard_name(out, m)] = {k: sd.pop(k) for k in list(sd)
                                              if k.startswith(pre)}
            meta["shards"] = sorted(shards)
        for name, part in shards.items():
            written.append(_save_small(dest / name, {"format": SHARD_FORMAT, "of": out.name,
                                                     "state_dict": part}))
        written.append(_save_small(out, {"format": FORMAT, "kind": data["kind"],
                                         "model_config": data["model_config"],
                                         "state_dict": sd, "meta": meta}))
    write_sums(dest)
    return written


def shard_name(main: Path, modality: str) -> str:
    return f"{main.stem}_backbone_{modality}.pt"


def _save_small(path: Path, obj: dict) -> Path:
    atomic_save(obj, path)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: expected < 5 MB, got {path.stat().st_size / 1e6:.1f} MB")
    return path


def write_sums(dest: Path) -> None:
    lines = [f"{sha256(p)}  {p.name}" for p in sorted(dest.glob("*.pt"))]
    (dest / SUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
@dataclass
class DefaultWeights:
    model_config: ModelConfig
    model: ADMN
    controllers: dict[str, Controller] = field(default_factory=dict)  # "L6", "universal", "ae"
    paths: dict[str, Path] = field(default_factory=dict)

    def controller_for(self, budget: int, prefer: str = "budget") -> Controller:
        """The per-budget controller for L if shipped (prefer="budget"), else the universal
        one when L is in its range; ValueError otherwise."""
        if prefer == "budget" and f"L{budget}" in self.controllers:
            return self.controllers[f"L{budget}"]
        uni = self.controllers.get("universal")
        if uni is not None and uni.budget_min <= budget <= uni.budget_max:
            return uni
        have = sorted(self.controllers)
        raise ValueError(f"budget: expected one of the shipped controllers' budgets ({have}; "
                         f"universal range {uni.budget_min}..{uni.budget_max} if present), "
                         f"got {budget}")


def _read_sums(models_dir: Path) -> dict[str, str]:
    path = models_dir / SUMS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {HOW_TO_GET}")
    sums = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    return sums


def verify(path: Path, sums: dict[str, str]) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: default weights missing; {HOW_TO_GET}")
    if path.name not in sums:
        raise ValueError(f"{path}: not listed in {path.parent / SUMS}; {HOW_TO_GET}")
    got = sha256(path)
    if got != sums[path.name]:
        raise ValueError(f"{path}: SHA-256 {got[:12]}... does not match {SUMS} "
                         f"({sums[path.name][:12]}...); the file is damaged or stale "
                         f"(a git-lfs pointer?); {HOW_TO_GET}")


def verify_shards(main: Path, sums: dict[str, str]) -> None:
    """Every shard file `main` lists must match SHA256SUMS too."""
    meta = torch.load(main, map_location="cpu", weights_only=True).get("meta", {})
    for name in meta.get("shards", []):
        verify(main.parent / name, sums)


def verify_listed(path: str | Path) -> None:
    """When a SHA256SUMS stands beside `path`, the file and its shards must match it."""
    path = Path(path)
    if (path.parent / SUMS).is_file():
        sums = _read_sums(path.parent)
        verify(path, sums)
        verify_shards(path, sums)


def load_default_weights(models_dir: str | Path = REPO_ROOT / "models", recipe: str = "demo",
                         model_config: str | Path | ModelConfig | None = None,
                         controllers: bool = True) -> DefaultWeights:
    """Load and verify the shipped weights (hashes against SHA256SUMS, model config against
    `model_config`, default config/model/<recipe>.yaml). Errors name the path and `make train`."""
    models_dir = Path(models_dir)
    sums = _read_sums(models_dir)
    main = models_dir / f"admn_{recipe}.pt"
    verify(main, sums)
    if model_config is None:
        candidate = REPO_ROOT / "config" / "model" / f"{recipe}.yaml"
        model_config = candidate if candidate.exists() else None
    verify_shards(main, sums)
    data = read_checkpoint(main)  # backbone shards merged in
    if data["kind"] != "admn":
        raise ValueError(f"{main}: expected an 'admn' checkpoint, got {data['kind']!r}")
    cfg = load_model_config(data["model_config"])
    check_input_settings(data.get("meta", {}).get("preprocess"), str(main))
    state = data["state_dict"]
    if model_config is not None:
        expected = load_model_config(model_config)
        diff = main_network_diff(cfg, expected)
        if diff:
            raise ValueError(f"{main}: model config differs from {model_config} in {diff}; "
                             f"retrain with `make train` or pass the matching model config")
    model = ADMN(cfg)
    try:
        model.load_state_dict(state)  # float16 -> float32 on copy
    except RuntimeError as exc:
        raise ValueError(f"{main}: weights do not fit the model config ({exc}); "
                         f"{HOW_TO_GET}") from None
    model.eval()
    out = DefaultWeights(cfg, model, paths={"admn": main})
    if controllers:
        prefix = f"controller_{recipe}"
        for path in sorted(models_dir.glob(f"{prefix}_*.pt")):  # controllers only
            verify(path, sums)
            key = controller_key(path.name, prefix)
            out.controllers[key] = load_controller(path, cfg).float()
            out.paths[key] = path
    return out


def load_controller(path: Path, model_cfg: ModelConfig) -> Controller:
    """An eval-mode controller from `path`, refused unless trained for `model_cfg`'s main
    network on inputs prepared as they are now."""
    c = load_checkpoint(path, kind="controller")
    check_compatible(c.model_config, model_cfg, path)
    check_input_settings(c.meta.get("preprocess"), str(path))
    return c.module.eval()


def check_compatible(ctrl_cfg: ModelConfig, model_cfg: ModelConfig, path: Path) -> None:
    """A controller must come from the same main-network config (its own section may differ)."""
    diff = main_network_diff(ctrl_cfg, model_cfg)
    if diff:
        raise ValueError(f"{path}: controller was trained for another model config "
                         f"(differs in {diff})")


# --------------------------------------------------------------------------------------------
# model card
# --------------------------------------------------------------------------------------------
def objective_text(st: StageConfig) -> str:
    """What a controller stage optimises, in the model card's words."""
    if st.objective == "task":
        return "task loss through Gumbel top-L straight-through masks"
    scored = f"{st.max_candidates} {st.candidate_family} candidates per step"
    if st.objective == "values":
        return (f"values ({scored}, slot logits fitted as an additive model of their errors, "
                f"scale {st.candidate_temperature_cm:g} cm)")
    return f"candidates ({scored}, softmin at {st.candidate_temperature_cm:g} cm)"


def write_card(cfg: TrainConfig, train_seconds: int | None = None) -> Path:
    dest = cfg.path(cfg.models_dir)
    results = cfg.path(cfg.results_dir)
    table_md = results / f"{cfg.recipe}.md"
    sums = _read_sums(dest)
    model_cfg = cfg.model_config()
    gen = cfg.data.generate
    lines = [
        f"# Default weights: `{cfg.recipe}` recipe",
        "",
        "Shipped ADMN weights used by the ROS nodes and `make demo`. Reproduce with `make train` "
        f"(= `scripts/train.sh`, recipe `config/train/{cfg.recipe}.yaml`).",
        "",
        "## What",
        "",
        f"- Model: `{cfg.model}` — {model_cfg.num_modalities} modalities "
        f"({', '.join(model_cfg.modalities)}) x {model_cfg.num_nodes} nodes, one ViT per "
        f"modality ({model_cfg.backbone.depth} blocks, width {model_cfg.backbone.embed_dim}, "
        f"{model_cfg.backbone.img_size} px, patch {model_cfg.backbone.patch_size}), "
        f"{model_cfg.total_blocks} blocks in all; fusion transformer + Gaussian (x, z) head.",
        "- Files (floating tensors stored as float16, loaded back to float32 by "
        "`admn_ros.train.weights.load_default_weights`):",
    ]
    for name in sorted(sums):
        p = dest / name
        raw = torch.load(p, map_location="cpu", weights_only=True) if p.exists() else {}
        size = p.stat().st_size / 1e6 if p.exists() else 0
        if raw.get("format") == SHARD_FORMAT:
            lines.append(f"  - `{name}` ({size:.2f} MB): backbone weights of `{raw['of']}`")
            continue
        meta = raw.get("meta", {})
        lines.append(f"  - `{name}` ({size:.2f} MB): {meta.get('stage', '?')}"
                     + (f", budget {meta['budget']}" if "budget" in meta else "")
                     + f"; {training_line(meta)}")
    lines += [
        "",
        "## How it was trained",
        "",
        f"- Data: synthetic GDTM-like recording (`admn generate`, scene "
        f"`{gen.scene if gen else '?'}`, {gen.frames if gen else '?'} frames, seed "
        f"{gen.seed if gen else '?'}); contiguous "
        "time splits train 70 % / val 15 % / test 15 % (config/data.yaml).",
        f"- Seed {cfg.seed}. Stage 0 (MAE pretraining) "
        + ("skipped (epochs 0): backbones trained from scratch in stage 1."
           if cfg.mae.epochs == 0 else f"{cfg.mae.epochs} epochs."),
        f"- Stage 1 (backbone + fusion): {cfg.backbone.epochs} epochs of at most "
        f"{cfg.backbone.max_steps_per_epoch or 'all'} steps, batch "
        f"{cfg.backbone.batch_size}, AdamW {cfg.backbone.lr:g} (weight decay "
        f"{cfg.backbone.weight_decay:g}), RGB brightness jitter {cfg.backbone.rgb_jitter:g}, "
        f"LayerDrop "
        f"{model_cfg.layerdrop.rate} (+ full-backbone drop {model_cfg.layerdrop.full_drop_prob}),"
        f" frozen blocks {cfg.backbone.freeze_blocks}, Gaussian corruption after "
        f"{cfg.backbone.clean_epochs} clean epoch(s) (kinds {cfg.backbone.noise_kinds}).",
        f"- Stage 2 (controllers, backbones frozen): budgets {cfg.controller.budgets}"
        + (f" + universal {cfg.controller.universal_range}" if cfg.controller.universal else "")
        + f"; {cfg.controller.epochs} epochs (first {cfg.controller.warmup_noise_epochs}: noise "
        "head only, at most "
        f"{cfg.controller.max_warmup_steps} steps; then at most "
        f"{cfg.controller.max_steps_per_epoch} steps/epoch), batch {cfg.controller.batch_size}, "
        f"AdamW {cfg.controller.lr:g}, objective {objective_text(cfg.controller)}"
        + "".join(f"; L={b}: {objective_text(cfg.controller.for_budget(b))}, at most "
                  f"{cfg.controller.for_budget(b).max_steps_per_epoch} steps/epoch"
                  for b in sorted(cfg.controller.per_budget or {}))
        + f"; noise-sigma L1 supervision, noise prior {model_cfg.controller.noise_prior:g} "
        "(docs/ARCHITECTURE.md). ADMN-AE: unsupervised (autoencoder head, no corruption labels)"
        + (f", universal {cfg.controller_ae.universal_range}." if cfg.controller_ae.universal
           else "."),
        f"- Noise levels (sigma on [0, 1] inputs): {dict(cfg.noise.levels)}; one draw shared "
        f"by all nodes with probability {cfg.noise.node_shared_prob:g}, else one per node.",
    ]
    if train_seconds:
        lines.append(f"- Wall time of `make train` on this machine: {train_seconds / 60:.1f} min "
                     "(2 shared CPU cores).")
    lines.append("- Every stage trains the recipe's number of steps (epochs x steps per "
                 "epoch), the same on any machine; the steps, seed, machine, thread count, torch "
                 "version and wall time of each file are listed above (from its `meta`). A file "
                 "marked **stopped early** came from a run capped by `--time-budget` and is not "
                 "what the recipe trains. Determinism to expect: docs/ARCHITECTURE.md.")
    lines += ["", "## Evaluation (test split)", ""]
    if table_md.exists():
        body = table_md.read_text(encoding="utf-8").split("\n", 1)[1]
        lines.append(body.replace("\n# ", "\n### ").replace("\n## ", "\n### ").strip())
    else:
        lines.append(f"(not evaluated yet: run `admn eval --config config/train/{cfg.recipe}"
                     ".yaml`)")
    lines += ["", "## SHA-256", "", "```"]
    lines += [f"{d}  {n}" for n, d in sorted(sums.items())]
    lines += ["```", "", "Loader: `from admn_ros.train.weights import load_default_weights` "
              "checks these hashes and the model config.", ""]
    path = dest / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def training_line(meta: dict) -> str:
    """`3000 of 3000 steps, seed 0, <cpu>, 2 threads, torch 2.x, 41.2 min` from a file's meta
    (older files without provenance: the steps only)."""
    step, planned = meta.get("step"), meta.get("steps_planned")
    if step is None:
        return "steps unknown"
    parts = [f"{step} of {planned} steps" if planned else
             f"{step} steps (no step plan recorded: trained under the former recipe, which "
             f"capped each job by wall clock)"]
    if meta.get("stopped_early"):
        parts[0] = f"**stopped early**: {meta.get('stopped', parts[0])}"
    if "seed" in meta:
        parts.append(f"seed {meta['seed']}")
    prov = meta.get("provenance") or {}
    if prov:
        parts += [prov.get("gpu") or prov.get("machine", "?"), f"{prov.get('threads')} threads",
                  f"torch {prov.get('torch')}"]
        if "wall_s" in prov:
            parts.append(f"{prov['wall_s'] / 60:.1f} min")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admn_ros.train.weights",
                                     description="export default weights / write the model card")
    parser.add_argument("action", choices=["export", "card"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-seconds", type=int, default=None)
    parser.add_argument("--only", nargs="*", metavar="RUN_NAME",
                        help="export only these run outputs (e.g. controller_universal)")
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config)
        if args.action == "export":
            for p in export(cfg, args.only):
                print(f"[weights] wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
        else:
            print(f"[weights] wrote {write_card(cfg, args.train_seconds)}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"weights: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
