"""The structural-probe figure: NSpr, DSpr, UUAS and root accuracy per layer.

One panel per modality, so that the layer where syntax is best recoverable
(Hewitt & Manning, NAACL 2019; scene trees of Milewski et al. 2022,
arXiv:2203.09306) can be read off at a glance.  The example tree drawn from the
same series is in :mod:`.tree`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from mmdiag.report.figures.coerce import floats, has_data, modality_items, xy
from mmdiag.report.figures.style import label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["probe_plot"]

_PROBE_METRICS = [("nspr", "NSpr"), ("dspr", "DSpr"), ("uuas", "UUAS"), ("root_acc", "root acc")]
_PROBE_STYLES = {"nspr": "o-", "dspr": "s-", "uuas": "^-", "root_acc": "D-"}


def probe_plot(probe: Any) -> Optional[str]:
    """Structural-probe scores per layer (NSpr, DSpr, UUAS, root acc) per modality.

    ``probe`` is ``series["probe"]``: ``{modality: {"layers": [...], "nspr":
    [...], "dspr": [...], "uuas": [...], "root_acc": [...]}, "example": ...}``
    (metrics of Hewitt & Manning, NAACL 2019; scene trees of Milewski et al.
    2022, arXiv:2203.09306).
    """
    panels = []
    for name, entry in modality_items(probe, skip=("example",)):
        layers = floats(entry.get("layers"))
        lines = [(key, text, floats(entry.get(key))) for key, text in _PROBE_METRICS]
        lines = [(k, text, y) for k, text, y in lines if has_data(y)]
        if lines:
            panels.append((name, layers, lines))
    if not panels:
        return None
    with style():
        fig = Figure(figsize=(4.2 * len(panels), 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        lo = 0.0
        for ax, (name, layers, lines) in zip(axes, panels):
            for key, text, y in lines:
                x, y = xy(layers, y)
                ax.plot(x, y, _PROBE_STYLES[key], label=text)
                lo = min(lo, float(np.nanmin(y)))
            ax.set_title(label(f"{name} probe"))
            ax.set_xlabel("layer")
            ax.legend(loc="best", ncols=2)
        axes[0].set_ylabel("score")
        axes[0].set_ylim(lo - 0.02 if lo < 0 else 0.0, 1.02)
        return to_svg(fig, "probe-layers")
