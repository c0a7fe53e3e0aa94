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
from mmdiag.report.figures import figure
from mmdiag.report.verdict import Verdict
from mmdiag.schema import SCHEMA

__all__ = ["render_html", "write_html", "SCHEMA", "FAMILY_ORDER", "STATUS_ORDER"]

#: Statuses in summary order; any other status string is shown after them.
STATUS_ORDER = ("pass", "warn", "fail", "error", "info", "skip")
_DETAILS_MAX_CHARS = 2000

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


@functools.cache
def _page() -> tuple[jinja2.Template, Markup]:
    """The compiled page template and the CSS it inlines verbatim (read once, on first render)."""
    css, _path, _uptodate = _LOADER.get_source(_ENV, _CSS_NAME)
    return _ENV.get_template(_TEMPLATE_NAME), Markup(css)


# --------------------------------------------------------------------------
# formatting of document values (all return plain str; escaping is jinja's)
# --------------------------------------------------------------------------

def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_value(value: Any) -> str:
    """A result value for the table: 4 significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.4g}"
    text = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fmt_params(params: Any) -> str:
    """``{"modality": "image", "layer": 7}`` -> ``"image · L07"``; others as k=v."""
    if not isinstance(params, Mapping) or not params:
        return ""
    parts = []
    for key in ("modality", "direction"):
        if params.get(key) is not None:
            parts.append(str(params[key]))
    layer = params.get("layer")
    if layer is not None:
        parts.append(f"L{layer:02d}" if isinstance(layer, int) and not isinstance(layer, bool)
                     and layer >= 0 else f"L{layer}")
    for key in sorted(params, key=str):
        if key not in ("modality", "direction", "layer"):
            parts.append(f"{key}={fmt_value(params[key])}")
    return " · ".join(parts)


def fmt_threshold(threshold: Any) -> str:
    """``{"op": "<=", "value": 1.1, "level": "fail"}`` -> ``"<= 1.1 (fail)"``."""
    if not isinstance(threshold, Mapping):
        return ""
    op = threshold.get("op")
    parts = [str(op) if op is not None else "", fmt_value(threshold.get("value"))
             if "value" in threshold else ""]
    text = " ".join(p for p in parts if p)
    level = threshold.get("level")
    if level is not None:
        text = f"{text} ({level})" if text else f"({level})"
    return text


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


def _fmt_seconds(seconds: Any) -> str:
    if not _is_num(seconds) or not math.isfinite(seconds):
        return fmt_value(seconds)
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def _fmt_params_count(n: Any) -> str:
    if not _is_num(n) or not math.isfinite(n):
        return fmt_value(n)
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit} ({int(n):,})"
    return f"{int(n):,}" if float(n).is_integer() else f"{n:g}"


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
        add("parameters", _fmt_params_count(model.get("n_params")))
    if model.get("fingerprint") is not None:
        add("model fingerprint", _short(model.get("fingerprint")), True)
    for key, value in model.items():
        if key not in ("spec", "family", "n_params", "fingerprint") and _scalar(value):
            add(f"model {key}", value)
    add("data", data.get("spec"), True)
    add("samples", data.get("n"))
    if data.get("fingerprint") is not None:
        add("data fingerprint", _short(data.get("fingerprint")), True)
    for key, value in data.items():
        if key not in ("spec", "n", "fingerprint") and _scalar(value):
            add(f"data {key}", value)
    versions = [f"{k} {run[k]}" for k in ("mmdiag", "torch", "transformers") if run.get(k) is not None]
    if versions:
        add("versions", " · ".join(versions))
    for key in ("seed", "device", "dtype", "started"):
        add(key, run.get(key))
    timings = run.get("timings")
    if isinstance(timings, Mapping) and timings:
        add("timings", " · ".join(f"{re.sub(r'_s$', '', str(k))} {_fmt_seconds(v)}"
                                  for k, v in timings.items()))
    for key, value in run.items():
        if key not in ("mmdiag", "torch", "transformers", "seed", "device", "dtype", "started",
                       "timings") and _scalar(value):
            add(key, value)
    return rows


def _row(result: Mapping) -> dict[str, Any]:
    status = str(result.get("status") or "unknown")
    value = result.get("value")
    baseline = result.get("baseline") if isinstance(result.get("baseline"), Mapping) else None
    delta = delta_css = base_text = ""
    if baseline is not None:
        d = baseline.get("delta")
        if not _is_num(d) and _is_num(value) and _is_num(baseline.get("value")):
            d = value - baseline["value"]
        if _is_num(d) and math.isfinite(d):
            delta, delta_css = _fmt_delta(d), _delta_css(d, result.get("threshold"))
        elif baseline.get("value") is not None:
            delta = "—"
        if baseline.get("value") is not None:
            base_text = fmt_value(baseline.get("value"))
    details = result.get("details")
    details_text = ""
    if isinstance(details, Mapping) and details:
        details_text = json.dumps(details, indent=1, ensure_ascii=False, default=str)
        if len(details_text) > _DETAILS_MAX_CHARS:
            details_text = details_text[:_DETAILS_MAX_CHARS] + "\n… (truncated)"
    message = result.get("message")
    ci = result.get("ci") if isinstance(result.get("ci"), Mapping) else {}
    interval = (f"[{fmt_value(ci['low'])}, {fmt_value(ci['high'])}]"
                if _is_num(ci.get("low")) and _is_num(ci.get("high")) else "")
    return {
        "check": str(result.get("check") or "?"),
        "interval": interval,
        "interval_title": f"{ci.get('level', 0.95):.0%} interval ({ci.get('method')})" if interval else "",
        "params": fmt_params(result.get("params")),
        "value": fmt_value(value),
        "value_full": repr(value) if _is_num(value) else fmt_value(value),
        "threshold": fmt_threshold(result.get("threshold")),
        "status": status,
        "css": _status_css(status),
        "delta": delta,
        "delta_css": delta_css,
        "baseline": base_text,
        "message": "" if message is None else str(message),
        "details": details_text,
    }


def _family_of(check: Any) -> str:
    return str(check or "other").split(".", 1)[0] or "other"


def _ordered_families(names: list[str]) -> list[str]:
    seen = list(dict.fromkeys(names))
    return [f for f in FAMILY_ORDER if f in seen] + [f for f in seen if f not in FAMILY_ORDER]


def _context(doc: Mapping) -> dict[str, Any]:
    raw_results = doc.get("results")
    results = [r for r in raw_results if isinstance(r, Mapping)] if isinstance(raw_results, list) else []
    series = doc.get("series") if isinstance(doc.get("series"), Mapping) else {}
    model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
    data = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}

    rows_by_family: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        rows_by_family.setdefault(_family_of(result.get("check")), []).append(_row(result))

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

    names = _ordered_families(list(rows_by_family) + list(plots_by_family) + list(notes_by_family))
    families = []
    for name in names:
        rows = rows_by_family.get(name, [])
        families.append({
            "name": name,
            "slug": _slug(name),
            "title": FAMILIES.get(name, name),
            "rows": rows,
            "counts": _count_text(Counter(r["status"] for r in rows)),
            "plots": plots_by_family.get(name, []),
            "notes": notes_by_family.get(name, []),
        })

    counter = Counter(_row_status(r) for r in results)
    summary = [{"status": s, "css": _status_css(s), "count": counter[s]}
               for s in [*STATUS_ORDER, *sorted(s for s in counter if s not in STATUS_ORDER)]
               if counter[s] or s in ("pass", "warn", "fail")]
    verdict = Verdict.of(results).sentence() if results else "The document holds no results."

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
    return {
        "title": title,
        "subtitle": " · ".join(str(s) for s in sub),
        "schema": str(schema),
        "schema_note": schema_note,
        "meta": _meta(doc),
        "summary": summary,
        "verdict": verdict,
        "families": families,
        "families_with_results": [f for f in families if f["rows"]],
        "has_baseline": has_baseline,
        "ncols": 7 if has_baseline else 6,
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
    template, css = _page()
    return template.render(css=css, **_context(doc))


def write_html(doc: dict, path: Union[str, os.PathLike]) -> Path:
    """Render ``doc`` and write it to ``path`` atomically; returns the path.

    The page is written to a temporary file in the target directory (created if
    needed) and moved over ``path`` with :func:`os.replace`, so a reader never
    sees a half-written report and a failed write leaves any old report intact.
    """
    return atomic_write_text(path, render_html(doc))
