"""The explorer's view model: the examples' attention (``series["attention_image"]["explore"]``) and the
hidden-state maps of every layer (``series["explore_hidden"]``) as one JSON block for report.js.

The JSON is written into a ``<script type="application/json">`` element, which the browser never
executes; ``<``, ``>`` and ``&`` are escaped as ``\\u003c`` etc., so no string from the data can close
the element. Thumbnails that are not ``data:image/png|jpeg;base64`` URIs are dropped here (and again
in the script), so the page never fetches anything.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Optional

from markupsafe import Markup

__all__ = ["explorer_context"]

_DATA_URI = re.compile(r"data:image/(?:png|jpeg);base64,[A-Za-z0-9+/]+={0,2}")
_STREAM_KEYS = ("tokens", "kinds", "grid", "layers", "heads", "q", "peak")


def _safe_json(value: Any) -> Markup:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _stream(entry: Any) -> Optional[dict]:
    if not isinstance(entry, Mapping) or not all(k in entry for k in _STREAM_KEYS):
        return None
    tokens, kinds = entry["tokens"], entry["kinds"]
    if not (isinstance(tokens, list) and isinstance(kinds, list) and len(tokens) == len(kinds) and tokens):
        return None
    layers, heads = entry["layers"], entry["heads"]
    if not (isinstance(layers, int) and isinstance(heads, int) and layers > 0 and heads > 0):
        return None
    if not (isinstance(entry["q"], str) and isinstance(entry["peak"], str)):
        return None
    d = len(tokens)
    # the base64 payloads must hold exactly L*H*D*D bytes and L*H*D float32s, or the script would misread them
    if len(entry["q"]) != 4 * ((layers * heads * d * d + 2) // 3) or \
            len(entry["peak"]) != 4 * ((layers * heads * d * 4 + 2) // 3):
        return None
    grid = entry["grid"] if isinstance(entry["grid"], list) and len(entry["grid"]) == 2 else None
    return {"tokens": [str(t) for t in tokens], "kinds": [str(k) for k in kinds], "grid": grid,
            "layers": layers, "heads": heads, "q": entry["q"], "peak": entry["peak"]}


def explorer_context(series: Mapping) -> Optional[dict]:
    """``{"examples": [labels], "json": Markup, "hidden": bool, "note": str}`` or None without explorer data."""
    att = series.get("attention_image") if isinstance(series.get("attention_image"), Mapping) else {}
    explore = att.get("explore") if isinstance(att.get("explore"), Mapping) else {}
    examples = []
    for ex in explore.get("examples") or []:
        if not isinstance(ex, Mapping) or not isinstance(ex.get("streams"), Mapping):
            continue
        streams = {str(k): s for k, v in ex["streams"].items() if (s := _stream(v)) is not None}
        if not streams:
            continue
        thumb = ex.get("thumbnail")
        examples.append({"uid": str(ex.get("uid") or f"example {len(examples) + 1}"),
                         "caption": str(ex.get("caption") or ""),
                         "thumbnail": thumb if isinstance(thumb, str) and _DATA_URI.fullmatch(thumb) else None,
                         "streams": streams})
    if not examples:
        return None
    hidden = series.get("explore_hidden") if isinstance(series.get("explore_hidden"), Mapping) else None
    if hidden is not None and not isinstance(hidden.get("points"), Mapping):
        hidden = None
    data = {"examples": examples, "hidden": None if hidden is None else
            {"layers": [str(k) for k in hidden.get("layers") or [] if str(k) in hidden["points"]],
             "points": hidden["points"], "captions": [str(c) for c in hidden.get("captions") or []],
             "method": str(hidden.get("method") or "")}}
    names = sorted({n for e in examples for n in e["streams"]})
    joint = any(n in ("joint", "cross") for n in names)
    note = ("Pick an example, a layer and a head; hover or click a caption word to see its attention over the image "
            "patches, or a patch to see its attention over the words; click a cell of the block-by-head map to open "
            "that head." if joint else
            "This model encodes text and image in separate towers (streams: " + ", ".join(names) + "): a word attends "
            "to words and special tokens, a patch to patches and the CLS token. Pick an example, a stream, a layer and "
            "a head; hover or click a token; click a cell of the block-by-head map to open that head.")
    return {"examples": [f"{e['uid']}: {e['caption'][:60]}" for e in examples], "json": _safe_json(data),
            "hidden": data["hidden"] is not None, "note": note}
