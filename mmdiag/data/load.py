"""Turn a ``--mm-data`` spec into samples."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Optional

from mmdiag.data.captions import read_coco, read_jsonl
from mmdiag.data.columns import ColumnSpec
from mmdiag.data.files import open_regular, regular_file_problem
from mmdiag.data.flickr30k import read_flickr30k
from mmdiag.data.formats import ACCEPTED, data_kind
from mmdiag.data.noise import make_noise
from mmdiag.data.synthetic import make_synthetic
from mmdiag.data.types import DeferredImage, EncodedImage, Sample
from mmdiag.errors import DataError, SpecError

#: most samples the noise generator builds: each holds its 224x224 image in memory and building one takes about 2 ms,
#: so 10,000 samples take about 20-30 s and 1.5 GB before the model runs; above it the run is refused
MAX_GENERATED_SAMPLES = 10_000
#: most synthetic scenes: their images are deferred (rendered batch by batch as the forward pass opens them), so
#: memory does not bound them; building the captions and gold trees of 65,536 scenes takes about 3 minutes
MAX_SYNTHETIC_SAMPLES = 65_536


def generated_samples_problem(spec: str, n: int) -> str:
    """Why ``n`` samples of the generated ``spec`` are refused ("" when they are not)."""
    if spec == "noise" and n > MAX_GENERATED_SAMPLES:
        return (f"--mm-samples={n}: the noise generator builds at most {MAX_GENERATED_SAMPLES:,} samples (each holds "
                f"its image in memory, and building them would take minutes before anything runs); use "
                f"--mm-samples<={MAX_GENERATED_SAMPLES} or a captions file")
    if spec == "synthetic" and n > MAX_SYNTHETIC_SAMPLES:
        return (f"--mm-samples={n}: the synthetic generator builds at most {MAX_SYNTHETIC_SAMPLES:,} scenes (building "
                f"their captions and trees would take minutes before anything runs); use "
                f"--mm-samples<={MAX_SYNTHETIC_SAMPLES} or a captions file")
    return ""


def load_samples(spec: str, n: int, seed: int = 0, vocab_size: int = 1000,
                 special_ids: Iterable[int] = (), allow_outside: bool = False, scene_regions: str = "boxes",
                 punctuation: str = "ptb", columns: Optional[ColumnSpec] = None) -> list[Sample]:
    """Up to ``n`` samples for ``spec`` (deterministic by ``seed``).

    ``allow_outside``: read images of a captions file or table that lie outside its data directory.
    ``scene_regions`` (``boxes``/``union``) and ``punctuation`` (``ptb``/``upos``): how a Flickr30k root's
    regions and scene trees are built (:func:`~mmdiag.data.flickr30k.read_flickr30k`).
    ``columns``: the image and caption columns of a table (``--mm-data-columns``; found when not given).
    """
    problem = generated_samples_problem(spec, n)
    if problem:
        raise SpecError(problem)
    if spec == "synthetic":
        return make_synthetic(n, seed=seed, deferred=True)
    if spec == "noise":
        return make_noise(n, seed=seed, vocab_size=vocab_size, exclude_ids=special_ids)
    found = data_kind(spec)
    columns = columns or ColumnSpec()
    if found.kind == "flickr30k":
        return read_flickr30k(found.path, limit=n, regions=scene_regions, punctuation=punctuation)
    if found.kind == "jsonl":
        return read_jsonl(found.path, limit=n, allow_outside=allow_outside)
    if found.kind == "coco":
        return read_coco(found.path, limit=n, allow_outside=allow_outside)
    if found.kind == "table":
        from mmdiag.data.table import read_table

        return read_table(found.path, columns, n, allow_outside)
    if found.kind == "webdataset":
        from mmdiag.data.wds import read_shards

        return read_shards(spec, n)
    from mmdiag.data import hf

    if found.kind == "parquet":
        return hf.read_parquet(found.path, columns, n, allow_outside)
    if found.kind == "saved":
        return hf.read_saved(found.path, columns, n, allow_outside)
    if found.kind == "hub":
        return hf.read_hub(spec, columns, n, allow_outside)
    raise SpecError(f"--mm-data={spec!r}: unknown kind of data; {ACCEPTED}")  # pragma: no cover - data_kind decides


#: (path, size, mtime_ns) -> digest of the file's bytes, so a run hashes each image file once
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """blake2b of a file's bytes (memoised by path, size and modification time); "missing" if unreadable.

    Only a regular file is read: a FIFO or a device (``/dev/zero``) is never opened, it would block or never end.
    """
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return "missing"
    if regular_file_problem(path) is not None:
        return "not-a-file"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.blake2b(digest_size=8)
        try:
            with open_regular(path) as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
        except (OSError, DataError):
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
    if isinstance(image, EncodedImage):
        return ["bytes", hashlib.blake2b(image.data, digest_size=8).hexdigest()]
    if isinstance(image, DeferredImage):
        return image.identity()
    if hasattr(image, "tobytes") and hasattr(image, "mode"):
        return [image.mode, list(image.size), hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest()]
    return repr(type(image))


def data_fingerprint(samples: list[Sample]) -> str:
    """A short hash of the samples: ids, captions, token ids, the images' content and the regions' boxes.

    Image files count by name and bytes (not by folder or modification time), so
    the same data copied elsewhere keeps its fingerprint while an edited or
    replaced image changes it, and with it the activation-cache key.
    """
    digest = hashlib.blake2b(digest_size=8)
    for s in samples:
        item = [s.uid, s.caption, s.token_ids, _image_identity(s.image)]
        if s.phrases:  # the region states recorded depend on them (--mm-scene-regions=boxes|union)
            item.append([[p.start, p.end, list(p.box)] for p in s.phrases])
        digest.update(json.dumps(item).encode())
    return digest.hexdigest()


def file_samples_checked(spec: str, n: int, seed: int = 0, allow_outside: bool = False,
                         skip_bad: bool = False, scene_regions: str = "boxes",
                         punctuation: str = "ptb", columns: Optional[ColumnSpec] = None) -> Optional[list[Sample]]:
    """The samples of a captions/COCO/Flickr30k ``spec``, read and checked before the model runs (None for the
    generated ``synthetic`` and ``noise``, whose samples depend on the model's tokenizer or take time to build).

    Reading refuses image paths outside the data directory (unless ``allow_outside``); unless ``skip_bad``, an
    image that exists but is not a regular file (a FIFO, a device, a directory) is a DataError naming the
    captions file and line here, instead of a failure in the middle of the forward pass.
    """
    if spec in ("synthetic", "noise"):
        return None
    samples = load_samples(spec, n, seed, allow_outside=allow_outside, scene_regions=scene_regions,
                           punctuation=punctuation, columns=columns)
    if not skip_bad:
        for sample in samples:
            if not isinstance(sample.image, (str, Path)):
                continue
            problem = regular_file_problem(sample.image)
            if problem is not None and problem != "no such file":  # a missing image fails where it is read
                source = sample.meta.get("source", sample.uid)
                raise DataError(f"{source}: image {str(sample.image)!r} {problem} (an image must be a regular file; "
                                "--mm-skip-bad-samples skips such samples)")
    return samples
