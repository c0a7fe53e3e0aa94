"""webdataset shards as img2dataset writes them: ``KEY.jpg`` (or .png/.jpeg/.webp) + ``KEY.txt`` or ``KEY.json``.

``--mm-data`` names one ``.tar``, a directory of them, or a brace pattern (``shard-{000000..000099}.tar``). Shards
are read in order and streamed: reading stops once ``--mm-samples`` pairs are in hand, so a large set costs only
the shards it needs. Members are grouped into samples by ``webdataset``'s own ``group_by_keys`` (the key is the
member name before its first dot); the shards are opened here (regular files only, never ``pipe:`` URLs).
A caption comes from ``.txt``, else from the ``caption`` (or ``text``) key of ``.json``; a JSON list there gives
several captions of one image. A damaged shard or a key without image or caption is a DataError naming both.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from mmdiag.data.files import open_regular
from mmdiag.data.hf import EXTRA
from mmdiag.data.rows import captions_of, row_samples
from mmdiag.data.types import EncodedImage, Sample
from mmdiag.errors import DataError, SpecError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
JSON_CAPTION_KEYS = ("caption", "captions", "text", "txt")
FORMAT = "per key KEY.jpg (or .png/.jpeg/.webp) and KEY.txt, or KEY.json holding {\"caption\": \"...\"}"


def _webdataset() -> Any:
    try:
        from webdataset import tariterators
    except ImportError:
        raise SpecError(f"webdataset shards need the webdataset library, which is not installed: {EXTRA}") from None
    return tariterators


def shard_paths(spec: str) -> list[Path]:
    """The shards of ``spec`` in order; a SpecError names a shard of the pattern that does not exist."""
    path = Path(spec).expanduser()
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
        if not shards:
            raise SpecError(f"--mm-data={spec!r}: the directory holds no .tar shard")
        return shards
    if "{" in spec:
        import braceexpand

        shards = [Path(p).expanduser() for p in braceexpand.braceexpand(spec)]
        missing = [p for p in shards if not p.exists()]
        if missing:
            raise SpecError(f"--mm-data={spec!r}: {len(missing)} of its {len(shards)} shards do not exist (first: "
                            f"{missing[0]})")
        return shards
    return [path]


def _caption(sample: dict, shard: Path, key: str) -> list[str]:
    where = f"{shard} key {key!r}"
    if "txt" in sample:
        try:
            text = sample["txt"].decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{where}: {key}.txt is not UTF-8 text") from None
        return captions_of(text, f"{where} ({key}.txt)")
    if "json" in sample:
        try:
            doc = json.loads(sample["json"])
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{where}: {key}.json is not valid JSON ({exc})") from None
        if isinstance(doc, dict):
            for name in JSON_CAPTION_KEYS:
                if name in doc:
                    return captions_of(doc[name], f"{where} ({key}.json {name!r})")
        raise DataError(f"{where}: {key}.json has no caption key ({', '.join(JSON_CAPTION_KEYS)}); {FORMAT}")
    raise DataError(f"{where}: no caption (members: {', '.join(sorted(_members(sample))) or 'none'}); {FORMAT}")


def _members(sample: dict) -> list[str]:
    return [k for k in sample if not k.startswith("__")]


def _shard_samples(shard: Path, tariterators: Any) -> Iterator[dict]:
    """The grouped samples of one shard; a damaged tar is a DataError naming the shard."""
    with open_regular(shard, "webdataset shard") as handle:
        _check_complete(handle, shard)
        files = tariterators.tar_file_expander([{"url": str(shard), "stream": handle}], eof_value=None)
        grouped = tariterators.group_by_keys(files)
        while True:
            try:
                sample = next(grouped)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - tarfile/ValueError on a damaged or odd shard
                message = str(exc.args[0]) if exc.args else type(exc).__name__
                raise DataError(f"not a readable webdataset shard ({type(exc).__name__}: {message.split(' @ ')[0]})",
                                shard) from None
            yield sample


def _check_complete(handle: Any, shard: Path) -> None:
    """Refuse a shard cut short (a copy or download that stopped): a tar is whole 512-byte blocks and ends with
    two zero blocks. Checked first, since a tar cut between members would otherwise read as a shorter shard."""
    size = handle.seek(0, 2)
    tail = b""
    if size >= 1024:
        handle.seek(size - 1024)
        tail = handle.read(1024)
    handle.seek(0)
    if size % 512 or tail != bytes(1024):
        raise DataError(f"not a readable webdataset shard (truncated: {size:,} bytes, "
                        f"{'not whole 512-byte blocks' if size % 512 else 'no end-of-archive blocks'})", shard)


def read_shards(spec: str, limit: int) -> list[Sample]:
    """Up to ``limit`` image-caption pairs from the shards of ``spec``, in shard and key order."""
    tariterators = _webdataset()
    samples: list[Sample] = []
    for shard in shard_paths(spec):
        for sample in _shard_samples(shard, tariterators):
            key = sample["__key__"]
            ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if ext is None:
                raise DataError(f"key {key!r} has no image (members: {', '.join(sorted(_members(sample)))}); {FORMAT}",
                                shard)
            if not sample[ext]:
                raise DataError(f"key {key!r}: {key}.{ext} is empty (0 bytes)", shard)
            image = EncodedImage(bytes(sample[ext]), f"{shard}:{key}.{ext}")
            uid = f"{shard.stem}:{key}"
            samples.extend(row_samples(uid, image, _caption(sample, shard, key), f"{shard}:{key}"))
            if len(samples) >= limit:
                return samples[:limit]
    if not samples:
        raise SpecError(f"--mm-data={spec!r}: the shards hold no sample; {FORMAT}")
    return samples
