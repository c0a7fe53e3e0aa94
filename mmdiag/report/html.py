"""The self-contained HTML report, rendered from a results.json document only.

``render_html(doc)`` turns a results document (DESIGN.md section 5, schema
``mmdiag/1``) into one HTML page: a header with the model, data and run, a
summary of statuses, a table of every result grouped by check family, and per
family the plots drawn from ``doc["series"]`` (see :mod:`mmdiag.report.figures`).
Because it reads nothing but the document, ``mmdiag report results.json`` can
re-render the page of any earlier run.

The page works offline: no scripts, no external resources (plots are inline
SVG, the CSS is inline).  The page template and its CSS are the files
``templates/report.html.j2`` and ``templates/report.css`` next to this module.
Every string taken from the document is escaped by jinja2's autoescaping; the
only markup inserted verbatim is the CSS file and the SVG produced by
:mod:`mmdiag.report.figures`, which escapes the data text it contains.

Any key below ``schema``/``model``/``data``/``results`` may be missing, and any
value may be ``null`` (NaN is written as ``null``): the page shows what exists.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import jinja2
from markupsafe import Markup

from mmdiag.atomic import atomic_write_text
from mmdiag.checkspec import FAMILIES, FAMILY_ORDER, CheckSpec, PlotSpec
from mmdiag.errors import MMDiagError
from mmdiag.registry import builtin_specs
from mmdiag.report.banner import SEVERITY, banner, row_anchor
from mmdiag.report.checkplots import check_figures
from mmdiag.report.explorer import explorer_context
from mmdiag.report.figures import figure
from mmdiag.report.fmt import details_rows, fmt_params, fmt_params_count, fmt_seconds, fmt_threshold, fmt_value, is_num
from mmdiag.schema import SCHEMA

__all__ = ["render_html", "write_html", "SCHEMA", "FAMILY_ORDER", "STATUS_ORDER"]

#: Statuses in summary order; any other status string is shown after them.
STATUS_ORDER = ("pass", "warn", "fail", "error", "info", "skip")

def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _specs(doc: Mapping) -> list[CheckSpec]:
    """The built-in checks' specs, then the document's own checks (a user's) as results.json records them."""
    specs = {s.name: s for s in builtin_specs()}
    recorded = doc.get("checks") if isinstance(doc.get("checks"), Mapping) else {}
    for name, facts in recorded.items():
        if name not in specs and isinstance(facts, Mapping):
            try:
                specs[name] = CheckSpec.from_json(name, facts)
            except (MMDiagError, KeyError, TypeError, ValueError):
                continue  # a malformed entry: the results still show, without the check's plots
    return list(specs.values())


def _plots(doc: Mapping) -> list[tuple[str, PlotSpec]]:
    """(family, plot) for every plot the checks declare, each id once, in family then declaration order."""
    seen: dict[str, tuple[str, PlotSpec]] = {}
    for spec in _specs(doc):
        for plot in spec.plots:
            seen.setdefault(plot.id, (spec.family, plot))
    return list(seen.values())


#: The page template and its style sheet, files in ``mmdiag/report/templates`` (shipped in the wheel).
_LOADER = jinja2.PackageLoader("mmdiag.report", "templates")
_ENV = jinja2.Environment(loader=_LOADER, autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=False, lstrip_blocks=False)
_TEMPLATE_NAME = "report.html.j2"
_CSS_NAME = "report.css"
_JS_NAME = "report.js"


@functools.cache
def _page() -> tuple[jinja2.Template, Markup, Markup]:
    """The compiled page template, the CSS and the script it inlines verbatim (read once, on first render)."""
    css, _path, _uptodate = _LOADER.get_source(_ENV, _CSS_NAME)
    js, _path, _uptodate = _LOADER.get_source(_ENV, _JS_NAME)
    return _ENV.get_template(_TEMPLATE_NAME), Markup(css), Markup(js)


def _short(value: Any, n: int = 16) -> str:
    text = str(value)
    return text if len(text) <= n else text[:n] + "…"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "other"


def _status_css(status: str) -> str:
    return status if status in STATUS_ORDER else "other"


def _count_text(counter: Counter) -> str:
    order = [s for s in STATUS_ORDER if counter.get(s)] + sorted(s for s in counter if s not in STATUS_ORDER)
    return ", ".join(f"{counter[s]} {s}" for s in order)


# --------------------------------------------------------------------------
# the view model
# --------------------------------------------------------------------------

def _fmt_delta(delta: float) -> str:
    return f"{delta:+.3g}"


def _delta_css(delta: float, threshold: Any) -> str:
    """'worse' when the delta moves towards breaching the threshold, else 'better'."""
    if delta == 0 or not isinstance(threshold, Mapping):
        return ""
    op = threshold.get("op")
    if op in ("<=", "<"):
        return "worse" if delta > 0 else "better"
    if op in (">=", ">"):
        return "worse" if delta < 0 else "better"
    return ""


def _timings(timings: Mapping) -> str:
    """``load 0.26 s · forward 4.2 s · checks: cone 0.23 s, gap 1.6 s`` (nested mappings in full)."""
    parts = []
    for key, value in timings.items():
        name = re.sub(r"_s$", "", str(key))
        if isinstance(value, Mapping):
            inner = ", ".join(f"{re.sub(r'_s$', '', str(k))} {fmt_seconds(v)}" for k, v in value.items())
            parts.append(f"{name}: {inner}")
        elif is_num(value):
            parts.append(f"{name} {fmt_seconds(value)}")
        else:
            parts.append(f"{name} {value}")
    return " · ".join(parts)


def _meta(doc: Mapping) -> list[tuple[str, str, bool]]:
    model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
    data = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}
    run = doc.get("run") if isinstance(doc.get("run"), Mapping) else {}
    rows: list[tuple[str, str, bool]] = []

    def add(label: str, value: Any, mono: bool = False) -> None:
        if value is not None and value != "":
            rows.append((label, value if isinstance(value, str) else fmt_value(value), mono))

    add("model", model.get("spec"), True)
    add("family", model.get("family"))
    if model.get("n_params") is not None:
        add("parameters", fmt_params_count(model.get("n_params")))
    if model.get("fingerprint") is not None:
        add("model fingerprint", _short(model.get("fingerprint")), True)
    layers = model.get("layers")
    if isinstance(layers, Mapping) and layers:
        add("layers", " · ".join(f"{k} {v}" for k, v in layers.items()))
    for key, value in model.items():
        if key not in ("spec", "family", "n_params", "fingerprint", "layers") and _scalar(value):
            add(f"model {key}", value)
    add("data", data.get("spec"), True)
    add("samples", data.get("n"))
    if data.get("fingerprint") is not None:
        add("data fingerprint", _short(data.get("fingerprint")), True)
    for key, value in data.items():
        if key not in ("spec", "n", "fingerprint") and _scalar(value):
            add(f"data {key}", value)
    versions = [f"{k} {run[k]}" for k in ("mmdiag", "torch", "transformers", "python") if run.get(k) is not None]
    if versions:
        add("versions", " · ".join(versions))
    for key in ("seed", "device", "dtype", "batch_size", "started"):
        add(key.replace("_", " "), run.get(key))
    timings = run.get("timings")
    if isinstance(timings, Mapping) and timings:
        add("timings", _timings(timings))
    for key, value in run.items():
        if key not in ("mmdiag", "torch", "transformers", "python", "seed", "device", "dtype", "batch_size",
                       "started", "timings") and _scalar(value):
            add(key, value)
    return rows


