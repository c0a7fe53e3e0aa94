"""``mmdiag report A.json B.json C.json -o trend.html``: each check across several runs, in one offline page.

The runs are taken in the order given (oldest release first, say). For every check: a figure of its
value across the runs with each run's 95% interval (per-layer checks: one line per run over the layers)
and the threshold, then a table with one row per result (check and params) and one column per run,
coloured by status. When the runs measured different models the page says so, and two runs are also
shown side by side with the difference.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from markupsafe import Markup

from mmdiag.atomic import atomic_write_text
from mmdiag.checkspec import FAMILIES
from mmdiag.errors import MMDiagError
from mmdiag.report.fmt import fmt_params, fmt_threshold, fmt_value, is_num
from mmdiag.report.verdict import Verdict

__all__ = ["render_trend", "write_trend", "run_labels"]


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short unique names of the runs: the file names, or ``folder/name`` when those repeat."""
    labels = [p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}: {lab}" for i, lab in enumerate(labels)]
    return labels


def _results(doc: Mapping) -> list[Mapping]:
    raw = doc.get("results")
    return [r for r in raw if isinstance(r, Mapping)] if isinstance(raw, list) else []


def _key(r: Mapping) -> tuple[str, str]:
    params = r.get("params") if isinstance(r.get("params"), Mapping) else {}
    return str(r.get("check")), fmt_params(params)


def _num(v: Any) -> Any:
    return float(v) if is_num(v) else None


def _ci(r: Mapping) -> tuple[Any, Any]:
    ci = r.get("ci") if isinstance(r.get("ci"), Mapping) else {}
    return _num(ci.get("low")), _num(ci.get("high"))


def _cell(r: Any) -> dict:
    if not isinstance(r, Mapping):
        return {"value": "", "interval": "", "status": "", "css": "none"}
    lo, hi = _ci(r)
    status = str(r.get("status") or "unknown")
    return {"value": fmt_value(r.get("value")), "status": status, "css": status,
            "interval": f"[{fmt_value(lo)}, {fmt_value(hi)}]" if lo is not None and hi is not None else ""}


def _figures(docs: Sequence[Mapping], labels: list[str]) -> dict[str, list[Markup]]:
    from mmdiag.report.figures.trend import trend_layers_svg, trend_runs_svg

    by_check: dict[str, list[list[Mapping]]] = {}
    for j, doc in enumerate(docs):
        for r in _results(doc):
            if is_num(r.get("value")):
                by_check.setdefault(str(r.get("check")), [[] for _ in docs])[j].append(r)
    out: dict[str, list[Markup]] = {}
    for check, per_run in by_check.items():
        threshold = next((r["threshold"] for rows in per_run for r in rows if isinstance(r.get("threshold"), Mapping)),
                         None)
        layered = all(isinstance((r.get("params") or {}).get("layer"), int) for rows in per_run for r in rows)
        title = check
        if layered:
            curves: dict[str, list] = {}
            for j, rows in enumerate(per_run):
                for r in sorted(rows, key=lambda r: r["params"]["layer"]):
                    group = fmt_params({k: v for k, v in r["params"].items() if k != "layer"})
                    entry = curves.setdefault(group, [([], [], [], []) for _ in docs])[j]
                    lo, hi = _ci(r)
                    for lst, v in zip(entry, (r["params"]["layer"], _num(r.get("value")), lo, hi)):
                        lst.append(v)
            svg = trend_layers_svg(check, title, labels, curves, threshold, "layer")
        else:
            groups: dict[str, list] = {}
            for j, rows in enumerate(per_run):
                for r in rows:
                    groups.setdefault(fmt_params(r.get("params")), [(None, None, None) for _ in docs])[j] = (
                        _num(r.get("value")), *_ci(r))
            svg = trend_runs_svg(check, title, labels, groups, threshold)
        if svg:
            out.setdefault(check.split(".", 1)[0], []).append(Markup(svg))
    return out


def _context(docs: Sequence[Mapping], labels: list[str], paths: Sequence[Path]) -> dict:
    runs = []
    for doc, lab, path in zip(docs, labels, paths):
        model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
        data = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}
        run = doc.get("run") if isinstance(doc.get("run"), Mapping) else {}
        verdict = Verdict.of(_results(doc))
        runs.append({"label": lab, "path": str(path), "model": str(model.get("spec") or "?"),
                     "data": str(data.get("spec") or "?"), "n": fmt_value(data.get("n")),
                     "started": str(run.get("started") or ""), "mmdiag": str(run.get("mmdiag") or ""),
                     "outcome": verdict.outcome, "sentence": verdict.sentence()})
    keys: dict[tuple[str, str], list] = {}
    for j, doc in enumerate(docs):
        for r in _results(doc):
            keys.setdefault(_key(r), [None] * len(docs))[j] = r
    rows = []
    for (check, params), per_run in keys.items():
        thr = next((fmt_threshold(r.get("threshold")) for r in per_run if isinstance(r, Mapping)
                    and isinstance(r.get("threshold"), Mapping)), "")
        row = {"check": check, "params": params, "threshold": thr, "cells": [_cell(r) for r in per_run], "delta": ""}
        if len(docs) == 2 and all(isinstance(r, Mapping) and is_num(r.get("value")) for r in per_run):
            row["delta"] = f"{per_run[1]['value'] - per_run[0]['value']:+.3g}"
        rows.append(row)
    models = sorted({r["model"] for r in runs})
    figures = _figures(docs, labels)
    families = [{"name": f, "title": FAMILIES.get(f, f), "figures": figs} for f, figs in
                sorted(figures.items(), key=lambda kv: list(FAMILIES).index(kv[0]) if kv[0] in FAMILIES else 99)]
    return {"runs": runs, "rows": rows, "families": families, "models": models,
            "side_by_side": len(docs) == 2, "different_models": len(models) > 1}


def render_trend(docs: Sequence[Mapping], paths: Sequence[Path]) -> str:
    """The trend page of several results documents (in the order given)."""
    from mmdiag.report.html import _ENV, _LOADER

    for doc, path in zip(docs, paths):
        if not isinstance(doc, Mapping):
            raise MMDiagError(f"{path}: a results document must be a JSON object")
    css, _p, _u = _LOADER.get_source(_ENV, "report.css")
    js, _p, _u = _LOADER.get_source(_ENV, "report.js")
    labels = run_labels(list(paths))
    return _ENV.get_template("trend.html.j2").render(css=Markup(css), js=Markup(js),
                                                     **_context(docs, labels, list(paths)))


def write_trend(docs: Sequence[Mapping], paths: Sequence[Path], out: Union[str, os.PathLike]) -> Path:
    """Render and write the trend page atomically; returns its path."""
    return atomic_write_text(out, render_trend(docs, paths))
