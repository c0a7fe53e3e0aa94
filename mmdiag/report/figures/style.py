"""The shared look of the matplotlib figures: rc settings, colours, labels, grids.

Every figure is drawn inside :func:`style` so that the report looks the same
whatever the user's matplotlib configuration is, and so that the SVG output is
reproducible (fixed hash salt, text kept as text).  The settings are applied
with :func:`matplotlib.rc_context`, so the global state is restored afterwards.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from matplotlib import rc_context

__all__ = ["MODALITY_COLORS", "color", "grid", "label", "style"]

MODALITY_COLORS = {"image": "#1f77b4", "text": "#ff7f0e"}
_FALLBACK_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "mmdiag",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "lines.markersize": 3.5,
    "path.simplify": True,
    "text.usetex": False,
}


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, for the duration of one figure."""
    with rc_context(_RC):
        yield


def label(value: Any) -> str:
    """A data string safe for matplotlib text: ``$`` must not start mathtext."""
    return str(value).replace("$", r"\$")


def color(name: str, i: int) -> str:
    """The colour of modality ``name`` (the ``i``-th drawn): fixed for image and text."""
    return MODALITY_COLORS.get(name, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])


def grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, cols) of a small-multiples grid of ``n`` panels, at most ``max_cols`` wide."""
    cols = max(1, min(n, max_cols))
    return (n + cols - 1) // cols, cols
