"""Table rows (a dataset, parquet file, CSV line or webdataset key) to :class:`Sample`-s, one per caption.

An image cell may hold encoded bytes (``{"bytes": b"...", "path": ...}`` as ``datasets.Image`` stores it, or raw
bytes) or a path relative to the data root; a caption cell a string or a list of strings (several captions
per image, all kept, sharing ``meta["image_key"]``). A bad cell is a DataError naming where the row is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mmdiag.data.files import check_inside
from mmdiag.data.types import IMAGE_KEY, EncodedImage, Sample
from mmdiag.errors import DataError


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def image_of(cell: Any, root: Optional[Path], where: str, allow_outside: bool) -> Any:
    """The image of one cell: :class:`EncodedImage` for bytes, a Path (checked to stay inside ``root``) for a path.

    ``where`` names the row in messages (``data.parquet row 7``, ``data.csv:3``). A path that resolves outside
    ``root`` is refused unless ``allow_outside`` (``--mm-allow-outside-data``).
    """
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            return EncodedImage(bytes(data), f"{where}" + (f" ({path})" if isinstance(path, str) and path else ""))
        cell = path
    if isinstance(cell, (bytes, bytearray)):
        if not cell:
            raise DataError(f"{where}: the image cell is empty (0 bytes)")
        return EncodedImage(bytes(cell), where)
    if isinstance(cell, str) and cell.strip().lower().startswith(("http://", "https://")):
        raise DataError(f"{where}: the image is a URL ({cell.strip()[:80]}); mmdiag reads local files only: download "
                        "the images first (img2dataset writes webdataset shards mmdiag reads)")
    if isinstance(cell, str) and cell.strip() and _valid_text(cell):
        if root is None:
            return Path(cell)
        image = root / cell
        if not allow_outside:
            check_inside(image, root, cell, where, None)
        return image
    raise DataError(f"{where}: the image cell holds {_describe(cell)}; expected image bytes (a datasets.Image "
                    "value) or a path relative to the data")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string that is not valid text"
    return f"a {type(value).__name__}"


def captions_of(cell: Any, where: str) -> list[str]:
    """The caption(s) of one cell: a non-empty string, or a non-empty list of them."""
    values = cell if isinstance(cell, (list, tuple)) else [cell]
    if not values:
        raise DataError(f"{where}: the caption cell is an empty list; expected a string or a list of strings")
    captions = []
    for value in values:
        if not isinstance(value, str) or not _valid_text(value):
            raise DataError(f"{where}: the caption cell holds {_describe(value)}; expected a string or a list of "
                            "strings")
        if not value.strip():
            raise DataError(f"{where}: the caption is empty")
        captions.append(value.strip())
    return captions


def row_samples(uid: str, image: Any, captions: list[str], source: str) -> list[Sample]:
    """One sample per caption of one image; with several captions they share ``meta["image_key"] = uid``."""
    if len(captions) == 1:
        return [Sample(uid=uid, image=image, caption=captions[0], meta={"source": source, IMAGE_KEY: uid})]
    return [Sample(uid=f"{uid}#{k}", image=image, caption=caption, meta={"source": source, IMAGE_KEY: uid})
            for k, caption in enumerate(captions)]
