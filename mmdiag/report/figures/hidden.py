"""The hidden-states figure: each layer's states projected to 2-D, by modality.

Small multiples over the layers show where image and text representations
separate or mix, which the attention-share and cone numbers only hint at.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from mmdiag.report.figures.coerce import modality_values, points, subsample
from mmdiag.report.figures.style import color, grid, label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["MAX_PANELS", "MAX_POINTS_PANEL", "hidden_plot"]

#: Most points per modality in each hidden-state panel.
MAX_POINTS_PANEL = 120
#: Most hidden-state panels (layers are evenly subsampled beyond).
MAX_PANELS = 12


def _layer_keys(hidden: Mapping, by_layer: Mapping) -> list[Any]:
    """The keys of ``by_layer`` in the order of ``hidden["layers"]``, else sorted numerically."""
    keys: list[Any] = []
    layers = hidden.get("layers")
    if isinstance(layers, (list, tuple)) and layers:
        for layer in layers:
            for k in (str(layer), layer):
                if isinstance(k, (str, int)) and k in by_layer:
                    keys.append(k)
                    break
        return keys

    def order(k: Any) -> tuple[int, float, str]:
        try:
            return (0, float(k), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(k))
    return sorted(by_layer, key=order)


def hidden_plot(hidden: Any) -> Optional[str]:
    """Hidden states per layer in 2-D, small multiples coloured by modality.

    ``hidden`` is ``series["hidden_2d"]``: ``{"layers": [...], "points":
    {"<layer>": {"image": [[x, y], ...], "text": [...]}}}`` (layer keys may be
    strings, as JSON makes them, or ints).  At most ``MAX_PANELS`` layers are
    drawn (evenly chosen), each with at most ``MAX_POINTS_PANEL`` points per
    modality.
    """
    if not isinstance(hidden, Mapping) or not isinstance(hidden.get("points"), Mapping):
        return None
    by_layer = hidden["points"]
    panels = []
    for k in _layer_keys(hidden, by_layer):
        clouds = [(name, points(v)) for name, v in modality_values(by_layer.get(k))]
        clouds = [(n, p) for n, p in clouds if p is not None]
        if clouds:
            panels.append((str(k), clouds))
    if not panels:
        return None
    if len(panels) > MAX_PANELS:
        idx = np.unique(np.linspace(0, len(panels) - 1, MAX_PANELS).round().astype(int))
        panels = [panels[i] for i in idx]
    rows, cols = grid(len(panels), 4)
    with style():
        fig = Figure(figsize=(2.5 * cols, 2.4 * rows + 0.3), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        seen: dict[str, Any] = {}
        for ax, (layer, clouds) in zip(axes.flat, panels):
            for i, (name, pts) in enumerate(clouds):
                sub = subsample(pts, MAX_POINTS_PANEL)
                h = ax.scatter(sub[:, 0], sub[:, 1], s=6, alpha=0.6, linewidths=0,
                               color=color(name, i))
                seen.setdefault(name, h)
            ax.set_title(label(f"layer {layer}"))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("PC 1", fontsize=8)
            ax.set_ylabel("PC 2", fontsize=8)
        fig.legend(list(seen.values()), [label(n) for n in seen], loc="outside lower center",
                   ncols=max(1, len(seen)), markerscale=2.0)
        method = hidden.get("method")
        if isinstance(method, str) and method:
            fig.suptitle(label(f"hidden states per layer ({method})"), fontsize=10)
        return to_svg(fig, "hidden-2d")
