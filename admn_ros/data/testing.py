"""Helpers for tests across the project (small synthetic recordings)."""

from __future__ import annotations

from pathlib import Path

from admn_ros.data.generate import generate_recording


def make_tiny_recording(tmp_path: str | Path, frames: int = 40, seed: int = 0,
                        scene: str = "default") -> Path:
    """Generate a small recording under `tmp_path` (well under 3 s) and return its directory.

    Reuses an identical recording already generated there (same frames, seed and scene).
    """
    out = Path(tmp_path) / f"rec_{scene}_{frames}f_s{seed}"
    if (out / "metadata.json").exists():
        return out
    return generate_recording(out, frames=frames, seed=seed, scene=scene)