def _about(spec: Any) -> list[tuple[str, str]]:
    """What a check measures, its healthy range and its source (from its CheckSpec)."""
    if spec is None:
        return []
    rows = [("measures", spec.meaning), ("healthy", spec.healthy), ("source", spec.source)]
    if spec.higher_is_better is not None:
        rows.append(("direction", "higher is better" if spec.higher_is_better else "lower is better"))
    return [(k, v) for k, v in rows if v]


def _row(index: int, result: Mapping, specs: Mapping[str, Any]) -> dict[str, Any]:
    status = str(result.get("status") or "unknown")
    value = result.get("value")
    baseline = result.get("baseline") if isinstance(result.get("baseline"), Mapping) else None
    delta = delta_css = base_text = ""
    if baseline is not None:
        d = baseline.get("delta")
        if not is_num(d) and is_num(value) and is_num(baseline.get("value")):
            d = value - baseline["value"]
        if is_num(d) and math.isfinite(d):
            delta, delta_css = _fmt_delta(d), _delta_css(d, result.get("threshold"))
        elif baseline.get("value") is not None:
            delta = "—"
        if baseline.get("value") is not None:
            base_text = fmt_value(baseline.get("value"))
    details = details_rows(result.get("details"))
    if baseline:
        details += details_rows({k: v for k, v in baseline.items() if k != "value"}, "baseline · ")
    message = result.get("message")
    ci = result.get("ci") if isinstance(result.get("ci"), Mapping) else {}
    interval = (f"[{fmt_value(ci['low'])}, {fmt_value(ci['high'])}]"
                if is_num(ci.get("low")) and is_num(ci.get("high")) else "")
    level = ci.get("level") if is_num(ci.get("level")) else 0.95
    check = str(result.get("check") or "?")
    spec = specs.get(check)
    return {
        "anchor": row_anchor(index),
        "check": check,
        "family": _family_of(check),
        "title": getattr(spec, "title", "") or "",
        "interval": interval,
        "interval_title": f"{level:.0%} interval ({ci.get('method')})" if interval else "",
        "params": fmt_params(result.get("params")),
        "value": fmt_value(value),
        "value_full": repr(value) if is_num(value) else fmt_value(value),
        "threshold": fmt_threshold(result.get("threshold")),
        "status": status,
        "css": _status_css(status),
        "delta": delta,
        "delta_css": delta_css,
        "baseline": base_text,
        "message": "" if message is None else str(message),
        "details": details,
        "about": _about(spec),
    }


