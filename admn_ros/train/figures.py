"""Writing the evaluation report's figures (one place for layout, resolution and cleanup)."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close a report figure; returns `path`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def panel_row(n: int, width: float = 5.0, height: float = 4.0):
    """A report figure with n panels side by side (headless backend): `(fig, axes)`, axes a
    list of n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])
