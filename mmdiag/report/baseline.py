"""Regression gating against a previous release's results (``--mm-baseline``, ``--mm-compare-fail``).

Each result is matched to the baseline result with the same check and params;
the delta is ``value - baseline``. A ``--mm-compare-fail`` rule fails a check
whose value moved in the direction that is worse for that check by more than
the rule's tolerance (relative ``5%`` of the baseline magnitude, or absolute).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from mmdiag.errors import SpecError
from mmdiag.thresholds import DEFAULTS, Threshold

SCHEMA = "mmdiag/1"

#: +1: a larger value is worse; -1: a smaller value is worse; 0: either way (|delta| counts)
WORSE_DIRECTION: dict[str, int] = {
    "cone.final": +1, "cone.layer": +1, "cone.narrowing": 0,
    "gap.norm": +1, "gap.l2i": +1, "gap.rmg": +1, "gap.separability": +1, "gap.shift_optimum": 0,
    "geometry.alignment": +1, "geometry.uniformity": +1, "geometry.rankme": -1, "geometry.cka": -1,
    "geometry.mknn": -1,
    "probe.depth": -1, "probe.distance": -1, "probe.selectivity": -1, "probe.text_retention": -1,
    "probe.scene_vs_raw": -1, "probe.image_effect": 0,
    "attention.share": 0, "attention.image_use": -1, "attention.entropy": 0, "attention.grounding": -1,
}

_RULE = re.compile(r"^\s*(?P<check>\*|[a-z_]+\.[a-z_0-9]+)\s*:\s*(?P<amount>[0-9]*\.?[0-9]+)\s*(?P<pct>%)?\s*$")
RULE_SYNTAX = "CHECK:TOL where TOL is a percentage of the baseline (5%) or an absolute change (0.02); CHECK may be *"


@dataclass(frozen=True)
class Rule:
    check: str
    amount: float
    relative: bool

    def tolerance(self, baseline: float) -> float:
        return self.amount / 100 * abs(baseline) if self.relative else self.amount


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text)
    if not match:
        raise SpecError(f"--mm-compare-fail={text!r}: expected {RULE_SYNTAX}")
    check = match["check"]
    if check != "*" and check not in DEFAULTS:
        raise SpecError(f"--mm-compare-fail={text!r}: unknown check {check!r}; valid checks: {', '.join(DEFAULTS)}")
    return Rule(check, float(match["amount"]), bool(match["pct"]))


def result_key(check: str, params: Mapping[str, object]) -> str:
    return json.dumps([check, sorted((str(k), str(v)) for k, v in params.items())])


def load_baseline(path: Path) -> dict[str, dict]:
    """Read a baseline results JSON into ``{result_key: result}``; schema mismatches are usage errors."""
    from mmdiag.report.jsonio import read_json

    try:
        doc = read_json(path)
    except Exception as exc:  # DataError or an unexpected shape: either way the file is unusable
        raise SpecError(f"--mm-baseline={str(path)!r}: {exc}") from None
    if not isinstance(doc.get("results"), list):
        raise SpecError(f"--mm-baseline={str(path)!r}: \"results\" must be a list of results (is the file a "
                        "results.json written by mmdiag?)")
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise SpecError(f"--mm-baseline={str(path)!r} has schema {schema!r}; this mmdiag reads {SCHEMA!r} "
                        "(re-create the baseline with this version's --mm-save-baseline)")
    table = {}
    for r in doc.get("results", []):
        if isinstance(r, dict) and isinstance(r.get("check"), str) and isinstance(r.get("params", {}), dict):
            table[result_key(r["check"], r.get("params", {}))] = r
    return table


def worse_by(check: str, delta: float, threshold: Optional[Threshold]) -> float:
    """How much worse (positive) or better (negative) a change of ``delta`` is for ``check``."""
    direction = WORSE_DIRECTION.get(check)
    if direction is None and threshold is not None:
        direction = +1 if threshold.op in ("<", "<=") else -1
    if not direction:
        return abs(delta)
    return direction * delta


class Comparison:
    """Matches results to a baseline and applies the compare-fail rules."""

    def __init__(self, baseline: dict[str, dict], rules: list[Rule]) -> None:
        self.baseline = baseline
        self.rules = rules
        self.matched = 0

    def rule_for(self, check: str) -> Optional[Rule]:
        specific = [r for r in self.rules if r.check == check]
        return specific[-1] if specific else next((r for r in reversed(self.rules) if r.check == "*"), None)

    def compare(self, check: str, params: Mapping[str, object], value: Optional[float],
                threshold: Optional[Threshold]) -> tuple[Optional[dict], Optional[str]]:
        """(baseline info for the JSON, a regression message or None)."""
        base = self.baseline.get(result_key(check, params))
        if base is None or value is None or not isinstance(base.get("value"), (int, float)):
            return None, None
        self.matched += 1
        base_value = float(base["value"])
        delta = value - base_value
        info = {"value": base_value, "delta": delta}
        rule = self.rule_for(check)
        if rule is None or not math.isfinite(delta):
            return info, None
        worse = worse_by(check, delta, threshold)
        tolerance = rule.tolerance(base_value)
        if worse > tolerance:
            amount = f"{rule.amount:g}%" if rule.relative else f"{rule.amount:g}"
            return info, (f"{check} regressed vs baseline: {value:.4g} (baseline {base_value:.4g}, "
                          f"change {delta:+.4g}) exceeds the allowed {amount}")
        return info, None
