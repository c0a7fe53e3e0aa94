"""Turn a ``--mm-data`` spec into samples."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from mmdiag.data.captions import read_coco, read_jsonl
from mmdiag.data.flickr30k import is_flickr30k_root, read_flickr30k
from mmdiag.data.noise import make_noise
from mmdiag.data.synthetic import make_synthetic
from mmdiag.data.types import Sample
from mmdiag.errors import SpecError

ACCEPTED = ("accepted: synthetic (built-in scenes with gold trees), noise (random pixels and token ids), "
            "a captions .jsonl file, a directory holding captions.jsonl, a COCO captions .json file, or a Flickr30k "
            "Entities root (Sentences/ and Annotations/)")


def load_samples(spec: str, n: int, seed: int = 0, vocab_size: int = 1000,
                 special_ids: Iterable[int] = ()) -> list[Sample]:
    """Up to ``n`` samples for ``spec`` (deterministic by ``seed``)."""
    if spec == "synthetic":
        return make_synthetic(n, seed=seed)
    if spec == "noise":
        return make_noise(n, seed=seed, vocab_size=vocab_size, exclude_ids=special_ids)
    path = Path(spec).expanduser()
    if path.is_dir():
        if is_flickr30k_root(path):
            return read_flickr30k(path, limit=n)
        path = path / "captions.jsonl"
        if not path.is_file():
            raise SpecError(f"--mm-data={spec!r}: the directory has no captions.jsonl; {ACCEPTED}")
    if not path.is_file():
        raise SpecError(f"--mm-data={spec!r}: no such file or directory; {ACCEPTED}")
    if path.suffix == ".jsonl":
        return read_jsonl(path, limit=n)
    if path.suffix == ".json":
        return read_coco(path, limit=n)
    raise SpecError(f"--mm-data={spec!r}: unknown file type {path.suffix!r}; {ACCEPTED}")


#: (path, size, mtime_ns) -> digest of the file's bytes, so a run hashes each image file once
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """blake2b of a file's bytes (memoised by path, size and modification time); "missing" if unreadable."""
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return "missing"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.blake2b(digest_size=8)
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return "unreadable"
        digest = _FILE_DIGESTS[key] = h.hexdigest()
    return digest


def _image_identity(image: object) -> object:
    """What identifies an image for the fingerprint: its file name and bytes, or its pixels."""
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        path = Path(image)
        return [path.name, _file_digest(path)]
    if hasattr(image, "tobytes") and hasattr(image, "mode"):
        return [image.mode, list(image.size), hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest()]
    return repr(type(image))


def data_fingerprint(samples: list[Sample]) -> str:
    """A short hash of the samples: ids, captions, token ids and the images' content.

    Image files count by name and bytes (not by folder or modification time), so
    the same data copied elsewhere keeps its fingerprint while an edited or
    replaced image changes it, and with it the activation-cache key.
    """
    digest = hashlib.blake2b(digest_size=8)
    for s in samples:
        digest.update(json.dumps([s.uid, s.caption, s.token_ids, _image_identity(s.image)]).encode())
    return digest.hexdigest()