def _family_of(check: Any) -> str:
    return str(check or "other").split(".", 1)[0] or "other"


def _ordered_families(names: list[str]) -> list[str]:
    seen = list(dict.fromkeys(names))
    return [f for f in FAMILY_ORDER if f in seen] + [f for f in seen if f not in FAMILY_ORDER]


def _series_plots(doc: Mapping, series: Mapping) -> tuple[dict, dict]:
    plots_by_family: dict[str, list[dict[str, Any]]] = {}
    notes_by_family: dict[str, list[str]] = {}
    for family, plot in _plots(doc):
        plot_id, caption = plot.id, plot.caption
        entry = _get(series, *plot.series)
        if entry is None:
            continue
        try:
            svg = figure(plot.figure)(entry)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            notes_by_family.setdefault(family, []).append(
                f"The {plot_id} plot could not be drawn from this document: {type(exc).__name__}: {exc}")
            continue
        if svg is None:
            continue
        if plot_id == "probe-tree":
            example = _get(series, "probe", "example")
            where = fmt_params({"modality": example.get("modality"), "layer": example.get("layer")})
            if where:
                caption = f"{caption} ({where})"
        plots_by_family.setdefault(family, []).append(
            {"id": plot_id, "svg": Markup(svg), "caption": caption})
    return plots_by_family, notes_by_family


def _baseline_name(doc: Mapping) -> str:
    base = doc.get("baseline") if isinstance(doc.get("baseline"), Mapping) else {}
    model = base.get("model")
    return f"baseline {model}" if model else "baseline"


