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
