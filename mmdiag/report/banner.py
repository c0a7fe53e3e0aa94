"""The verdict banner at the top of the report: the gate's outcome and why.

It names the results that decided the outcome (failed or errored, then inconclusive ``warn``), each with
its value, interval, threshold and message, the baseline the run was compared with (model, date, file)
and how many of its values regressed, and why checks were skipped (grouped by reason), so a reviewer
reads the decision before the table.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from mmdiag.report.fmt import fmt_params, fmt_threshold, fmt_value, is_num
from mmdiag.report.verdict import Verdict

__all__ = ["banner", "row_anchor", "SEVERITY"]

_SHOWN = 12
#: sort key of a status in the table: failures first, then inconclusive, then the rest in run order
SEVERITY = {"fail": 0, "error": 0, "warn": 1}

_HEADLINES = {
    "fail": "Gate failed",
    "warn": "Gate passed with warnings",
    "pass": "Gate passed",
    "empty": "Nothing was measured",
}


def row_anchor(index: int) -> str:
    """The id of the table row of ``results[index]`` (the banner links to it)."""
    return f"r{index}"


def _interval(result: Mapping) -> str:
    ci = result.get("ci") if isinstance(result.get("ci"), Mapping) else {}
    if is_num(ci.get("low")) and is_num(ci.get("high")):
        return f"[{fmt_value(ci['low'])}, {fmt_value(ci['high'])}]"
    return ""


def _item(index: int, result: Mapping) -> dict:
    return {"anchor": row_anchor(index), "check": str(result.get("check") or "?"),
            "params": fmt_params(result.get("params")), "value": fmt_value(result.get("value")),
            "interval": _interval(result), "threshold": fmt_threshold(result.get("threshold")),
            "status": str(result.get("status")), "message": str(result.get("message") or "")}


def _grouped(indexed: list[tuple[int, Mapping]]) -> list[dict]:
    """One line per check and params-without-layer: a per-layer check that warns at 12 layers is one line."""
    groups: dict[tuple[str, str], list[tuple[int, Mapping]]] = {}
    for i, r in indexed:
        params = r.get("params") if isinstance(r.get("params"), Mapping) else {}
        rest = {k: v for k, v in params.items() if k != "layer"}
        groups.setdefault((str(r.get("check")), fmt_params(rest)), []).append((i, r))
    items = []
    for (check, params), members in groups.items():
        if len(members) == 1:
            items.append(_item(*members[0]))
            continue
        i0, r0 = members[0]
        values = [r.get("value") for _, r in members if is_num(r.get("value"))]
        layers = [(r.get("params") or {}).get("layer") for _, r in members]
        where = ", ".join(fmt_params({"layer": lay}) for lay in layers[:6]) + (", …" if len(layers) > 6 else "")
        item = _item(i0, r0)
        item.update({"params": f"{params + ' · ' if params else ''}{len(members)} layers ({where})",
                     "value": (f"{fmt_value(min(values))} to {fmt_value(max(values))}" if values else "—"),
                     "interval": "", "message": ""})
        items.append(item)
    return items


def _baseline(doc: Mapping, results: list[Mapping]) -> dict | None:
    base = doc.get("baseline") if isinstance(doc.get("baseline"), Mapping) else None
    compared = [r for r in results if isinstance(r.get("baseline"), Mapping)]
    if base is None and not compared:
        return None
    base = base or {}
    regressed = sum(1 for r in compared if "vs baseline" in str(r.get("message") or ""))
    return {"model": str(base.get("model") or "(model not recorded)"),
            "started": str(base.get("started") or "date not recorded"),
            "path": str(base.get("path") or "(file not recorded)"),
            "compared": len(compared), "regressed": regressed}


def _skips(results: list[Mapping]) -> list[tuple[str, int]]:
    reasons = Counter(str(r.get("message") or "no reason given") for r in results if r.get("status") == "skip")
    return reasons.most_common(6)


def banner(doc: Mapping, results: list[Mapping]) -> dict[str, Any]:
    """The banner's view model: outcome, headline, sentence, deciding results, baseline and skip reasons."""
    verdict = Verdict.of(results)
    failing = _grouped([(i, r) for i, r in enumerate(results) if r.get("status") in ("fail", "error")])
    warning = _grouped([(i, r) for i, r in enumerate(results) if r.get("status") == "warn"])
    return {
        "outcome": verdict.outcome if results else "empty",
        "headline": _HEADLINES.get(verdict.outcome if results else "empty", verdict.outcome),
        "sentence": verdict.sentence() if results else "The document holds no results.",
        "failing": failing[:_SHOWN], "failing_more": max(0, len(failing) - _SHOWN),
        "warning": warning[:_SHOWN], "warning_more": max(0, len(warning) - _SHOWN),
        "baseline": _baseline(doc, results),
        "skips": _skips(results),
    }
