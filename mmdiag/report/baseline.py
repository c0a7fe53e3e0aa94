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
from typing import Callable, Mapping, Optional

from mmdiag.errors import SpecError
from mmdiag.checkspec import CheckSpec
from mmdiag.schema import SCHEMA
from mmdiag.thresholds import Threshold

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
    return Rule(match["check"], float(match["amount"]), bool(match["pct"]))


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


def worse_by(spec: Optional[CheckSpec], delta: float, threshold: Optional[Threshold]) -> float:
    """How much worse (positive) or better (negative) a change of ``delta`` is for the check of ``spec``.

    The direction is the spec's ``higher_is_better``; a check without a spec
    takes it from its threshold's operator, and any change counts otherwise.
    """
    direction = spec.worse_direction if spec is not None else None
    if direction is None and threshold is not None:
        direction = +1 if threshold.op in ("<", "<=") else -1
    if not direction:
        return abs(delta)
    return direction * delta


class Comparison:
    """Matches results to a baseline and applies the compare-fail rules."""

    def __init__(self, baseline: dict[str, dict], rules: list[Rule],
                 spec_of: Callable[[str], Optional[CheckSpec]] = lambda check: None) -> None:
        self.baseline = baseline
        self.rules = rules
        self.spec_of = spec_of
        self.matched = 0

    def unknown_checks(self, known: Callable[[str], bool]) -> list[str]:
        """The compare rules whose check ``known`` does not accept."""
        return [r.check for r in self.rules if r.check != "*" and not known(r.check)]

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
        worse = worse_by(self.spec_of(check), delta, threshold)
        tolerance = rule.tolerance(base_value)
        if worse > tolerance:
            amount = f"{rule.amount:g}%" if rule.relative else f"{rule.amount:g}"
            return info, (f"{check} regressed vs baseline: {value:.4g} (baseline {base_value:.4g}, "
                          f"change {delta:+.4g}) exceeds the allowed {amount}")
        return info, None
