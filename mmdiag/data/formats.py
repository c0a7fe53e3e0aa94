"""What kind of data a ``--mm-data`` spec names, decided from the spec and a ``stat`` (nothing is read).

Used twice: to validate the option before anything loads, and to pick the reader.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmdiag.data.files import regular_file_problem
from mmdiag.errors import SpecError

ACCEPTED = ("accepted: synthetic (built-in scenes with gold trees), noise (random pixels and token ids), "
            "a captions .jsonl file, a directory holding captions.jsonl, a COCO captions .json file, a Flickr30k "
            "Entities root (Sentences/ and Annotations/), a CSV/TSV table (.csv, .tsv), a Hugging Face datasets "
            "save_to_disk directory, a .parquet file or a directory of them, hf:NAME[:SPLIT] (from the local "
            "datasets cache), or webdataset shards (a .tar, a directory of .tar files, or a brace pattern "
            "shard-{000000..000009}.tar)")

#: file suffix -> kind
FILE_KINDS = {".jsonl": "jsonl", ".json": "coco", ".parquet": "parquet", ".csv": "table", ".tsv": "table",
              ".tab": "table", ".tar": "webdataset"}
#: kinds whose image and caption columns --mm-data-columns chooses
COLUMN_KINDS = ("table", "parquet", "saved", "hub")


@dataclass(frozen=True)
class DataKind:
    """``kind``: synthetic, noise, jsonl, coco, flickr30k, table, parquet, saved, hub or webdataset."""

    kind: str
    path: Path = Path()


def data_kind(spec: str) -> DataKind:
    """The kind of data ``spec`` names; a SpecError says what is wrong and what is accepted."""
    if spec in ("synthetic", "noise"):
        return DataKind(spec)
    if spec.startswith("hf:"):
        from mmdiag.data.hf import parse_hub_spec

        parse_hub_spec(spec)
        return DataKind("hub")
    path = Path(spec).expanduser()
    if "{" in spec and ".." in spec and spec.endswith(".tar") and not path.exists():
        return DataKind("webdataset", path)
    if path.is_dir():
        return _directory_kind(spec, path)
    problem = regular_file_problem(path)  # stat only: a FIFO or a device given as data is never opened
    if problem == "no such file":
        raise SpecError(f"--mm-data={spec!r}: no such file or directory; {ACCEPTED}")
    if problem is not None:
        raise SpecError(f"--mm-data={spec!r}: {problem}; {ACCEPTED}")
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise SpecError(f"--mm-data={spec!r}: unknown file type {path.suffix!r}; {ACCEPTED}")
    return DataKind(kind, path)


def _directory_kind(spec: str, path: Path) -> DataKind:
    from mmdiag.data.flickr30k import is_flickr30k_root
    from mmdiag.data.hf import is_saved_dataset

    if is_flickr30k_root(path):
        return DataKind("flickr30k", path)
    if is_saved_dataset(path):
        return DataKind("saved", path)
    captions = path / "captions.jsonl"
    problem = regular_file_problem(captions)
    if problem is None:
        return DataKind("jsonl", captions)
    if problem != "no such file":
        raise SpecError(f"--mm-data={spec!r}: its captions.jsonl {problem}; {ACCEPTED}")
    try:
        names = [p.name for p in path.iterdir()]
    except OSError as exc:
        raise SpecError(f"--mm-data={spec!r}: cannot list the directory ({exc.strerror or exc})") from None
    if any(name.endswith(".tar") for name in names):
        return DataKind("webdataset", path)
    if any(p.suffix == ".parquet" for p in path.rglob("*.parquet")):
        return DataKind("parquet", path)
    raise SpecError(f"--mm-data={spec!r}: the directory has no captions.jsonl, .parquet or .tar file and is neither a "
                    f"datasets save_to_disk directory nor a Flickr30k root; {ACCEPTED}")
