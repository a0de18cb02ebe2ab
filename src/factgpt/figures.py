"""Figures: matplotlib on a backend that needs no display, and figures written as atomically as
any other output (factgpt.outputs)."""

from __future__ import annotations

import io
from pathlib import Path

from factgpt.outputs import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures go to files, on machines with no display too
    (imported on first use, so that commands that draw nothing never load matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """A matplotlib figure written as atomically as any other output (format from the suffix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
