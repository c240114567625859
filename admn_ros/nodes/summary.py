"""summary.json and the two plots of `admn run`, from what the run recorded; no ROS here.

The counters come from each node's last /diagnostics (`key=value` strings, cumulative), so
`admn run` needs no access to the nodes themselves (they run in their own processes).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# what the fusion node alone can drop (+ `error_<type>`: a job that raised); its other reasons
# (bad input, clock jumps) concern samples the controller has already counted
FUSION_REASONS = ("no_sample", "bad_allocation", "model_error", "stale", "queue_full")


@dataclass
class RunRecord:
    """What `admn run` collected (stamps in ns on the recording's clock)."""

    frames_in: int = 0
    samples_synced: int = 0
    poses: list[dict] = field(default_factory=list)  # stamp_ns, latency_ms, x_cm, z_cm
    allocations: list[dict] = field(default_factory=list)  # stamp_ns, budget, active [M*D]
    budgets: list[tuple[int, int]] = field(default_factory=list)  # (stamp_ns, layers)
    # "in_force" | "power" | "deadline" -> [(stamp_ns, layers, reason)] as published
    budget_log: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    truth: list[tuple[int, float, float]] = field(default_factory=list)  # (stamp_ns, x_m, z_m)
    dropped: Counter = field(default_factory=Counter)
    modalities: list[str] = field(default_factory=list)
    layers_per_modality: int = 0
    windows: list[dict] = field(default_factory=list)  # injection windows (start/end ns, label)
    backbone_ms_p50: float | None = None
    extra: dict = field(default_factory=dict)


def dropped_counts(values: dict[str, str]) -> Counter:
    """`dropped.<reason>` entries of one node's diagnostics -> Counter."""
    return Counter({k.removeprefix("dropped."): int(v) for k, v in values.items()
                    if k.startswith("dropped.")})


def topic_counts(values: dict[str, str]) -> dict[str, dict]:
    """Per sensor topic of one node's diagnostics (`arrival.Arrivals.values`): received,
    good, lost and drops by reason as numbers, and the depth invalid share."""
    out: dict[str, dict] = {}
    for k, v in values.items():
        if k.startswith("topic."):
            out.setdefault(k.removeprefix("topic."), {}).update(
                {name: int(n) for name, n in (item.split("=") for item in v.split())})
        elif k.startswith("depth_invalid."):
            out.setdefault(k.removeprefix("depth_invalid."), {})["depth_invalid"] = float(v)
    return out


def apply_diagnostics(rec: RunRecord, last: dict[str, dict[str, str]]) -> None:
    """Fill the record's totals from the last diagnostics of each node, keyed by executable
    (`bag_player`, `controller`, `fusion`, `corruption_injector`)."""
    player, ctl, fus = (last.get(k, {}) for k in ("bag_player", "controller", "fusion"))
    rec.frames_in = int(player.get("frames", 0))
    rec.samples_synced = int(ctl.get("samples", 0))
    rec.dropped = dropped_counts(ctl)
    rec.dropped.update({k: v for k, v in dropped_counts(fus).items()
                        if k in FUSION_REASONS or k.startswith("error_")})
    if int(fus.get("waiting", 0)):  # allocations still waiting for frames at the end
        rec.dropped["no_sample"] += int(fus["waiting"])
    if int(ctl.get("held", 0)):  # camera sets still waiting for their radar at the end
        rec.dropped["end_of_bag"] += int(ctl["held"])
    backbone = float(fus.get("backbone_ms_p50", "nan"))
    rec.backbone_ms_p50 = None if np.isnan(backbone) else backbone
    rec.extra["sensors"] = json.loads(fus.get("sensor_positions", "[]"))
    rec.extra["frames_received"] = {"controller": int(ctl.get("received", 0)),
                                    "fusion": int(fus.get("received", 0))}
    rec.extra["topics"] = topic_counts(ctl)
    if "corruption_injector" in last:
        rec.windows = json.loads(last["corruption_injector"].get("windows", "[]"))
    rec.extra["graph_cpu_s"] = round(sum(float(v.get("cpu_s", 0.0)) for v in last.values()), 2)


def p(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def errors_cm(poses: list[dict], truth: list[tuple[int, float, float]]) -> np.ndarray:
    """Euclidean error of each pose vs ground truth interpolated at its stamp (cm)."""
    if not poses or len(truth) < 2:
        return np.zeros(0)
    tr = np.array(sorted(truth))
    t = np.array([r["stamp_ns"] for r in poses], float)
    inside = (t >= tr[0, 0]) & (t <= tr[-1, 0])
    gx = np.interp(t, tr[:, 0], tr[:, 1]) * 100.0
    gz = np.interp(t, tr[:, 0], tr[:, 2]) * 100.0
    px = np.array([r["x_cm"] for r in poses])
    pz = np.array([r["z_cm"] for r in poses])
    return np.hypot(px - gx, pz - gz)[inside]


def blocks_per_modality(rec: RunRecord) -> np.ndarray:
    """Active blocks [N, M] of each allocation, per modality."""
    act = np.array([a["active"] for a in rec.allocations], float)
    return act.reshape(len(act), len(rec.modalities), -1).sum(-1)


def by_modality(rec: RunRecord, values: np.ndarray) -> dict[str, float]:
    """One value per modality [M] -> {modality: value}, rounded for the summary."""
    return {m: round(float(v), 3) for m, v in zip(rec.modalities, values, strict=True)}


def injected_shares(rec: RunRecord, per: np.ndarray) -> dict:
    """Share of the active blocks per modality inside and outside the injection windows, per
    budget (a budget that changes during a window would otherwise move the shares too)."""
    stamps = np.array([a["stamp_ns"] for a in rec.allocations])
    budgets = np.array([a["budget"] for a in rec.allocations])
    inside = np.zeros(len(stamps), bool)
    for w in rec.windows:
        inside |= (stamps >= w["start_ns"]) & (stamps < w["end_ns"])
    share = per / per.sum(1, keepdims=True)

    by_budget = {}
    for b in sorted(set(budgets[inside].tolist())):
        at, out = inside & (budgets == b), ~inside & (budgets == b)
        by_budget[str(b)] = {
            "samples_inside": int(at.sum()), "share_inside": by_modality(rec, share[at].mean(0)),
            "samples_outside": int(out.sum()),
            "share_outside": by_modality(rec, share[out].mean(0)) if out.any() else {}}
    return {"windows": [w["label"] for w in rec.windows], "by_budget": by_budget}


def latency_stats(poses: list[dict]) -> dict:
    """p50 / p95 / max of the pose latencies (ms), over the run and its first and last third
    (in stamp order: does latency grow as the run goes on?)."""
    lat = [r["latency_ms"] for r in sorted(poses, key=lambda r: r["stamp_ns"])]
    third = len(lat) // 3

    def stats(v: list[float]) -> dict:
        return {"p50": p(v, 50), "p95": p(v, 95), "max": round(max(v), 3) if v else None}

    return {**stats(lat), "first_third": stats(lat[:third]),
            "last_third": stats(lat[len(lat) - third:] if third else [])}


def budget_changes_by_reason(log: list[tuple[int, int, str]]) -> dict[str, int]:
    """Changes of the budget in force, by the limit that made them (`power`, `deadline`, ...:
    the reason's prefix)."""
    out: Counter[str] = Counter()
    for (_, a, _), (_, b, why) in itertools.pairwise(sorted(log)):
        if a != b:
            out[why.split(":", 1)[0]] += 1
    return dict(sorted(out.items()))


def real_time(rec: RunRecord) -> dict:
    """Sustained rate (poses per second of recording time) and the graph's CPU seconds per
    localised sample (every node process): during the replay, and with start-up included."""
    stamps = sorted(r["stamp_ns"] for r in rec.poses)
    span_s = (stamps[-1] - stamps[0]) / 1e9 if len(stamps) > 1 else 0.0
    cpu = rec.extra.get("graph_cpu_s")
    replay = cpu - rec.extra["graph_cpu_s_at_start"] if cpu and \
        "graph_cpu_s_at_start" in rec.extra else None

    def per_sample(seconds: float | None) -> float | None:
        return round(seconds / len(stamps), 4) if seconds and stamps else None

    return {"sustained_rate_hz": round((len(stamps) - 1) / span_s, 3) if span_s else None,
            "cpu_s_per_sample": per_sample(replay),
            "cpu_s_per_sample_with_startup": per_sample(cpu)}


def summarise(rec: RunRecord) -> dict:
    err = errors_cm(rec.poses, rec.truth)
    layers = [sum(a["active"]) for a in rec.allocations]
    budgets = [b for _, b in sorted(rec.budgets)]
    changes = sum(1 for a, b in itertools.pairwise(budgets) if a != b)
    per_mod, injected = {}, {}
    if rec.allocations and rec.modalities:
        per = blocks_per_modality(rec)
        per_mod = by_modality(rec, per.mean(0))
        if rec.windows:
            injected = injected_shares(rec, per)
    return {
        "frames_in": rec.frames_in,
        "samples_synced": rec.samples_synced,
        "poses_out": len(rec.poses),
        "allocations_out": len(rec.allocations),
        "dropped": dict(sorted(rec.dropped.items())),
        "stale_drops": rec.dropped.get("stale", 0),  # too old at their turn: not localised
        "mean_error_cm": round(float(err.mean()), 2) if err.size else None,
        "mean_active_layers": round(float(np.mean(layers)), 3) if layers else None,
        "mean_active_layers_per_modality": per_mod,
        "injected": injected,
        "budget_changes": changes,
        "budget_changes_by_reason": budget_changes_by_reason(rec.budget_log.get("in_force", [])),
        "budgets": sorted(set(budgets)),
        "latency_ms": latency_stats(rec.poses),
        **real_time(rec),
        "controller_ms_p50": p([a["controller_ms"] for a in rec.allocations], 50),
        "backbone_ms_p50": rec.backbone_ms_p50,
        **rec.extra,
    }


def write_summary(out: Path, summary: dict) -> Path:
    path = Path(out) / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def plot_trajectory(rec: RunRecord, path: Path, arena=(-2.0, 2.0, -2.0, 2.0),
                    sensors: list[float] | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    if rec.truth:
        tr = np.array(sorted(rec.truth))
        ax.plot(tr[:, 1], tr[:, 2], color="0.3", lw=1.5, label="ground truth")
    if rec.poses:
        budget_at = _budget_lookup(rec)
        x = [r["x_cm"] / 100 for r in rec.poses]
        z = [r["z_cm"] / 100 for r in rec.poses]
        c = [budget_at(r["stamp_ns"]) for r in rec.poses]
        sc = ax.scatter(x, z, c=c, s=10, cmap="viridis", label="prediction")
        fig.colorbar(sc, ax=ax, label="layer budget", shrink=0.8)
    if sensors:
        ax.scatter(sensors[0::3], sensors[2::3], marker="s", color="tab:orange", label="nodes")
    ax.set_xlim(arena[0] - 0.6, arena[1] + 0.6)
    ax.set_ylim(arena[2] - 0.6, arena[3] + 0.6)
    ax.add_patch(plt.Rectangle((arena[0], arena[2]), arena[1] - arena[0], arena[3] - arena[2],
                               fill=False, ls="--", color="0.6"))
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_aspect("equal")
    return _save(fig, ax, path, "ADMN: prediction vs ground truth")


def _budget_lookup(rec: RunRecord):
    allocs = {a["stamp_ns"]: a["budget"] for a in rec.allocations}
    return lambda stamp: allocs.get(stamp, np.nan)


def plot_allocation(rec: RunRecord, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    if rec.allocations:
        t0 = min(a["stamp_ns"] for a in rec.allocations)
        t = np.array([(a["stamp_ns"] - t0) / 1e9 for a in rec.allocations])
        per = blocks_per_modality(rec)
        ax.stackplot(t, per.T, labels=rec.modalities, alpha=0.8)
        ax.step(t, [a["budget"] for a in rec.allocations], where="post", color="k", lw=1.5,
                label="budget in force")
        for kind, style in (("power", dict(color="tab:orange", ls="--")),
                            ("deadline", dict(color="tab:red", ls=":"))):
            log = sorted(rec.budget_log.get(kind, []))
            if log:  # held from each publication to the end of the allocations
                tb = [(s - t0) / 1e9 for s, _, _ in log] + [t[-1]]
                ax.step(tb, [b for _, b, _ in log] + [log[-1][1]], where="post", lw=1.5,
                        label=f"{kind} budget", **style)
        for w in rec.windows:
            ax.axvspan((w["start_ns"] - t0) / 1e9, (w["end_ns"] - t0) / 1e9, color="red",
                       alpha=0.12)
            ax.text((w["start_ns"] - t0) / 1e9, ax.get_ylim()[1] * 0.95, w["label"],
                    fontsize=7, color="darkred", va="top")
    ax.set_xlabel("recording time (s)")
    ax.set_ylabel("active blocks")
    return _save(fig, ax, path, "Layers per modality (stacked), power and deadline budgets, "
                                "injected corruptions (red)")


def _save(fig, ax, path, title: str):
    """Legend, title, layout; write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
