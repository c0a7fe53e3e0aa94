"""The per-layer line figure shared by the cone and probe plots: one panel per modality, layers on x.

A line is ``(y, fmt, kwargs)`` for ``Axes.plot``; the y axis runs from 0 (or just below the lowest value) to 1.02,
since both figures show scores bounded by 1.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmdiag.report.figures.coerce import xy
from mmdiag.report.figures.style import label, style
from mmdiag.report.figures.svg import to_svg

Line = tuple[Any, str, dict]
Panel = tuple[str, Any, Sequence[Line]]


def layer_figure(panels: Sequence[Panel], title: str, ylabel: str, figure_id: str, legend: dict) -> str:
    """Draw ``panels`` (name, layers, lines) side by side; ``title`` is formatted with the panel's name."""
    with style():
        fig = Figure(figsize=(4.2 * len(panels), 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        lo = 0.0
        for ax, (name, layers, lines) in zip(axes, panels):
            for y, fmt, kwargs in lines:
                x, y = xy(layers, y)
                ax.plot(x, y, fmt, **kwargs)
                lo = min(lo, float(np.nanmin(y)))
            ax.set_title(label(title.format(name=name)))
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="best", **legend)
        axes[0].set_ylabel(ylabel)
        axes[0].set_ylim(lo - 0.02 if lo < 0 else 0.0, 1.02)
        return to_svg(fig, figure_id)
