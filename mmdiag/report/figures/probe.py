"""The structural-probe figure: NSpr, DSpr, UUAS and root accuracy per layer.

One panel per modality, so that the layer where syntax is best recoverable
(Hewitt & Manning, NAACL 2019; scene trees of Milewski et al. 2022,
arXiv:2203.09306) can be read off at a glance.  The example tree drawn from the
same series is in :mod:`.tree`.
"""
from __future__ import annotations

from typing import Any, Optional

from mmdiag.report.figures.coerce import floats, has_data, modality_items
from mmdiag.report.figures.layers import layer_figure

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
    drawn = [(name, layers, [(y, _PROBE_STYLES[key], {"label": text}) for key, text, y in lines])
             for name, layers, lines in panels]
    return layer_figure(drawn, "{name} probe", "score", "probe-layers", {"ncols": 2})
