"""CSV and TSV tables: a header row, an image-path column and a caption column.

``.csv`` is comma-separated, ``.tsv`` (and ``.tab``) tab-separated, both read with the standard ``csv`` module
(quoted fields may hold the separator or newlines). Image paths are relative to the table's folder and must stay
inside it unless ``--mm-allow-outside-data``. Columns are found by name or given with ``--mm-data-columns``
(see :mod:`mmdiag.data.columns`). Several rows naming the same image file are several captions of one image.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from mmdiag.data.captions import read_text
from mmdiag.data.columns import ColumnSpec, choose_columns
from mmdiag.data.rows import captions_of, image_of, row_samples
from mmdiag.data.types import IMAGE_KEY, Sample
from mmdiag.errors import DataError

SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
FORMAT = "a header row naming the columns, then one row per image-caption pair (image path relative to the file)"


def read_table(path: Path, columns: ColumnSpec, limit: int, allow_outside: bool = False) -> list[Sample]:
    """Up to ``limit`` pairs from a CSV/TSV file; a bad row is a DataError naming the file and line."""
    path = Path(path)
    text = read_text(path, "table")
    delimiter = SUFFIXES.get(path.suffix.lower(), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"cannot read the header ({exc}); expected {FORMAT}", path, 1) from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"no header row; expected {FORMAT}", path, 1)
    header = [h.strip() for h in header]
    image_col, caption_col = choose_columns(header, columns, str(path))
    i_image, i_caption = header.index(image_col), header.index(caption_col)
    samples: list[Sample] = []
    root = path.parent
    while len(samples) < limit:
        line = reader.line_num + 1  # where the row starts (a quoted field may span lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})", path,
                            line) from None
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"the row has {len(row)} fields, the header {len(header)}; expected {FORMAT}", path, line)
        where = f"{path}:{line}"
        image = image_of(row[i_image], root, f"{where} column {image_col!r}", allow_outside)
        caption = captions_of(row[i_caption], f"{where} column {caption_col!r}")
        sample = row_samples(f"{path.name}:{line}", image, caption, where)[0]
        sample.meta[IMAGE_KEY] = str(Path(row[i_image].strip()))
        samples.append(sample)
    if not samples:
        raise DataError(f"no rows after the header; expected {FORMAT}", path)
    return samples
