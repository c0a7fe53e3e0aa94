"""Per-check figures from a document's results: per-layer lines with bands, or dots with error bars.

Results of one check are grouped by their params other than ``layer`` (modality, direction); a check
with two or more layers becomes a line figure, a check measured once per group a dot figure (drawn when
it has two groups or a threshold, so single ungated numbers stay in the table only).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from mmdiag.report.figures.checks import Group, _slug, check_layers_svg, check_points_svg
from mmdiag.report.fmt import fmt_params, is_num

__all__ = ["check_figures"]


def _num(value: Any) -> float | None:
    return float(value) if is_num(value) else None


def _groups(results: list[Mapping]) -> tuple[dict[str, Group], bool]:
    groups: dict[str, Group] = {}
    layered = True
    for r in results:
        params = r.get("params") if isinstance(r.get("params"), Mapping) else {}
        layer = params.get("layer")
        if not (isinstance(layer, int) and not isinstance(layer, bool)):
            layered = False
        rest = {k: v for k, v in params.items() if k != "layer"}
        name = fmt_params(rest) or str(r.get("check"))
        g = groups.setdefault(name, Group(name))
        ci = r.get("ci") if isinstance(r.get("ci"), Mapping) else {}
        base = r.get("baseline") if isinstance(r.get("baseline"), Mapping) else {}
        g.x.append(layer if is_num(layer) else len(g.x))
        g.values.append(_num(r.get("value")))
        g.low.append(_num(ci.get("low")))
        g.high.append(_num(ci.get("high")))
        g.baseline.append(_num(base.get("value")))
    return groups, layered


def check_figures(results: list[Mapping], specs: Mapping[str, Any], baseline_name: str) -> dict[str, list[dict]]:
    """``{family: [{"id", "svg", "caption"}]}`` for every check whose results can be drawn."""
    by_check: dict[str, list[Mapping]] = {}
    for r in results:
        if is_num(r.get("value")):
            by_check.setdefault(str(r.get("check")), []).append(r)
    out: dict[str, list[dict]] = {}
    for check, rows in by_check.items():
        spec = specs.get(check)
        title = getattr(spec, "title", "") or check
        threshold = next((r["threshold"] for r in rows if isinstance(r.get("threshold"), Mapping)), None)
        groups, layered = _groups(rows)
        n_layers = max(len(g.x) for g in groups.values())
        if layered and n_layers >= 2:
            xlabel = "transformer block" if getattr(spec, "blocks", False) else "layer (0 = embedding output)"
            svg = check_layers_svg(check, title if "layer" in title.lower() else f"{title} per layer", list(groups.values()), threshold, xlabel,
                                   baseline_name)
            caption = (f"{check} per layer: line = value, band = 95% interval"
                       + (", dashed line = threshold" if threshold else "")
                       + (f", squares = {baseline_name}" if any(b is not None for g in groups.values()
                                                              for b in g.baseline) else "") + ".")
        elif n_layers == 1 and (len(groups) >= 2 or threshold):
            svg = check_points_svg(check, title, list(groups.values()), threshold, baseline_name)
            caption = f"{check}: value with its 95% interval" + (" against the threshold" if threshold else "") + "."
        else:
            continue
        if svg:
            family = check.split(".", 1)[0]
            out.setdefault(family, []).append({"id": f"check-{_slug(check)}", "svg": Markup(svg),
                                               "caption": caption})
    return out
