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
from mmdiag.report.jsonio import read_json
from mmdiag.schema import SCHEMA
from mmdiag.thresholds import Threshold, param_id

_RULE = re.compile(r"^\s*(?P<check>\*|[a-z_]+\.[a-z_0-9]+)(?:\[(?P<params>[^\]]+)\])?\s*:\s*"
                   r"(?P<amount>[0-9]*\.?[0-9]+)\s*(?P<pct>%)?\s*$")
RULE_SYNTAX = ("CHECK[PARAMS]:TOL where TOL is a percentage of the baseline (5%) or an absolute change (0.02); "
               "CHECK may be *, PARAMS a parametrisation such as image-L11")


@dataclass(frozen=True)
class Rule:
    """``--mm-compare-fail`` rule: the allowed worsening of a check (or one parametrisation of it)."""

    check: str
    amount: float
    relative: bool
    params: Optional[str] = None
    text: str = ""

    def tolerance(self, baseline: float) -> float:
        return self.amount / 100 * abs(baseline) if self.relative else self.amount

    def applies(self, check: str, params: Mapping[str, object]) -> bool:
        if self.check not in ("*", check):
            return False
        return self.params is None or self.params == param_id(params)


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text)
    if not match:
        raise SpecError(f"--mm-compare-fail={text!r}: expected {RULE_SYNTAX}")
    params = match["params"].strip() if match["params"] else None
    return Rule(match["check"], float(match["amount"]), bool(match["pct"]), params, text.strip())


def result_key(check: str, params: Mapping[str, object]) -> str:
    return json.dumps([check, sorted((str(k), str(v)) for k, v in params.items())])


@dataclass(frozen=True)
class Baseline:
    """A previous release's results: by result key, plus what it was measured on."""

    path: Path
    results: dict
    model: dict
    data: dict

    def identity(self) -> dict:
        """What must match for a comparison to mean something: family, layer counts, data spec."""
        return {"family": self.model.get("family"), "layers": self.model.get("layers"),
                "data": self.data.get("spec")}


def _value_ok(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def load_baseline(path: Path) -> Baseline:
    """Read a baseline results JSON; a wrong schema or a non-numeric value is a usage error naming the file."""
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
    for i, r in enumerate(doc.get("results", [])):
        if isinstance(r, dict) and isinstance(r.get("check"), str) and isinstance(r.get("params", {}), dict):
            for key in ("value", "se"):
                if not _value_ok(r.get(key)):
                    raise SpecError(f"--mm-baseline={str(path)!r}: results[{i}] ({r['check']}) has {key} "
                                    f"{r[key]!r}; a baseline value is a number or null")
            table[result_key(r["check"], r.get("params", {}))] = r
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    return Baseline(Path(path), table, model, data)


def mismatch(baseline: Baseline, current: Mapping[str, object]) -> list[str]:
    """How this run differs from what the baseline measured (``current`` as :meth:`Baseline.identity`)."""
    problems = []
    for key, theirs in baseline.identity().items():
        ours = current.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            problems.append(f"{key} {theirs!r} in the baseline, {ours!r} in this run")
    return problems


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

    def __init__(self, baseline: Baseline, rules: list[Rule],
                 spec_of: Callable[[str], Optional[CheckSpec]] = lambda check: None) -> None:
        self.source = baseline
        self.baseline = baseline.results
        self.rules = rules
        self.spec_of = spec_of
        self.matched = 0

    def unknown_checks(self, known: Callable[[str], bool]) -> list[str]:
        """The compare rules whose check ``known`` does not accept."""
        return [r.check for r in self.rules if r.check != "*" and not known(r.check)]

    def rule_for(self, check: str, params: Mapping[str, object] = {}) -> Optional[Rule]:
        """The most specific rule: one naming these params, then the check, then ``*`` (the last one given wins)."""
        applicable = [r for r in self.rules if r.applies(check, params)]
        for rank in (lambda r: r.params is not None, lambda r: r.check == check, lambda r: True):
            ranked = [r for r in applicable if rank(r)]
            if ranked:
                return ranked[-1]
        return None

    def compare(self, check: str, params: Mapping[str, object], value: Optional[float],
                threshold: Optional[Threshold]) -> tuple[Optional[dict], Optional[str]]:
        """(baseline info for the JSON, a regression message or None)."""
        base = self.baseline.get(result_key(check, params))
        if base is None or value is None or base.get("value") is None:
            return None, None
        self.matched += 1
        base_value = float(base["value"])
        delta = value - base_value
        info = {"value": base_value, "delta": delta}
        rule = self.rule_for(check, params)
        if rule is None or not math.isfinite(delta):
            return info, None
        worse = worse_by(self.spec_of(check), delta, threshold)
        tolerance = rule.tolerance(base_value)
        if worse > tolerance:
            amount = f"{rule.amount:g}%" if rule.relative else f"{rule.amount:g}"
            return info, (f"{check} regressed vs baseline: {value:.4g} (baseline {base_value:.4g}, "
                          f"change {delta:+.4g}) exceeds the allowed {amount}")
        return info, None
