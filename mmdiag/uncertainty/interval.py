"""A confidence interval with its standard error: the uncertainty attached to one scalar result.

Every result with a value carries ``"ci": {"low", "high", "level", "method"}`` and ``"se"``
(DESIGN.md §8). :class:`Interval` is that pair in one immutable value; :meth:`Interval.to_json`
writes the ``"ci"`` object and the caller writes :attr:`Interval.se` next to it.

Non-finite numbers: an interval that could not be computed (too few finite bootstrap replicates,
a statistic for which resampling is not meaningful, ``method="none"``) has NaN bounds and/or a NaN
``se``. JSON has no NaN, so :meth:`~Interval.to_json` writes such a bound as ``None`` (``null``);
:meth:`~Interval.contains` is False for NaN bounds or a NaN argument, and :attr:`~Interval.width`
is NaN. Infinite bounds are kept as they are in the object and written as ``None`` too.

>>> ci = Interval(low=0.41, high=0.47, se=0.015)
>>> ci.to_json()
{'low': 0.41, 'high': 0.47, 'level': 0.95, 'method': 'bootstrap'}
>>> ci.contains(0.45), ci.contains(0.5), round(ci.width, 2)
(True, False, 0.06)
>>> Interval.undefined("none").to_json()
{'low': None, 'high': None, 'level': 0.95, 'method': 'none'}
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

__all__ = ["Interval", "json_number"]


def json_number(x: Optional[float]) -> Optional[float]:
    """``float(x)`` when finite, else ``None`` (JSON ``null``): NaN and ±inf are not JSON.

    >>> json_number(1), json_number(float("nan")), json_number(None)
    (1.0, None, None)
    """
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval ``[low, high]`` at coverage ``level`` and the standard error.

    * ``low``, ``high``: the bounds (``low <= high`` whenever both are finite);
    * ``se``: the standard error of the point estimate (for the bootstrap, the standard
      deviation of the replicates with ddof = 1);
    * ``level``: the nominal coverage, in (0, 1);
    * ``method``: how it was obtained: ``"bootstrap"`` / ``"percentile"`` (percentile bootstrap),
      ``"bca"`` (bias-corrected and accelerated bootstrap), ``"none"`` (no interval: the
      statistic is not a function of iid samples, e.g. a cross-validated accuracy);
    * ``resamples``: how many finite bootstrap replicates it rests on (0 when not a bootstrap).
    """

    low: float
    high: float
    se: float
    level: float = 0.95
    method: str = "bootstrap"
    resamples: int = 0

    def centred(self, value: float) -> "Interval":
        """The normal-approximation interval ``value ± z·se`` with this interval's se (``bootstrap-normal``).

        For statistics that resampling biases (a resample repeats rows, which a spectrum or a pairwise
        statistic counts as extra mass), the percentile interval can sit beside the value; the bootstrap se
        still measures the spread, so the interval is centred on the value itself.
        """
        from scipy.special import ndtri

        if not (math.isfinite(value) and math.isfinite(self.se)):
            return Interval(math.nan, math.nan, self.se, self.level, "bootstrap-normal", self.resamples)
        half = float(ndtri((1 + self.level) / 2)) * self.se
        return Interval(value - half, value + half, self.se, self.level, "bootstrap-normal", self.resamples)

    def __post_init__(self) -> None:
        if not 0.0 < float(self.level) < 1.0:
            raise ValueError(f"Interval: level must be in (0, 1), got {self.level}")
        if math.isfinite(self.low) and math.isfinite(self.high) and self.low > self.high:
            raise ValueError(f"Interval: low {self.low} > high {self.high}")
        if not math.isnan(self.se) and self.se < 0:
            raise ValueError(f"Interval: se must be >= 0, got {self.se}")

    @classmethod
    def undefined(cls, method: str = "none", level: float = 0.95) -> "Interval":
        """An interval that does not exist: NaN bounds and se (written as ``null``)."""
        nan = float("nan")
        return cls(nan, nan, nan, level=level, method=method, resamples=0)

    @property
    def defined(self) -> bool:
        """True when both bounds are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def width(self) -> float:
        """``high - low`` (NaN when a bound is NaN)."""
        return float(self.high - self.low)

    def contains(self, x: float) -> bool:
        """``low <= x <= high``; False when ``x`` or a bound is NaN.

        >>> Interval(0.0, 1.0, 0.2).contains(1.0), Interval.undefined().contains(0.0)
        (True, False)
        """
        x = float(x)
        if math.isnan(x) or math.isnan(self.low) or math.isnan(self.high):
            return False
        return self.low <= x <= self.high

    def excludes(self, threshold: float) -> bool:
        """True when the whole interval lies on one side of ``threshold`` (a decided gate)."""
        return self.defined and not self.contains(threshold)

    def to_json(self) -> dict:
        """The pinned ``"ci"`` object ``{"low", "high", "level", "method"}``; non-finite bounds as ``None``."""
        return {"low": json_number(self.low), "high": json_number(self.high),
                "level": float(self.level), "method": str(self.method)}