def _context(doc: Mapping) -> dict[str, Any]:
    raw_results = doc.get("results")
    results = [r for r in raw_results if isinstance(r, Mapping)] if isinstance(raw_results, list) else []
    series = doc.get("series") if isinstance(doc.get("series"), Mapping) else {}
    model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
    data = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}
    specs = {s.name: s for s in _specs(doc)}

    rows_by_family: dict[str, list[dict[str, Any]]] = {}
    for i, result in enumerate(results):
        rows_by_family.setdefault(_family_of(result.get("check")), []).append(_row(i, result, specs))
    for rows in rows_by_family.values():  # failures first, then inconclusive, then the run's order
        rows.sort(key=lambda r: SEVERITY.get(r["status"], 2))

    plots_by_family, notes_by_family = _series_plots(doc, series)
    try:
        check_plots = check_figures(results, specs, _baseline_name(doc))
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        check_plots = {}
        notes_by_family.setdefault("other", []).append(f"The per-check plots could not be drawn: {exc}")

    names = _ordered_families(list(rows_by_family) + list(plots_by_family) + list(notes_by_family))
    families = []
    for name in names:
        rows = rows_by_family.get(name, [])
        counter = Counter(r["status"] for r in rows)
        families.append({
            "name": name,
            "slug": _slug(name),
            "title": FAMILIES.get(name, name),
            "rows": rows,
            "counts": _count_text(counter),
            "worst": min((SEVERITY.get(s, 2) for s in counter), default=2),
            "plots": check_plots.get(name, []) + plots_by_family.get(name, []),
            "notes": notes_by_family.get(name, []),
            "about": [(spec.name, spec.title, _about(spec)) for spec in specs.values()
                      if spec.family == name and any(r["check"] == spec.name for r in rows)],
        })

    counter = Counter(_row_status(r) for r in results)
    summary = [{"status": s, "css": _status_css(s), "count": counter[s]}
               for s in [*STATUS_ORDER, *sorted(s for s in counter if s not in STATUS_ORDER)]
               if counter[s] or s in ("pass", "warn", "fail")]

    schema = doc.get("schema")
    schema_note = ""
    if schema != SCHEMA:
        schema_note = (f"This document declares schema {schema!r}, not {SCHEMA!r}: "
                       "the page shows the keys it recognises.")
    has_baseline = any(r.get("baseline") for fam in families for r in fam["rows"])
    title = str(model.get("spec")) if model.get("spec") is not None else "(model not named)"
    sub = []
    if model.get("family") is not None:
        sub.append(f"family {model['family']}")
    if data.get("spec") is not None:
        sub.append(f"data {data['spec']}" + (f" (n={fmt_value(data.get('n'))})"
                                            if data.get("n") is not None else ""))
    run = doc.get("run") if isinstance(doc.get("run"), Mapping) else {}
    if run.get("started") is not None:
        sub.append(f"started {run['started']}")
    with_rows = [f for f in families if f["rows"]]
    return {
        "title": title,
        "subtitle": " · ".join(str(s) for s in sub),
        "schema": str(schema),
        "schema_note": schema_note,
        "meta": _meta(doc),
        "summary": summary,
        "banner": banner(doc, results),
        "verdict": banner(doc, results)["sentence"],
        "families": families,
        "families_with_results": with_rows,
        "has_baseline": has_baseline,
        "ncols": 7 if has_baseline else 6,
        "filter_statuses": [s["status"] for s in summary if s["count"]],
        "explorer": explorer_context(series),
    }


def _row_status(result: Mapping) -> str:
    return str(result.get("status") or "unknown")


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def render_html(doc: dict) -> str:
    """Render a results document (DESIGN.md section 5) as one self-contained HTML page.

    Raises :class:`~mmdiag.errors.MMDiagError` when ``doc`` is not a JSON
    object; everything inside it is optional.
    """
    if not isinstance(doc, Mapping):
        raise MMDiagError(f"a results document must be a JSON object, got {type(doc).__name__}")
    template, css, js = _page()
    return template.render(css=css, js=js, **_context(doc))


def write_html(doc: dict, path: Union[str, os.PathLike]) -> Path:
    """Render ``doc`` and write it to ``path`` atomically; returns the path.

    The page is written to a temporary file in the target directory (created if
    needed) and moved over ``path`` with :func:`os.replace`, so a reader never
    sees a half-written report and a failed write leaves any old report intact.
    """
    return atomic_write_text(path, render_html(doc))
