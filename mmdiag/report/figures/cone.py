"""The cone-effect figure: mean pairwise cosine per layer, one panel per modality.

It shows where in the network the representations narrow into a cone (Liang et
al. 2022, arXiv:2203.02053) and how the model compares with its control runs,
which the per-layer checks only summarise as numbers.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from mmdiag.report.figures.coerce import floats, has_data, modality_items
from mmdiag.report.figures.layers import layer_figure
from mmdiag.report.figures.style import color, label

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
    drawn = [(name, layers, [(y, ls, {"color": line_color, "marker": marker, "label": label(text)})
                             for text, y, ls, line_color, marker in lines]) for name, layers, lines in panels]
    return layer_figure(drawn, "{name}: mean pairwise cosine", "cone (mean cosine)", "cone-layer", {})
