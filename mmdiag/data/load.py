"""Turn a ``--mm-data`` spec into samples."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mmdiag.data.types import Sample
from mmdiag.errors import SpecError

ACCEPTED = ("accepted: synthetic (built-in scenes with gold trees), noise (random pixels and token ids), "
            "a captions .jsonl file, a directory holding captions.jsonl, or a COCO captions .json file")


def load_samples(spec: str, n: int, seed: int = 0, vocab_size: int = 1000,
                 special_ids: Iterable[int] = ()) -> list[Sample]:
    """Up to ``n`` samples for ``spec`` (deterministic by ``seed``)."""
    if spec == "synthetic":
        from mmdiag.data.synthetic import make_synthetic

        return make_synthetic(n, seed=seed)
    if spec == "noise":
        from mmdiag.data.noise import make_noise

        return make_noise(n, seed=seed, vocab_size=vocab_size, exclude_ids=special_ids)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "captions.jsonl"
        if not path.is_file():
            raise SpecError(f"--mm-data={spec!r}: the directory has no captions.jsonl; {ACCEPTED}")
    if not path.is_file():
        raise SpecError(f"--mm-data={spec!r}: no such file or directory; {ACCEPTED}")
    from mmdiag.data.captions import read_coco, read_jsonl

    if path.suffix == ".jsonl":
        return read_jsonl(path, limit=n)
    if path.suffix == ".json":
        return read_coco(path, limit=n)
    raise SpecError(f"--mm-data={spec!r}: unknown file type {path.suffix!r}; {ACCEPTED}")


def data_fingerprint(samples: list[Sample]) -> str:
    """A short hash of the samples' ids and captions (and token ids)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for s in samples:
        digest.update(json.dumps([s.uid, s.caption, s.token_ids]).encode())
    return digest.hexdigest()
