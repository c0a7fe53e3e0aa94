"""Small PNG images as data URIs, and the size of a PNG data URI.

The attention-over-image view stretches a ``rows x cols`` heat map over a
thumbnail; a tiny RGBA PNG scaled with pixelated rendering is far smaller than
one SVG rectangle per cell, and a data URI keeps the page self-contained.  The
size reader only parses the IHDR chunk, so an untrusted thumbnail is never
decoded.
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Optional

import numpy as np
from PIL import Image

__all__ = ["png_size", "png_uri"]

_PREFIX = "data:image/png;base64,"


def png_uri(rgba: np.ndarray) -> str:
    """A PNG data URI of an ``(h, w, 4)`` uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", optimize=True)
    return _PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def png_size(uri: str) -> Optional[tuple[int, int]]:
    """(width, height) from a PNG data URI's IHDR chunk, or None."""
    if not uri.startswith(_PREFIX):
        return None
    try:
        head = base64.b64decode(uri[22:22 + 44])
    except (binascii.Error, ValueError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return (w, h) if w > 0 and h > 0 else None
