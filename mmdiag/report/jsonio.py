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


#: deepest nesting of lists/objects a results JSON may have (real files stay below ~10)
MAX_DEPTH = 200


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/objects at most ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def read_json(path: Path) -> dict:
    """Read a results JSON; a missing, malformed or hostile file is a DataError naming it.

    Hostile: not UTF-8, nested deeper than :data:`MAX_DEPTH`, integers past Python's digit limit,
    ``results`` not a list of objects, ``run``/``series`` not objects. ``NaN``/``Infinity`` and
    numbers past the float range (``1e999``, read as infinity) are accepted: the report shows them as such.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read results JSON ({exc.strerror})", path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start}: {exc.reason})", path) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg})", path, exc.lineno) from None
    except RecursionError:
        raise DataError(f"malformed JSON (nested too deeply; at most {MAX_DEPTH} levels)", path) from None
    except ValueError as exc:  # e.g. an integer literal past sys.get_int_max_str_digits()
        raise DataError("malformed JSON (an integer literal with too many digits)"
                        if "digits" in str(exc) else f"malformed JSON ({exc})", path) from None
    if not isinstance(doc, dict) or "results" not in doc:
        raise DataError('not an mmdiag results file (no "results" key)', path)
    if not _depth_ok(doc):
        raise DataError(f"malformed JSON (nested too deeply; at most {MAX_DEPTH} levels)", path)
    results = doc["results"]
    if not isinstance(results, list):
        raise DataError(f'not an mmdiag results file ("results" is {_kind(results)}, not a list)', path)
    for i, item in enumerate(results):
        if not isinstance(item, dict):
            raise DataError(f'not an mmdiag results file ("results" item {i} is {_kind(item)}, not an object)',
                            path)
    for key in ("run", "series"):
        if key in doc and not isinstance(doc[key], dict):
            raise DataError(f'not an mmdiag results file ("{key}" is {_kind(doc[key])}, not an object)', path)
    return doc


def _kind(value: Any) -> str:
    """The JSON type of ``value``, for messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
