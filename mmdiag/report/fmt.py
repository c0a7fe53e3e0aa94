"""Plain-text formatting of results-document values for the HTML report (escaping is jinja's job).

Numbers get 4 significant digits (3 in detail tables and lists), seconds a unit, parameter dicts the
``image · L07`` form the pytest ids use, and a result's ``details`` become rows of a readable table
instead of raw JSON: nested mappings are flattened to ``outer · inner`` keys, lists of numbers are shown
as a short rounded list with their length.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["fmt_value", "fmt_params", "fmt_threshold", "fmt_seconds", "fmt_params_count", "details_rows",
           "is_num"]

_LIST_SHOWN = 8
_TEXT_MAX = 160


def is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_value(value: Any, digits: int = 4) -> str:
    """A result value for the table: ``digits`` significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    text = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fmt_params(params: Any) -> str:
    """``{"modality": "image", "layer": 7}`` -> ``"image · L07"``; others as k=v."""
    if not isinstance(params, Mapping) or not params:
        return ""
    parts = []
    for key in ("modality", "direction"):
        if params.get(key) is not None:
            parts.append(str(params[key]))
    layer = params.get("layer")
    if layer is not None:
        parts.append(f"L{layer:02d}" if isinstance(layer, int) and not isinstance(layer, bool)
                     and layer >= 0 else f"L{layer}")
    for key in sorted(params, key=str):
        if key not in ("modality", "direction", "layer"):
            parts.append(f"{key}={fmt_value(params[key])}")
    return " · ".join(parts)


def fmt_threshold(threshold: Any) -> str:
    """``{"op": "<=", "value": 1.1, "level": "fail"}`` -> ``"<= 1.1 (fail)"``."""
    if not isinstance(threshold, Mapping):
        return ""
    op = threshold.get("op")
    parts = [str(op) if op is not None else "", fmt_value(threshold.get("value"))
             if "value" in threshold else ""]
    text = " ".join(p for p in parts if p)
    level = threshold.get("level")
    if level is not None:
        text = f"{text} ({level})" if text else f"({level})"
    return text


def fmt_seconds(seconds: Any) -> str:
    if not is_num(seconds) or not math.isfinite(seconds):
        return fmt_value(seconds)
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def fmt_params_count(n: Any) -> str:
    if not is_num(n) or not math.isfinite(n):
        return fmt_value(n)
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit} ({int(n):,})"
    return f"{int(n):,}" if float(n).is_integer() else f"{n:g}"


def _fmt_list(values: list) -> str:
    if all(is_num(v) or v is None for v in values):
        shown = ", ".join(fmt_value(v, 3) for v in values[:_LIST_SHOWN])
        more = f", … ({len(values)} values)" if len(values) > _LIST_SHOWN else ""
        return f"[{shown}{more}]"
    if all(isinstance(v, str) for v in values):
        text = ", ".join(values[:_LIST_SHOWN]) + (f", … ({len(values)} items)" if len(values) > _LIST_SHOWN else "")
        return text
    return f"{len(values)} items"


def _fmt_detail(key: str, value: Any) -> str:
    if isinstance(value, list):
        return _fmt_list(value)
    if is_num(value) and re.search(r"(^|_)s$|seconds", key):
        return fmt_seconds(value)
    text = fmt_value(value, 3) if not isinstance(value, str) else value
    return text if len(text) <= _TEXT_MAX else text[:_TEXT_MAX - 1] + "…"


def details_rows(details: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(key, text) rows of a result's ``details``: nested mappings flattened (two levels), numbers rounded."""
    if not isinstance(details, Mapping):
        return []
    rows: list[tuple[str, str]] = []
    for key, value in details.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth < 2 and value:
            rows.extend(details_rows(value, f"{name} · ", depth + 1))
        elif isinstance(value, Mapping):
            rows.append((name, f"{len(value)} entries"))
        else:
            rows.append((name, _fmt_detail(str(key), value)))
    return rows
