"""Which table columns hold the image and the caption: ``--mm-data-columns=image=COL,caption=COL`` or found.

Hugging Face datasets, parquet files and CSV/TSV tables name their columns freely. Without the option the image
column is the one whose feature type is ``datasets.Image`` (else the first whose name is a usual one: ``image``,
``jpg``, ``image_path``, ...), and the caption column the first with a usual caption name (``caption``,
``text``, ``sentences``, ...). A column the user names that the table lacks is an error naming the columns it has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from mmdiag.errors import DataError, SpecError

#: names tried, in order, when no column has the ``datasets.Image`` feature type
IMAGE_NAMES = ("image", "img", "jpg", "png", "jpeg", "webp", "image_path", "image_file", "file_name", "filename",
               "filepath", "file_path", "file", "path", "picture")
#: caption column names tried, in order (a column holding a list of strings gives several captions per image)
CAPTION_NAMES = ("caption", "captions", "text", "txt", "sentence", "sentences", "raw", "alt_text", "description",
                 "prompt", "title", "label_text")
ROLES = ("image", "caption")
FORMAT = "--mm-data-columns=image=COL,caption=COL (either part may be left out)"


@dataclass(frozen=True)
class ColumnSpec:
    """Columns the user named (None: find it)."""

    image: Optional[str] = None
    caption: Optional[str] = None


def parse_columns(raw: Optional[str]) -> ColumnSpec:
    """``image=COL,caption=COL`` -> :class:`ColumnSpec`; a SpecError says what is accepted."""
    if raw is None or not str(raw).strip():
        return ColumnSpec()
    found: dict[str, str] = {}
    for part in str(raw).split(","):
        role, sep, column = part.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or role not in ROLES or not column:
            raise SpecError(f"--mm-data-columns={raw!r}: cannot read {part.strip()!r}; accepted: {FORMAT}")
        if role in found:
            raise SpecError(f"--mm-data-columns={raw!r}: {role} is given twice; accepted: {FORMAT}")
        found[role] = column
    return ColumnSpec(**found)


def _listed(columns: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in columns) or "none"


def choose_columns(columns: Iterable[str], spec: ColumnSpec, where: str,
                   image_typed: Iterable[str] = ()) -> tuple[str, str]:
    """The (image, caption) columns of a table with ``columns``; ``image_typed`` have the ``datasets.Image`` type.

    A DataError naming ``where`` (the file or dataset) lists the columns there are when a named column is
    missing or none can be found.
    """
    columns = list(columns)
    lowered = {c.lower(): c for c in reversed(columns)}

    def pick(role: str, given: Optional[str], typed: Iterable[str], names: tuple[str, ...]) -> str:
        if given is not None:
            if given not in columns:
                raise DataError(f"--mm-data-columns names {role} column {given!r}, which it does not have; its "
                                f"columns: {_listed(columns)}", where)
            return given
        for column in typed:
            return column
        for name in names:
            if name in lowered:
                return lowered[name]
        raise DataError(f"no {role} column found (tried {', '.join(names[:6])}, ...); its columns: "
                        f"{_listed(columns)}; name it with {FORMAT}", where)

    image = pick("image", spec.image, list(image_typed), IMAGE_NAMES)
    caption = pick("caption", spec.caption, (), CAPTION_NAMES)
    if image == caption:
        raise DataError(f"the image and the caption column are both {image!r}; its columns: {_listed(columns)}; "
                        f"name them with {FORMAT}", where)
    return image, caption


def image_typed_columns(features: Mapping) -> list[str]:
    """Columns of a ``datasets.Features`` mapping whose type is ``datasets.Image``."""
    return [name for name, feature in features.items() if type(feature).__name__ == "Image"]
