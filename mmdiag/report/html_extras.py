"""Plots as pytest-html extras: when pytest-html is installed, a family's plots are attached
to the first check of that family in its report."""
from __future__ import annotations

from typing import Any, Callable, Optional

PLOTS: dict[str, list[tuple[str, str]]] = {
    "cone": [("cone.layer", "cone_plot")],
    "gap": [("embedding_2d", "embedding_plot"), ("gap.shift", "shift_plot")],
    "probe": [("probe", "probe_plot")],
    "attention": [("attention.share", "attention_plot")],
}


def family_svgs(family: str, series: dict) -> list[str]:
    """The inline SVGs of one family's plots that the run's series can draw."""
    from mmdiag.report import plots

    svgs = []
    for key, name in PLOTS.get(family, []):
        if key in series:
            draw: Callable[[Any], Optional[str]] = getattr(plots, name)
            svg = draw(series[key])
            if svg:
                svgs.append(svg)
    return svgs


def attach(report: Any, family: str, session: Any) -> None:
    """Append the family's plots to ``report.extras`` once per run."""
    import pytest_html

    attached = session._cache.setdefault("html_extras", set())
    if family in attached:
        return
    svgs = family_svgs(family, session.series)
    if not svgs:
        return
    attached.add(family)
    extras = list(getattr(report, "extras", []))
    extras.extend(pytest_html.extras.html(f"<div>{svg}</div>") for svg in svgs)
    report.extras = extras
