"""Plots as pytest-html extras: when pytest-html is installed, a family's plots (as its checks' specs
declare them) are attached to the first check of that family in its report."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from mmdiag.checkspec import CheckSpec, PlotSpec


def series_at(series: Mapping, path: Iterable[str]) -> Any:
    """The value at ``path`` in a results document's ``series`` (None when any part is missing)."""
    value: Any = series
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def family_plots(family: str, specs: Iterable[CheckSpec]) -> list[PlotSpec]:
    """The plots the family's checks declare, each once, in declaration order."""
    plots: dict[str, PlotSpec] = {}
    for spec in specs:
        if spec.family == family:
            for plot in spec.plots:
                plots.setdefault(plot.id, plot)
    return list(plots.values())


def family_svgs(family: str, series: Mapping, specs: Iterable[CheckSpec]) -> list[str]:
    """The inline SVGs of one family's plots that the run's series can draw."""
    from mmdiag.report.figures import figure

    svgs = []
    for plot in family_plots(family, specs):
        entry = series_at(series, plot.series)
        if entry is not None:
            svg = figure(plot.figure)(entry)
            if svg:
                svgs.append(svg)
    return svgs


def attach(report: Any, family: str, session: Any) -> None:
    """Append the family's plots to ``report.extras`` once per run."""
    import pytest_html

    attached = session.memo("html_extras", set)
    if family in attached:
        return
    svgs = family_svgs(family, session.series, session.checks.active())
    if not svgs:
        return
    attached.add(family)
    extras = list(getattr(report, "extras", []))
    extras.extend(pytest_html.extras.html(f"<div>{svg}</div>") for svg in svgs)
    report.extras = extras
