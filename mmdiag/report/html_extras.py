"""Results and plots as pytest-html extras (when pytest-html is installed and ``--html`` is given).

Every check's test row gets a small table of what it measured: value, 95% interval, threshold, status
and message per result (both modalities of a parametrised family each in their own row). The plots a
family's specs declare (cone curves, gap map and shift curves, probe scores and tree, attention share
heatmaps and attention over the image, hidden-state maps) are attached to the first test after their
series is published, and again whenever the series has grown since (e.g. the cone plot gets its text
panel once the text layers ran), so the last copy of each plot is complete.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable

from markupsafe import escape

from mmdiag.checkspec import CheckSpec, PlotSpec
from mmdiag.report.fmt import fmt_params, fmt_threshold, fmt_value, is_num

__all__ = ["series_at", "family_plots", "family_svgs", "result_table", "attach"]


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


def _shape(entry: Any, depth: int = 0) -> Any:
    """A cheap signature of a series entry's extent: its keys and list lengths, two levels deep."""
    if isinstance(entry, Mapping):
        return tuple((str(k), _shape(v, depth + 1) if depth < 2 else None) for k, v in sorted(entry.items(), key=str))
    if isinstance(entry, (list, tuple)):
        return ("list", len(entry))
    return None


def result_table(results: Iterable[Any]) -> str:
    """An HTML table of results (``Result`` objects or their JSON): check, params, value, interval, threshold."""
    rows = []
    for r in results:
        doc = r.to_json() if hasattr(r, "to_json") else r
        ci = doc.get("ci") if isinstance(doc.get("ci"), Mapping) else {}
        interval = (f"[{fmt_value(ci['low'])}, {fmt_value(ci['high'])}]"
                    if is_num(ci.get("low")) and is_num(ci.get("high")) else "")
        cells = (doc.get("check"), fmt_params(doc.get("params")), fmt_value(doc.get("value")), interval,
                 fmt_threshold(doc.get("threshold")) or "none (info)", doc.get("status"), doc.get("message") or "")
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("check", "params", "value", "95% interval", "threshold", "status",
                                              "message"))
    return (f'<table class="mmdiag-result" style="border-collapse:collapse;margin:4px 0"><tr>{head}</tr>'
            + "".join(rows) + "</table>")


def attach(report: Any, family: str, session: Any) -> None:
    """Append this test's results, and every family plot that is new or has grown, to ``report.extras``."""
    import pytest_html

    from mmdiag.report.figures import figure

    extras = list(getattr(report, "extras", []))
    table = result_table(r for r in session.results if r.nodeid == report.nodeid)
    if table:
        extras.append(pytest_html.extras.html(table))
    drawn = session.memo("html_extras_plots", dict)
    for plot in family_plots(family, session.checks.active()):
        entry = series_at(session.series, plot.series)
        if entry is None:
            continue
        shape = _shape(entry)
        if drawn.get(plot.id) == shape:
            continue
        try:
            svg = figure(plot.figure)(entry)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            continue  # the HTML report says why; the extras only miss this plot
        if svg:
            drawn[plot.id] = shape
            caption = escape(plot.caption)
            extras.append(pytest_html.extras.html(f'<div class="mmdiag-plot">{svg}<p>{caption}</p></div>'))
    report.extras = extras
