"""The compact terminal table: a per-layer check collapses to one row per check and modality.

A 24-layer model otherwise prints 24 rows for each of cone.layer, geometry.rankme, probe.depth, ... per
modality; the compact row keeps what a reviewer decides on: the layer range, the value range over the
layers (min..max), where the maximum is, a sparkline of the values, and the worst status (with how many
layers have it when the layers disagree). ``--mm-table=full`` prints every layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from mmdiag.report.verdict import STATUS_ORDER
from mmdiag.thresholds import Result, param_id

#: eight block heights, lowest to highest
BLOCKS = "▁▂▃▄▅▆▇█"
#: the longest sparkline; longer series keep the maximum of each of this many buckets
MAX_SPARK = 32


def sparkline(values: list[Optional[float]]) -> str:
    """One block per value scaled between the series' min and max (a space where there is no value)."""
    if len(values) > MAX_SPARK:
        size = len(values) / MAX_SPARK
        buckets = [values[int(i * size):max(int((i + 1) * size), int(i * size) + 1)] for i in range(MAX_SPARK)]
        values = [max((v for v in b if v is not None), default=None) for b in buckets]
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    return "".join(" " if v is None else BLOCKS[0 if span <= 0 else min(int((v - low) / span * 8), 7)]
                   for v in values)


def _finite(value: Optional[float]) -> Optional[float]:
    return value if isinstance(value, (int, float)) and value == value and abs(value) != float("inf") else None


@dataclass
class Row:
    """One line of the table: a single result, or the layers of one check at one other parametrisation."""

    check: str
    results: list[Result] = field(default_factory=list)

    @property
    def grouped(self) -> bool:
        return len(self.results) > 1

    @property
    def layers(self) -> list[int]:
        return [r.params["layer"] for r in self.results]

    def params(self) -> str:
        if not self.grouped:
            return param_id(self.results[0].params)
        rest = param_id({k: v for k, v in self.results[0].params.items() if k != "layer"})
        span = f"L{min(self.layers):02d}-{max(self.layers):02d}"
        return f"{rest} {span}" if rest else span

    def values(self) -> list[Optional[float]]:
        return [_finite(r.value) for r in self.results]

    def value_range(self) -> Optional[tuple[float, float]]:
        known = [v for v in self.values() if v is not None]
        return (min(known), max(known)) if known else None

    def peak_layer(self) -> Optional[int]:
        values = self.values()
        known = [(v, k) for v, k in zip(values, self.layers) if v is not None]
        return max(known, key=lambda pair: pair[0])[1] if known else None

    def threshold(self) -> str:
        described = {r.threshold.describe() if r.threshold else "-" for r in self.results}
        return described.pop() if len(described) == 1 else "varies by layer"

    def status(self) -> str:
        statuses = [str(r.status) for r in self.results]
        worst = min(statuses, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else -1)
        n = statuses.count(worst)
        return worst if n == len(statuses) else f"{worst} {n}/{len(statuses)}"

    def delta(self) -> Optional[float]:
        deltas = [d for r in self.results for d in [(r.baseline or {}).get("delta")] if isinstance(d, (int, float))]
        return max(deltas, key=abs) if deltas else None


def _layer_key(result: Result) -> Optional[tuple]:
    layer = result.params.get("layer")
    if not isinstance(layer, int) or isinstance(layer, bool):
        return None
    return (result.check, tuple((k, str(v)) for k, v in result.params.items() if k != "layer"))


def rows(results: Iterable[Result], compact: bool = True) -> list[Row]:
    """Table rows in the order of ``results``; with ``compact`` the layers of a check and its other params
    share one row (placed where the first of them was), sorted by layer."""
    out: list[Row] = []
    groups: dict[tuple, Row] = {}
    for r in results:
        key = _layer_key(r) if compact else None
        if key is None:
            out.append(Row(r.check, [r]))
            continue
        row = groups.get(key)
        if row is None:
            row = groups[key] = Row(r.check)
            out.append(row)
        row.results.append(r)
    for row in groups.values():
        row.results.sort(key=lambda r: r.params["layer"])
    return out


__all__ = ["BLOCKS", "Row", "rows", "sparkline"]
