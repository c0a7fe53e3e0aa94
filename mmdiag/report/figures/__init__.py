"""The report's figures, drawn from results.json ``series`` entries, by name.

Each figure function takes one entry of a results document's ``series``
mapping (DESIGN.md section 5) and returns an inline-ready HTML fragment (an
``<svg>``, or for the attention-over-image view a ``<div>`` of them), or
``None`` when the entry is missing or holds nothing that can be drawn.  Inputs
are untrusted JSON; see :mod:`.coerce` for how they are read.  Text taken from
the data is escaped (by matplotlib's SVG writer or :func:`markupsafe.escape`),
so the fragments can be inserted into the page verbatim.

:data:`FIGURES` is the one registry of these functions: other code names a
figure by its key and looks it up with :func:`figure`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from mmdiag.report.figures.attention import attention_image_svg, attention_plot
from mmdiag.report.figures.cone import cone_plot
from mmdiag.report.figures.gap import embedding_plot, shift_plot
from mmdiag.report.figures.hidden import hidden_plot
from mmdiag.report.figures.probe import probe_plot
from mmdiag.report.figures.tree import tree_svg

__all__ = [
    "FIGURES", "FigureFn", "attention_image_svg", "attention_plot", "cone_plot", "embedding_plot",
    "figure", "hidden_plot", "probe_plot", "shift_plot", "tree_svg",
]

#: A figure function: one ``series`` entry in, an HTML fragment (or None) out.
FigureFn = Callable[[Any], Optional[str]]

FIGURES: dict[str, FigureFn] = {
    "cone_plot": cone_plot,
    "embedding_plot": embedding_plot,
    "shift_plot": shift_plot,
    "probe_plot": probe_plot,
    "tree_svg": tree_svg,
    "attention_plot": attention_plot,
    "attention_image_svg": attention_image_svg,
    "hidden_plot": hidden_plot,
}


def figure(name: str) -> FigureFn:
    """The figure function registered as ``name``; a KeyError naming the known ones otherwise."""
    try:
        return FIGURES[name]
    except KeyError:
        known = ", ".join(sorted(FIGURES))
        raise KeyError(f"no figure named {name!r}; the known figures are: {known}") from None
