"""The cone-effect figure: mean pairwise cosine per layer, one panel per modality.

It shows where in the network the representations narrow into a cone (Liang et
al. 2022, arXiv:2203.02053) and how the model compares with its control runs,
which the per-layer checks only summarise as numbers.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from mmdiag.report.figures.coerce import floats, has_data, modality_items, xy
from mmdiag.report.figures.style import color, label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["cone_plot"]

_CONTROL_COLORS = ["#555555", "#9a9a9a", "#2ca02c", "#9467bd", "#8c564b"]


def cone_plot(cone: Any) -> Optional[str]:
    """Cone effect per layer, one panel per modality.

    ``cone`` is ``series["cone.layer"]``: ``{modality: {"layers": [...],
    "values": [...], "mean_tokens": [...], "controls": {name: [...]}}}``.
    ``values`` is drawn solid, ``mean_tokens`` dash-dotted, each control dashed.
    """
    panels = []
    for name, entry in modality_items(cone):
        layers = floats(entry.get("layers"))
        lines = []
        values = floats(entry.get("values"))
        if has_data(values):
            lines.append(("pooled", values, "-", color(name, 0), "o"))
        tokens = floats(entry.get("mean_tokens"))
        if has_data(tokens):
            lines.append(("mean over tokens", tokens, "-.", color(name, 0), None))
        controls = entry.get("controls")
        if isinstance(controls, Mapping):
            for i, (cname, cvals) in enumerate(controls.items()):
                arr = floats(cvals)
                if has_data(arr):
                    lines.append((f"control: {cname}", arr, "--",
                                  _CONTROL_COLORS[i % len(_CONTROL_COLORS)], None))
        if lines:
            panels.append((name, layers, lines))
    if not panels:
        return None
    with style():
        fig = Figure(figsize=(4.2 * len(panels), 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        lo = 0.0
        for ax, (name, layers, lines) in zip(axes, panels):
            for text, y, ls, line_color, marker in lines:
                x, y = xy(layers, y)
                ax.plot(x, y, ls, color=line_color, marker=marker, label=label(text))
                lo = min(lo, float(np.nanmin(y)))
            ax.set_title(label(f"{name}: mean pairwise cosine"))
            ax.set_xlabel("layer")
            ax.legend(loc="best")
        axes[0].set_ylabel("cone (mean cosine)")
        axes[0].set_ylim(lo - 0.02 if lo < 0 else 0.0, 1.02)
        return to_svg(fig, "cone-layer")
