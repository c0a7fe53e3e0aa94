"""Hugging Face datasets: a ``save_to_disk`` directory, parquet files, and ``hf:NAME[:SPLIT]`` from the local cache.

All three are read as Arrow record batches (no image is decoded here: ``datasets.Image`` cells are kept as their
encoded bytes and decoded per batch of the forward pass), only as far as ``--mm-samples`` needs. ``hf:`` never
goes online (``HF_DATASETS_OFFLINE=1`` semantics): a dataset that is not in the local cache is a usage error.
Needs the ``datasets`` library (``pip install 'mmdiag[data]'``).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from mmdiag.data.columns import ColumnSpec, choose_columns, image_typed_columns
from mmdiag.data.files import open_regular
from mmdiag.data.rows import captions_of, image_of, row_samples
from mmdiag.data.types import Sample
from mmdiag.errors import DataError, SpecError

EXTRA = "pip install 'mmdiag[data]'"
#: rows read per Arrow batch
BATCH_ROWS = 256


def require_datasets(what: str) -> Any:
    """The ``datasets`` module, or a SpecError naming the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise SpecError(f"{what} needs the Hugging Face datasets library, which is not installed: {EXTRA}") from None
    return datasets


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def parquet_files(path: Path) -> list[Path]:
    """The parquet file itself, or every ``*.parquet`` under a directory (sorted)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if p.is_file())


def _rows(tables: Iterable[tuple[Any, str]], image: str, caption: str, root: Optional[Path], limit: int,
          allow_outside: bool, prefix: str) -> list[Sample]:
    """Samples from ``(arrow table, where-prefix)`` batches until ``limit`` captions are read."""
    samples: list[Sample] = []
    for table, where in tables:
        images = table.column(image).to_pylist()
        captions = table.column(caption).to_pylist()
        start = table.schema.metadata.get(b"mmdiag_start", b"0") if table.schema.metadata else b"0"
        for offset, (image_cell, caption_cell) in enumerate(zip(images, captions)):
            row = int(start) + offset
            here = f"{where} row {row}"
            picture = image_of(image_cell, root, f"{here} column {image!r}", allow_outside)
            texts = captions_of(caption_cell, f"{here} column {caption!r}")
            samples.extend(row_samples(f"{prefix}:{row}", picture, texts, here))
            if len(samples) >= limit:
                return samples[:limit]
    return samples


def _with_start(table: Any, start: int) -> Any:
    """``table`` tagged with the index of its first row (so messages name the row)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), b"mmdiag_start": str(start).encode()})


def _dataset_batches(ds: Any, where: str) -> Iterator[tuple[Any, str]]:
    arrow = ds.with_format("arrow")
    for start in range(0, len(arrow), BATCH_ROWS):
        yield _with_start(arrow[start:start + BATCH_ROWS], start), where


def _from_dataset(ds: Any, where: str, columns: ColumnSpec, limit: int, allow_outside: bool, root: Optional[Path],
                  prefix: str) -> list[Sample]:
    image, caption = choose_columns(ds.column_names, columns, where, image_typed_columns(ds.features))
    samples = _rows(_dataset_batches(ds.select_columns([image, caption]), where), image, caption, root, limit,
                    allow_outside, prefix)
    if not samples:
        raise DataError("the dataset has no rows", where)
    return samples


def _one_split(dd: Any, where: str, how: str) -> Any:
    """The only split of a DatasetDict, or a SpecError listing them and how to choose one."""
    splits = list(dd)
    if len(splits) == 1:
        return dd[splits[0]]
    raise SpecError(f"{where} has {len(splits)} splits ({', '.join(splits) or 'none'}); choose one: {how}")


def read_saved(path: Path, columns: ColumnSpec, limit: int, allow_outside: bool = False) -> list[Sample]:
    """A ``save_to_disk`` directory (a DatasetDict with one split, or ``DIR/SPLIT`` of one with several)."""
    datasets = require_datasets(f"--mm-data={path} (a datasets save_to_disk directory)")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged directory fails in many ways; all are a data problem
        raise DataError(f"cannot read the saved dataset ({type(exc).__name__}: {exc})", path) from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _one_split(ds, str(path), f"--mm-data={path}/SPLIT")
    return _from_dataset(ds, str(path), columns, limit, allow_outside, path, path.name)


