"""Headless matplotlib: figures are written as PNG files next to the JSON results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure(ncols: int = 1, nrows: int = 1, *, size: float = 3.6, **kwargs):
    """A new figure with a grid of axes, ``size`` inches per panel."""
    return plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, **kwargs)


def save(fig, path: str | Path) -> str:
    """Save ``fig`` as PNG at ``path`` (folders created), close it, and return the file name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
