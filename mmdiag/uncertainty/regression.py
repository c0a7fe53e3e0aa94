"""Noise-aware comparison of a run against a baseline, with a multiple-comparison correction.

A baseline rule (``--mm-compare-fail``, e.g. ``cone.layer:5%``) allows a result to get worse by a
tolerance τ. Both the run's value v and the baseline's b are estimates with standard errors
(se, se_b, from the bootstrap); the change w = worse_change(v, b) is then an estimate too, with
standard error s = sqrt(se² + se_b²) (independent samples, normal approximation). The gate tests

    H0: the true worsening is at most τ    against    H1: it is more than τ,

one-sided, z = (w − τ)/s, p = 1 − Φ(z) (Wellek 2010, "Testing Statistical Hypotheses of
Equivalence and Noninferiority", ch. 2: a non-inferiority test with margin τ). A check without a
direction (``direction = 0``) asks whether the value *changed* by more than τ either way:
H0: |Δ| <= τ, with the p-value at the worst case |Δ| = τ of the folded normal,
p = Φ((τ − |d|)/s) + Φ((−τ − |d|)/s) (two-sided; = 2Φ(−|d|/s) for τ = 0).

With no standard error on either side (bootstrap off), s = 0 and the decision is deterministic:
p = 0 when w > τ (a regression, as the value-only gate says) and p = 1 otherwise. A se missing on
one side only counts as 0 there (that side is taken as exact).

A run has ~150 results; testing each at α = 0.05 would flag about 7 of 150 unchanged results by
chance. :func:`judge` therefore corrects for multiplicity, by default with Holm's step-down
procedure (Holm 1979, Scand. J. Statist. 6:65), which controls the family-wise error rate: the
probability of *any* false regression in a run is at most α. A false alarm blocks a release and
costs a person's investigation, so a release gate wants FWER control; Holm is uniformly more
powerful than Bonferroni and needs no independence assumption. Benjamini–Hochberg (1995, JRSS B
57:289) controls the false discovery rate instead (the expected share of false alarms among the
flagged): more findings, at the price of some false ones per run, better suited to exploration;
it is offered as ``correction="bh"``.

>>> round(tolerance_for(0.80, "5%"), 6), tolerance_for(0.0, "5%"), tolerance_for(0.8, "0.02")
(0.04, 0.001, 0.02)
>>> p = regression_p_value(0.90, 0.01, 0.80, 0.01, tolerance=0.04, direction=+1)
>>> round(p, 4)                            # worse by 0.10 > 0.04, s = 0.014: z = 4.24
0.0
>>> regression_p_value(0.90, None, 0.80, None, 0.04, +1), regression_p_value(0.82, 0, 0.80, 0, 0.04, +1)
(0.0, 1.0)
>>> holm([0.01, 0.04, 0.03], alpha=0.05), benjamini_hochberg([0.01, 0.04, 0.03], alpha=0.05)
([True, False, False], [True, True, True])
>>> samples_to_decide(0.52, 0.02, n=500, threshold=0.5)    # 0.52 ± 1.96·0.02 straddles 0.5
1921
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from scipy.special import ndtr, ndtri

__all__ = [
    "DEFAULT_FLOOR",
    "CORRECTIONS",
    "worse_change",
    "tolerance_for",
    "regression_p_value",
    "holm",
    "benjamini_hochberg",
    "Comparand",
    "Verdict",
    "judge",
    "samples_to_decide",
]

#: absolute floor of a relative tolerance, for baselines near 0 (see :func:`tolerance_for`)
DEFAULT_FLOOR = 1e-3

_TOL = re.compile(r"^\s*(?P<amount>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<pct>%)?\s*$")


def _finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(float(x))


def worse_change(value: float, base: float, direction: int) -> float:
    """How much worse ``value`` is than ``base``: positive = worse, negative = better.

    ``direction`` +1: larger is worse (v − b); −1: smaller is worse (b − v); 0: no direction,
    any change counts (|v − b|).

    >>> worse_change(0.5, 0.4, +1), worse_change(0.5, 0.4, -1), worse_change(0.3, 0.4, 0)
    (0.09999999999999998, -0.09999999999999998, 0.10000000000000003)
    """
    if direction not in (-1, 0, 1):
        raise ValueError(f"direction must be -1, 0 or +1, got {direction!r}")
    delta = float(value) - float(base)
    return abs(delta) if direction == 0 else direction * delta


def tolerance_for(base: float, tol_text: str, floor: float = DEFAULT_FLOOR) -> float:
    """The allowed worsening for a rule's tolerance text: ``"5%"`` relative, ``"0.02"`` absolute.

    Relative: τ = max(p/100 · |base|, floor). Without the floor a baseline of 0 (or 1e-6) would
    allow no change at all, and rounding or a different BLAS would fail the release. The default
    floor 1e-3 is the resolution results are reported at (4 significant digits of values of
    order 1, the scale of every built-in metric: cosines, gaps, accuracies, correlations) and
    below the bootstrap se of those metrics at the usual sample sizes (about 0.005 at n = 5000),
    so it excuses rounding without hiding a real change. Set ``floor`` to 0 to disable it.
    Absolute: τ = the number, no floor. Raises ``ValueError`` for other text or negative amounts.
    """
    match = _TOL.match(str(tol_text))
    if not match:
        raise ValueError(f"tolerance {tol_text!r}: expected a percentage of the baseline (5%) "
                         "or an absolute change (0.02)")
    amount = float(match["amount"])
    if floor < 0:
        raise ValueError(f"tolerance floor must be >= 0, got {floor}")
    if match["pct"]:
        return max(amount / 100.0 * abs(float(base)), float(floor))
    return amount


def regression_p_value(value: float, se: Optional[float], base: float, base_se: Optional[float],
                       tolerance: float, direction: int) -> float:
    """p-value of H0 "worsened by at most ``tolerance``" (``direction`` ±1) or "changed by at most" (0).

    Formulas in the module docstring. A missing (None/NaN) se counts as 0; with s = 0 the answer
    is 0.0 beyond the tolerance and 1.0 within it. NaN when ``value`` or ``base`` is not finite.
    """
    if not (_finite(value) and _finite(base)):
        return math.nan
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    se2 = sum(float(s) ** 2 for s in (se, base_se) if _finite(s))
    worse = worse_change(value, base, direction)
    if se2 == 0.0:
        return 0.0 if worse > tolerance else 1.0
    s = math.sqrt(se2)
    if direction == 0:
        p = float(ndtr((tolerance - worse) / s) + ndtr((-tolerance - worse) / s))
    else:
        p = float(ndtr(-(worse - tolerance) / s))
    return min(1.0, max(0.0, p))


def _clean(p_values: Sequence[float]) -> list[float]:
    """p-values as floats; NaN counts as 1 (in the family, never rejected)."""
    return [1.0 if not _finite(p) else float(p) for p in p_values]


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm–Bonferroni step-down: which hypotheses to reject with family-wise error rate <= α.

    Sort p ascending, p_(1) <= … <= p_(m); reject H_(1) … H_(k−1) where k is the first rank with
    p_(k) > α/(m − k + 1). NaN p-values count in m but are never rejected.
    """
    p = _clean(p_values)
    m = len(p)
    out = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        if p[i] > alpha / (m - rank):
            break
        out[i] = True
    return out


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Benjamini–Hochberg step-up: reject H_(1) … H_(k) for the largest k with p_(k) <= k α / m (FDR <= α)."""
    p = _clean(p_values)
    m = len(p)
    order = sorted(range(m), key=lambda j: p[j])
    # k·α/m written as α/(m/k): exactly α at k = m and α/m at k = 1, the thresholds Holm uses there, so rounding
    # never makes BH stricter than Holm
    k = max((rank + 1 for rank, i in enumerate(order) if p[i] <= alpha / (m / (rank + 1))), default=0)
    out = [False] * m
    for i in order[:k]:
        out[i] = True
    return out


def _no_correction(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    return [p <= alpha for p in _clean(p_values)]


#: multiple-comparison corrections :func:`judge` accepts
CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg, "none": _no_correction}
_CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no correction"}


@dataclass
class Comparand:
    """One result and its baseline, as :func:`judge` takes them.

    ``direction``: +1 larger is worse, −1 smaller is worse, 0 no direction; ``tolerance_text``:
    the compare rule's tolerance (``"5%"``, ``"0.02"``), None when no rule applies; ``se`` and
    ``base_se`` may be None (no bootstrap); ``base`` None when the baseline lacks the result.
    """

    check: str
    params: Mapping[str, object] = field(default_factory=dict)
    value: Optional[float] = None
    se: Optional[float] = None
    base: Optional[float] = None
    base_se: Optional[float] = None
    direction: int = 0
    tolerance_text: Optional[str] = None

    @property
    def label(self) -> str:
        """``check[param-values]``, e.g. ``cone.layer[image-L11]``."""
        if not self.params:
            return self.check
        return f"{self.check}[{'-'.join(str(v) for v in self.params.values())}]"


@dataclass(frozen=True)
class Verdict:
    """The judgement of one :class:`Comparand`.

    ``regressed``: significantly worse than the baseline by more than the tolerance (directed
    checks only); ``changed``: the change beyond the tolerance is significant (for a directed
    check the same as ``regressed``; for ``direction = 0`` the only flag set); ``p_value``: the
    unadjusted p-value (NaN when not tested); ``worse_by``: :func:`worse_change`; ``tolerance``:
    τ; ``message``: empty when nothing is to be said, else one line for the report (a regression,
    a change, or a worsening beyond the tolerance that is within noise).
    """

    regressed: bool
    changed: bool
    p_value: float
    worse_by: float
    tolerance: float
    message: str = ""


def _pm(x: float, se: Optional[float]) -> str:
    return f"{x:.4g} ± {float(se):.2g}" if _finite(se) and float(se) > 0 else f"{x:.4g}"


def judge(results: Sequence[Comparand], alpha: float = 0.05, correction: str = "holm",
          floor: float = DEFAULT_FLOOR) -> list[Verdict]:
    """One :class:`Verdict` per comparand (same order), multiplicity-corrected over the run.

    The family is every comparand with a value, a baseline and a tolerance; its p-values
    (:func:`regression_p_value`) go through ``correction`` (``"holm"`` default, ``"bh"``,
    ``"none"``) at level ``alpha``. Comparands outside the family get NaN p and no flag.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {sorted(CORRECTIONS)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    tested: list[int] = []
    p_values: list[float] = []
    worse: dict[int, float] = {}
    tols: dict[int, float] = {}
    for i, c in enumerate(results):
        if c.tolerance_text is None or not (_finite(c.value) and _finite(c.base)):
            continue
        tols[i] = tolerance_for(float(c.base), c.tolerance_text, floor)
        worse[i] = worse_change(float(c.value), float(c.base), c.direction)
        tested.append(i)
        p_values.append(regression_p_value(c.value, c.se, c.base, c.base_se, tols[i], c.direction))
    rejected = dict(zip(tested, CORRECTIONS[correction](p_values, alpha)))
    p_of = dict(zip(tested, p_values))
    family = f"{_CORRECTION_NAMES[correction]} over {len(tested)} comparisons at α = {alpha:g}"
    out = []
    for i, c in enumerate(results):
        if i not in rejected:
            out.append(Verdict(False, False, math.nan, math.nan, math.nan, ""))
            continue
        w, tau, p, hit = worse[i], tols[i], p_of[i], rejected[i]
        what = "changed by" if c.direction == 0 else "worse by"
        text = (f"{c.label}: {_pm(float(c.value), c.se)} vs baseline {_pm(float(c.base), c.base_se)}, "
                f"{what} {w:.4g} (allowed {tau:.4g}, {c.tolerance_text.strip()}); p = {p:.2g}")
        if hit:
            verb = "changed" if c.direction == 0 else "regressed"
            message = f"{c.label} {verb} vs baseline — {text}, significant ({family})"
        elif w > tau:
            message = f"{c.label} beyond the tolerance but within noise — {text}, not significant ({family})"
        else:
            message = ""
        out.append(Verdict(hit and c.direction != 0, hit, p, w, tau, message))
    return out


def samples_to_decide(value: float, se: float, n: int, threshold: float, level: float = 0.95) -> Optional[int]:
    """Samples needed for the ``level`` interval of ``value`` to exclude ``threshold``, if se ∝ 1/sqrt(n).

    With z = Φ⁻¹((1 + level)/2) and g = |value − threshold|, the half-width z·se·sqrt(n/N) is
    below g for N >= n (z·se/g)²; returns that N rounded up (<= n when the interval already
    excludes the threshold). None when it is undecidable this way: value on the threshold, a
    non-finite input, or se missing. Assumes the value itself stays put as n grows.
    """
    if not (_finite(value) and _finite(se) and _finite(threshold)) or n < 1:
        return None
    gap = abs(float(value) - float(threshold))
    if gap == 0.0:
        return None
    z = float(ndtri((1 + level) / 2))
    return max(1, math.ceil(n * (z * float(se) / gap) ** 2))
