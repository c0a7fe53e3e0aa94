"""Writing and reading results.json atomically (write a temp file, then rename)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mmdiag.atomic import atomic_write_text
from mmdiag.errors import DataError


def _clean(value: Any) -> Any:
    """Replace NaN/inf by None so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_clean(v) for v in value), key=str)
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if hasattr(value, "item"):
        return _clean(value.item())
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def write_json(doc: dict, path: Path) -> Path:
    return atomic_write_text(path, json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n")


def read_json(path: Path) -> dict:
    """Read a results JSON; a missing or malformed file is a DataError naming it."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read results JSON ({exc.strerror})", path) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg})", path, exc.lineno) from None
    if not isinstance(doc, dict) or "results" not in doc:
        raise DataError('not an mmdiag results file (no "results" key)', path)
    return doc
