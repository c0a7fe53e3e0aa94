"""Reading untrusted results.json series values as numbers and arrays.

The figures draw whatever a document holds, and a document may come from an
old run, another tool or a hand edit: keys can be missing, ``null`` stands for
NaN, lists can be ragged and values can have the wrong type.  These helpers turn
such JSON into float arrays once, so each figure only has to ask "is there
anything finite to draw?".  A value that cannot be read as a number becomes NaN
(drawn as a gap); nothing here raises on bad input.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

__all__ = [
    "floats", "has_data", "int_pair", "is_int", "matrix", "modality_items", "modality_values",
    "num", "point", "points", "subsample", "xy",
]

#: Modalities drawn first, in this order; any other name follows.
_MODALITY_ORDER = {"image": 0, "text": 1}


def num(value: Any) -> float:
    """A finite-or-NaN float from a JSON scalar; anything unreadable is NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan if value is None else float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def is_int(value: Any) -> bool:
    """Whether ``value`` is a JSON integer (``true``/``false`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def floats(values: Any) -> Optional[np.ndarray]:
    """A 1-D float array from a JSON list (``null`` -> NaN), or None if not a list."""
    if not isinstance(values, (list, tuple)) or not values:
        return None
    return np.array([num(v) for v in values], dtype=float)


def has_data(arr: Optional[np.ndarray]) -> bool:
    """Whether ``arr`` holds at least one finite value."""
    return arr is not None and arr.size > 0 and bool(np.isfinite(arr).any())


def xy(x: Optional[np.ndarray], y: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pair an x axis with y values; a missing or short x axis falls back to 0..n-1."""
    assert y is not None
    if x is None or x.size < y.size or not np.isfinite(x[: y.size]).all():
        return np.arange(y.size, dtype=float), y
    return x[: y.size], y


def points(values: Any) -> Optional[np.ndarray]:
    """An (n, 2) float array of finite points from ``[[x, y], ...]``; None if empty."""
    if not isinstance(values, (list, tuple)):
        return None
    rows = []
    for item in values:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            p = (num(item[0]), num(item[1]))
            if math.isfinite(p[0]) and math.isfinite(p[1]):
                rows.append(p)
    if not rows:
        return None
    return np.array(rows, dtype=float)


def point(value: Any) -> Optional[np.ndarray]:
    """One finite ``[x, y]`` point as a length-2 array, or None."""
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        p = np.array([num(value[0]), num(value[1])])
        if np.isfinite(p).all():
            return p
    return None


def int_pair(value: Any) -> Optional[tuple[int, int]]:
    """``[a, b]`` of two integers >= 1 (written as ints or integral floats), or None."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        a, b = num(value[0]), num(value[1])
        if math.isfinite(a) and math.isfinite(b) and a == int(a) and b == int(b) and a >= 1 and b >= 1:
            return int(a), int(b)
    return None


def matrix(rows: Any) -> Optional[np.ndarray]:
    """A 2-D float array from a list of lists (ragged rows padded with NaN)."""
    if not isinstance(rows, (list, tuple)) or not rows:
        return None
    parsed = [floats(r) if isinstance(r, (list, tuple)) else None for r in rows]
    width = max((r.size for r in parsed if r is not None), default=0)
    if width == 0:
        return None
    out = np.full((len(parsed), width), np.nan)
    for i, r in enumerate(parsed):
        if r is not None:
            out[i, : r.size] = r
    return out if np.isfinite(out).any() else None


def subsample(pts: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` rows of ``pts``, evenly spaced (deterministic)."""
    if pts.shape[0] <= k:
        return pts
    idx = np.unique(np.linspace(0, pts.shape[0] - 1, k).round().astype(int))
    return pts[idx]


def modality_items(mapping: Any, skip: Sequence[str] = ()) -> list[tuple[str, Mapping]]:
    """The ``(name, dict)`` entries of a per-modality mapping, image and text first."""
    if not isinstance(mapping, Mapping):
        return []
    items = [(str(k), v) for k, v in mapping.items()
             if isinstance(v, Mapping) and str(k) not in skip]
    return sorted(items, key=lambda kv: _MODALITY_ORDER.get(kv[0], 2))


def modality_values(entry: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs of a per-modality mapping, image and text first."""
    if not isinstance(entry, Mapping):
        return []
    return sorted(((str(k), v) for k, v in entry.items()), key=lambda kv: _MODALITY_ORDER.get(kv[0], 2))