def _parquet_features(schema: Any) -> dict:
    """The ``datasets`` feature types recorded in a parquet file's metadata (empty if none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def read_parquet(path: Path, columns: ColumnSpec, limit: int, allow_outside: bool = False) -> list[Sample]:
    """A parquet file or a directory of them, read row group by row group; image paths are relative to ``path``."""
    require_datasets(f"--mm-data={path} (parquet)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = parquet_files(path)
    if not files:
        raise DataError("the directory holds no .parquet file", path)
    root = path if path.is_dir() else path.parent
    chosen: Optional[tuple[str, str]] = None
    samples: list[Sample] = []
    for file in files:
        with open_regular(file, "parquet file") as handle:
            try:
                reader = pq.ParquetFile(handle)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise DataError(f"not a readable parquet file ({exc})", file) from None
            schema = reader.schema_arrow
            typed = [name for name, f in _parquet_features(schema).items()
                     if isinstance(f, dict) and f.get("_type") == "Image"]
            image, caption = choose_columns(schema.names, columns, str(file), typed)
            if chosen is not None and (image, caption) != chosen:
                raise DataError(f"its columns differ from the first file's ({chosen[0]!r}, {chosen[1]!r} there, "
                                f"{image!r}, {caption!r} here); give every file the same columns", file)
            chosen = (image, caption)
            samples.extend(_rows(_parquet_batches(reader, file, image, caption, pa), image, caption, root,
                                 limit - len(samples), allow_outside, file.stem))
        if len(samples) >= limit:
            break
    if not samples:
        raise DataError("the parquet data has no rows", path)
    return samples


def _parquet_batches(reader: Any, file: Path, image: str, caption: str, pa: Any) -> Iterator[tuple[Any, str]]:
    start = 0
    batches = reader.iter_batches(batch_size=BATCH_ROWS, columns=[image, caption])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"cannot read rows from {start} on ({exc})", file) from None
        yield _with_start(pa.Table.from_batches([batch]), start), str(file)
        start += batch.num_rows


def parse_hub_spec(spec: str) -> tuple[str, Optional[str]]:
    """``hf:NAME[:SPLIT]`` -> (NAME, SPLIT or None); a SpecError for an empty name."""
    name, _, split = spec[len("hf:"):].partition(":")
    if not name.strip() or name != name.strip() or not split == split.strip():
        raise SpecError(f"--mm-data={spec!r}: expected hf:NAME or hf:NAME:SPLIT (a dataset in the local Hugging Face "
                        "datasets cache, e.g. hf:nlphuji/flickr30k:test)")
    return name, (split or None)


@contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """``HF_DATASETS_OFFLINE=1`` for the duration: the cache is read, the network never."""
    try:
        from huggingface_hub import constants as hub_constants
    except ImportError:  # pragma: no cover - datasets depends on huggingface_hub
        hub_constants = None
    switches = [(module, name) for module in (datasets.config, hub_constants) if module is not None
                for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(module, name)]
    saved = [(module, name, getattr(module, name)) for module, name in switches]
    env = os.environ.get("HF_DATASETS_OFFLINE")
    for module, name in switches:
        setattr(module, name, True)
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        if env is None:
            os.environ.pop("HF_DATASETS_OFFLINE", None)
        else:
            os.environ["HF_DATASETS_OFFLINE"] = env


def read_hub(spec: str, columns: ColumnSpec, limit: int, allow_outside: bool = False) -> list[Sample]:
    """``hf:NAME[:SPLIT]`` from the local datasets cache, offline; a dataset not cached is a SpecError."""
    name, split = parse_hub_spec(spec)
    datasets = require_datasets(f"--mm-data={spec}")
    cache = datasets.config.HF_DATASETS_CACHE
    with _offline(datasets):
        try:
            ds = datasets.load_dataset(name, split=split)
        except ValueError as exc:
            if "split" in str(exc).lower():
                raise SpecError(f"--mm-data={spec!r}: {exc}") from None
            raise DataError(f"cannot read the cached dataset ({exc})", spec) from None
        except Exception as exc:  # noqa: BLE001 - ConnectionError, FileNotFoundError, DatasetNotFoundError, ...
            raise SpecError(f"--mm-data={spec!r}: {name} is not in the local datasets cache ({cache}); mmdiag reads "
                            f"datasets offline: download it first where the hub can be reached (datasets."
                            f"load_dataset({name!r})), or point HF_DATASETS_CACHE at a cache that holds it "
                            f"[{type(exc).__name__}]") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _one_split(ds, f"--mm-data={spec!r}: {name}", f"--mm-data=hf:{name}:SPLIT")
    return _from_dataset(ds, spec, columns, limit, allow_outside, None, name.replace("/", "_"))
