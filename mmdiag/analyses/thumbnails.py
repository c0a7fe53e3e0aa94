"""Thumbnails of sample images for the report, cut the way the model's preprocessing cuts them."""
from __future__ import annotations

import base64
import io
from typing import Any, Optional

from PIL import Image

__all__ = ["thumbnail_uri"]


def _centre_crop(image: Any, aspect: float) -> Any:
    """The largest centred part of ``image`` with ``aspect`` (width / height)."""
    width, height = image.size
    if width / height > aspect:  # too wide: cut the sides
        new_w = height * aspect
        left = (width - new_w) / 2
        return image.crop((round(left), 0, round(left + new_w), height))
    new_h = width / aspect
    top = (height - new_h) / 2
    return image.crop((0, round(top), width, round(top + new_h)))


def thumbnail_uri(image: Any, px: int = 96, geometry: Optional[tuple[str, tuple[int, int]]] = None,
                  aspect: Optional[float] = None) -> Optional[str]:
    """A PNG data URI of ``image`` as the model sees it, at most ``px`` pixels on the long side.

    ``geometry`` is :func:`mmdiag.models.regions.preprocess_geometry`'s ``(mode, (h, w))``:
    ``crop`` cuts the centre to the input's aspect, ``resize`` stretches to it;
    ``aspect`` (width / height) overrides the output aspect; None keeps the
    image's own. Returns None for something that is not a PIL image.
    """
    if image is None or not hasattr(image, "convert") or not hasattr(image, "size"):
        return None
    img = image.convert("RGB")
    if aspect is None:
        aspect = (geometry[1][1] / geometry[1][0]) if geometry is not None else img.size[0] / img.size[1]
    if geometry is not None and geometry[0] == "crop":
        img = _centre_crop(img, aspect)
    if aspect >= 1:
        size = (px, max(1, round(px / aspect)))
    else:
        size = (max(1, round(px * aspect)), px)
    img = img.resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
