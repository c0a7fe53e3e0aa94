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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

from mmdiag.errors import SpecError
from mmdiag.checkspec import CheckSpec
from mmdiag.report.jsonio import read_json
from mmdiag.schema import SCHEMA
from mmdiag.thresholds import Threshold, param_id
from mmdiag.uncertainty.regression import regression_p_value, tolerance_for

_RULE = re.compile(r"^\s*(?P<check>\*|[a-z_]+\.[a-z_0-9]+)(?:\[(?P<params>[^\]]+)\])?\s*:\s*"
                   r"(?:(?P<auto>auto)|(?P<amount>[0-9]*\.?[0-9]+)\s*(?P<pct>%)?)\s*$")
RULE_SYNTAX = ("CHECK:TOL or CHECK[PARAMS]:TOL, where TOL is a percentage of the baseline (5%), an absolute change "
               "(0.02) or auto; CHECK may be *, PARAMS a parametrisation such as image-L11; or auto alone")
#: the family-wise false-alarm rate of --mm-compare-fail=auto over all the results a run compares
ALPHA = 0.05


@dataclass(frozen=True)
class Rule:
    """``--mm-compare-fail`` rule: the allowed worsening of a check (or one parametrisation of it).

    ``auto``: the check's own direction and tolerance (its spec), and a change counts only when it
    is distinguishable from both runs' sampling noise (see :meth:`Comparison.compare`).
    """

    check: str
    amount: float
    relative: bool
    params: Optional[str] = None
    text: str = ""
    auto: bool = False

    def tolerance(self, baseline: float) -> float:
        """The allowed worsening; a relative one has an absolute floor so a near-zero baseline allows rounding."""
        return tolerance_for(baseline, f"{self.amount}%" if self.relative else f"{self.amount}")

    def applies(self, check: str, params: Mapping[str, object]) -> bool:
        if self.check not in ("*", check):
            return False
        return self.params is None or self.params == param_id(params)


def parse_rule(text: str) -> Rule:
    if text.strip() == "auto":
        return Rule("*", 0.0, False, None, "auto", auto=True)
    match = _RULE.match(text)
    if not match:
        raise SpecError(f"--mm-compare-fail={text!r}: expected {RULE_SYNTAX}")
    params = match["params"].strip() if match["params"] else None
    if match["auto"]:
        return Rule(match["check"], 0.0, False, params, text.strip(), auto=True)
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
    run: dict = field(default_factory=dict)

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
    run = doc.get("run") if isinstance(doc.get("run"), dict) else {}
    return Baseline(Path(path), table, model, data, run)


def mismatch(baseline: Baseline, current: Mapping[str, object]) -> list[str]:
    """How this run differs from what the baseline measured (``current`` as :meth:`Baseline.identity`)."""
    problems = []
    for key, theirs in baseline.identity().items():
        ours = current.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            problems.append(f"{key} {theirs!r} in the baseline, {ours!r} in this run")
    return problems


def worse_direction(spec: Optional[CheckSpec], threshold: Optional[Threshold]) -> int:
    """+1 when a larger value is worse, -1 when a smaller one is, 0 when any change counts.

    The spec's ``higher_is_better`` decides; a check without a spec takes it from its threshold's
    operator, and any change counts otherwise.
    """
    if spec is not None:
        return spec.worse_direction
    if threshold is not None:
        return +1 if threshold.op in ("<", "<=") else -1
    return 0


def worse_by(spec: Optional[CheckSpec], delta: float, threshold: Optional[Threshold]) -> float:
    """How much worse (positive) or better (negative) a change of ``delta`` is (see :func:`worse_direction`)."""
    direction = worse_direction(spec, threshold)
    return abs(delta) if direction == 0 else direction * delta


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

    def covers(self, check: str, params: Mapping[str, object]) -> bool:
        """Whether a rule will judge this result against a baseline value."""
        base = self.baseline.get(result_key(check, params))
        return base is not None and base.get("value") is not None and self.rule_for(check, params) is not None

    def compare(self, check: str, params: Mapping[str, object], value: Optional[float],
                threshold: Optional[Threshold], se: Optional[float] = None) -> tuple[Optional[dict], Optional[str]]:
        """(baseline info for the JSON, a regression message or None)."""
        base = self.baseline.get(result_key(check, params))
        if base is None or value is None or base.get("value") is None:
            return None, None
        self.matched += 1
        base_value = float(base["value"])
        delta = value - base_value
        info = {"value": base_value, "delta": delta, "se": base.get("se")}
        rule = self.rule_for(check, params)
        if rule is None or not math.isfinite(delta):
            return info, None
        spec = self.spec_of(check)
        if rule.auto:
            return info, self._noise_aware(check, params, value, se, base_value, base.get("se"), spec, threshold, info)
        worse = worse_by(spec, delta, threshold)
        tolerance = rule.tolerance(base_value)
        if worse > tolerance:
            amount = f"{rule.amount:g}%" if rule.relative else f"{rule.amount:g}"
            return info, (f"{check} regressed vs baseline: {value:.4g} (baseline {base_value:.4g}, "
                          f"change {delta:+.4g}) exceeds the allowed {amount}")
        return info, None

    @property
    def compared(self) -> int:
        """m, the number of baseline values a run can compare: the Bonferroni divisor of :data:`ALPHA`."""
        return max(1, sum(1 for r in self.baseline.values() if r.get("value") is not None))

    def _noise_aware(self, check: str, params: Mapping[str, object], value: float, se: Optional[float],
                     base: float, base_se: Optional[float], spec: Optional[CheckSpec],
                     threshold: Optional[Threshold], info: dict) -> Optional[str]:
        """``auto``: worse by more than the spec's tolerance, beyond both runs' noise, at ALPHA / m.

        One-sided z test of H0 "worse by at most τ" with s² = se² + se_base² (two-sided "changed
        by at most τ" for a check whose direction is "any change"); Bonferroni over the m results
        the run compares keeps the whole run's false-alarm rate at or below ALPHA. (Holm's step-down
        would need every p-value first; each check is decided as it runs, so its first step is used.)
        """
        direction = worse_direction(spec, threshold)
        tolerance = tolerance_for(base, spec.tolerance if spec is not None else "5%")
        if spec is not None and spec.uncertainty != "samples" and (se is not None or base_se is not None):
            # e.g. probe scores: their interval covers sentence sampling, not the probe's training, which also
            # moves between runs; auto cannot tell that from a change
            info.update({"tolerance": tolerance, "not_gated": f"its interval covers {spec.uncertainty} only; "
                                                             "name it in a CHECK:TOL rule"})
            return None
        if se is None and base_se is None:
            # no sampling uncertainty on either side (probe fits, attention shares, CV accuracies): noise
            # cannot be told from a change, so auto leaves it to an explicit rule (CHECK:TOL)
            info.update({"tolerance": tolerance, "not_gated": "no uncertainty estimate; name it in a CHECK:TOL rule"})
            return None
        p = regression_p_value(value, se, base, base_se, tolerance, direction)
        alpha = ALPHA / self.compared
        info.update({"p_value": p, "tolerance": tolerance, "alpha": alpha})
        if not (p < alpha):
            return None
        verb = "changed" if direction == 0 else "regressed"
        noise = " ± ".join(f"{x:.2g}" for x in (se, base_se) if x is not None) or "no se"
        return (f"{check} {verb} vs baseline: {value:.4g} (baseline {base:.4g}, change {value - base:+.4g}, "
                f"allowed {tolerance:.3g}, noise {noise}; p = {p:.2g} < {ALPHA:g}/{self.compared})")
