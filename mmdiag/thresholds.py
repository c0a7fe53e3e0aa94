"""Default thresholds, user overrides and their evaluation into a status.

A threshold says what a healthy value looks like (``op`` and ``value``) and
how bad a breach is (``level``: ``fail`` fails the test, ``warn`` passes it
with a warning). Precedence, lowest first: the default in the check's
:class:`~mmdiag.checkspec.CheckSpec`, then
``[tool.mmdiag.thresholds]`` in pyproject.toml / the ``mm_thresholds`` ini
entry, then ``--mm-threshold`` on the command line. A key may name a check for
all its params (``cone.layer``) or one parametrisation (``cone.layer[image-L11]``).
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from mmdiag.errors import SpecError

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
LEVELS = ("fail", "warn")


@dataclass(frozen=True)
class Threshold:
    """``value OP threshold`` must hold; otherwise the check gets status ``level``."""

    op: str
    value: float
    level: str = "fail"
    rationale: str = ""

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.value)

    def to_json(self) -> dict:
        return {"op": self.op, "value": self.value, "level": self.level}

    def describe(self) -> str:
        return f"{self.op} {self.value:g} ({self.level})"


_SPEC = re.compile(r"^\s*(?P<check>[a-z_]+\.[a-z_0-9]+)(?:\[(?P<params>[^\]]+)\])?\s*=\s*"
                   r"(?P<op><=|>=|<|>):\s*(?P<value>[^:\s]+)\s*(?::\s*(?P<level>\w+))?\s*$")
SYNTAX = "CHECK[=PARAMS]=OP:VALUE[:LEVEL], e.g. gap.norm=<=:1.0 or cone.layer[image-L11]=<:0.9:warn"


def parse_override(text: str, source: str = "--mm-threshold") -> tuple[str, Threshold]:
    """Parse ``CHECK[PARAMS]=OP:VALUE[:LEVEL]`` into (key, Threshold); errors list what is valid."""
    match = _SPEC.match(text)
    if not match:
        raise SpecError(f"{source}={text!r}: expected {SYNTAX}; operators: {', '.join(OPS)}; "
                        f"levels: {', '.join(LEVELS)}")
    check = match["check"]
    try:
        value = float(match["value"])
    except ValueError:
        raise SpecError(f"{source}={text!r}: {match['value']!r} is not a number; expected {SYNTAX}") from None
    if not math.isfinite(value):
        raise SpecError(f"{source}={text!r}: the threshold must be a finite number, not {match['value']!r}")
    level = match["level"] or "fail"
    if level not in LEVELS:
        raise SpecError(f"{source}={text!r}: unknown level {level!r}; levels: {', '.join(LEVELS)}")
    key = check if not match["params"] else f"{check}[{match['params'].strip()}]"
    return key, Threshold(match["op"], value, level, f"{source}={text.strip()}")


def parse_table(table: Mapping[str, object], source: str) -> dict[str, Threshold]:
    """``[tool.mmdiag.thresholds]``: ``"gap.norm" = "<=:1.0"`` (or ``"<=:1.0:warn"``)."""
    return dict(parse_override(f"{key}={value}", source) for key, value in table.items())


def param_id(params: Mapping[str, object]) -> str:
    """The pytest-style id of a parametrisation: ``image-L07``, ``text->image-L03``."""
    parts = []
    for key, value in params.items():
        parts.append(f"L{value:02d}" if key == "layer" and isinstance(value, int) else str(value))
    return "-".join(parts)


def check_of(key: str) -> str:
    """The check name of an override key: ``cone.layer[image-L11]`` -> ``cone.layer``."""
    return key.split("[", 1)[0]


class Thresholds:
    """Resolves the threshold of a check for given params, honouring precedence.

    ``defaults(check)`` gives a check's own default (its spec's threshold); the
    overrides come from pyproject, the ini file and the command line, in that order.
    """

    def __init__(self, layers: Iterable[Mapping[str, Threshold]] = (),
                 defaults: Callable[[str], Optional[Threshold]] = lambda check: None) -> None:
        self.overrides: dict[str, Threshold] = {}
        for layer in layers:
            self.overrides.update(layer)
        self.defaults = defaults

    def lookup(self, check: str, params: Mapping[str, object]) -> Optional[Threshold]:
        specific = f"{check}[{param_id(params)}]" if params else None
        if specific and specific in self.overrides:
            return self.overrides[specific]
        if check in self.overrides:
            return self.overrides[check]
        return self.defaults(check)

    def unknown_checks(self, known: Callable[[str], bool]) -> list[tuple[str, str]]:
        """(where, check) of each override naming a check that ``known`` does not accept."""
        return [(t.rationale or key, check_of(key)) for key, t in self.overrides.items() if not known(check_of(key))]


def evaluate(value: Optional[float], threshold: Optional[Threshold]) -> str:
    """Status of a value: ``info`` without a threshold (reported, not gated), else pass or the threshold's
    level when breached; a missing value is an error and a non-finite one fails."""
    if value is None:
        return "error"
    if isinstance(value, float) and not math.isfinite(value):
        return "fail"
    if threshold is None:
        return "info"
    if threshold.holds(value):
        return "pass"
    return threshold.level


def judge(value: Optional[float], threshold: Optional[Threshold], low: Optional[float] = None,
          high: Optional[float] = None) -> tuple[str, bool]:
    """(status, inconclusive) of a value with its interval ``[low, high]`` (DESIGN.md §8, ``--mm-gate=ci``).

    A breach counts only when the whole interval is past the threshold; when the value
    breaches but the interval straddles the threshold the result is ``warn`` and
    inconclusive (more samples would decide it). Without an interval this is :func:`evaluate`.
    """
    status = evaluate(value, threshold)
    if status not in ("fail", "warn") or threshold is None or value is None or not math.isfinite(value):
        return status, False
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return status, False
    if threshold.holds(low) or threshold.holds(high):
        return "warn", True
    return status, False


@dataclass
class Result:
    """One check's outcome for one parametrisation, as written to results.json."""

    check: str
    params: dict
    value: Optional[float]
    status: str
    threshold: Optional[Threshold] = None
    details: Optional[dict] = None
    message: str = ""
    nodeid: str = ""
    baseline: Optional[dict] = None
    #: the value's sampling interval ``{"low", "high", "level", "method"}`` and standard error (DESIGN.md §8)
    ci: Optional[dict] = None
    se: Optional[float] = None

    def to_json(self) -> dict:
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        doc = {"check": self.check, "params": dict(self.params), "value": value, "status": self.status,
               "threshold": self.threshold.to_json() if self.threshold else None,
               "details": self.details or {}, "message": self.message}
        if value is not None:  # every value carries its uncertainty, null where none was estimated
            doc["ci"] = dict(self.ci) if self.ci else {"low": None, "high": None, "level": None, "method": "none"}
            doc["se"] = self.se
        if self.baseline is not None:
            doc["baseline"] = dict(self.baseline)
        return doc
