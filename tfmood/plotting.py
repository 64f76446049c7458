"""PNG figures without pyplot: matplotlib's Agg canvas directly, so no global backend changes.

    figure = new_figure((width, height))   a matplotlib Figure on an Agg canvas
    save_png(figure, path)                 written atomically (also to gs:// paths)
"""

from __future__ import annotations

import os
from pathlib import Path

from tfmood import atomic


def new_figure(size: tuple[float, float]):
    """A matplotlib `Figure` of `size` inches drawn on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write `figure` as a PNG file, atomically; returns the path."""
    with atomic.open_binary(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return Path(path)
