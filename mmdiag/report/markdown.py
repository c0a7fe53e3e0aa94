"""The gate's verdict as Markdown for CI job pages (``$GITHUB_STEP_SUMMARY`` or ``--mm-markdown=PATH``).

Failing, erroring, warning and inconclusive results first (value, interval,
threshold, baseline change, message), then a per-family count. Rendered from a
results document alone, like the HTML report.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping

from mmdiag.checkspec import FAMILY_ORDER
from mmdiag.report.verdict import STATUS_ORDER, Verdict
from mmdiag.thresholds import param_id

_ICON = {"fail": "❌", "error": "💥", "warn": "⚠️", "pass": "✅", "empty": "∅"}
_ATTENTION = ("fail", "error", "warn")


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _threshold(t: Any) -> str:
    if not isinstance(t, Mapping):
        return "–"
    return f"`{t.get('op')} {_num(t.get('value'))}` ({t.get('level')})"


def _interval(r: Mapping) -> str:
    ci = r.get("ci")
    if not isinstance(ci, Mapping):
        return "–"
    return f"[{_num(ci.get('low'))}, {_num(ci.get('high'))}]"


def _delta(r: Mapping) -> str:
    base = r.get("baseline")
    if not isinstance(base, Mapping):
        return "–"
    return f"{base.get('delta'):+.4g}" if isinstance(base.get("delta"), (int, float)) else "–"


def render_markdown(doc: Mapping) -> str:
    """The Markdown summary of a results document."""
    results = [r for r in doc.get("results") or [] if isinstance(r, Mapping)]
    verdict = Verdict.of(results)
    model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
    data = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}
    outcome = verdict.outcome
    lines = [f"## {_ICON.get(outcome, '')} mmdiag: {outcome.upper()} · `{_cell(model.get('spec', '?'))}` · data "
             f"`{_cell(data.get('spec', '?'))}` (n={data.get('n', '?')})", "", verdict.sentence(), ""]
    flagged = [r for r in results if r.get("status") in _ATTENTION]
    flagged.sort(key=lambda r: (_ATTENTION.index(r["status"]), str(r.get("check")), param_id(r.get("params") or {})))
    if flagged:
        lines += ["### Needs attention", "",
                  "| status | check | params | value | 95% interval | threshold | Δ baseline | message |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in flagged:
            lines.append(f"| {r['status']} | `{_cell(r.get('check'))}` | {_cell(param_id(r.get('params') or {}))} | "
                         f"{_num(r.get('value'))} | {_interval(r)} | {_threshold(r.get('threshold'))} | {_delta(r)} "
                         f"| {_cell(r.get('message') or '')} |")
        lines.append("")
    by_family: dict[str, Verdict] = {}
    grouped: dict[str, list] = defaultdict(list)
    for r in results:
        grouped[str(r.get("check", "other")).split(".", 1)[0]].append(r)
    order = [f for f in FAMILY_ORDER if f in grouped] + [f for f in grouped if f not in FAMILY_ORDER]
    for family in order:
        by_family[family] = Verdict.of(grouped[family])
    if by_family:
        lines += ["### By family", "", "| family | " + " | ".join(STATUS_ORDER) + " |",
                  "|---|" + "---|" * len(STATUS_ORDER)]
        for family, v in by_family.items():
            lines.append(f"| {family} | " + " | ".join(str(v.count(s)) for s in STATUS_ORDER) + " |")
        lines.append("")
    return "\n".join(lines)
