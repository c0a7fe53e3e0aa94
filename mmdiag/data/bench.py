"""Reading speed of the table and shard readers: ``python -m mmdiag.data.bench [N]`` prints pairs per second.

Writes N pairs of 64x64 JPEGs (random pixels) as a CSV with image files, a parquet file, a save_to_disk
directory and five webdataset shards in a temporary folder, then times ``load_samples`` on each (all N, and the
first 128, which is what a default run reads), and the data fingerprint (the activation-cache key) of the N
samples. Images are not decoded by the readers; the forward pass decodes them batch by batch. Needs
``mmdiag[data]``.
"""
from __future__ import annotations

import csv
import io
import resource
import sys
import tarfile
import tempfile
import time
from pathlib import Path


def _jpegs(n: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


def write_formats(root: Path, n: int, shards: int = 5) -> dict[str, str]:
    """The same N pairs in each format under ``root``: {name: --mm-data spec}."""
    import datasets

    jpgs = _jpegs(n)
    (root / "img").mkdir()
    for i, data in enumerate(jpgs):
        (root / "img" / f"{i}.jpg").write_bytes(data)
    with open(root / "t.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["image", "caption"]] + [[f"img/{i}.jpg", f"caption {i}"] for i in range(n)])
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": d, "path": None} for d in jpgs],
                                     "caption": [f"caption {i}" for i in range(n)]}, features=features)
    ds.save_to_disk(str(root / "saved"))
    ds.to_parquet(str(root / "p.parquet"))
    (root / "shards").mkdir()
    per = -(-n // shards)
    for s in range(shards):
        with tarfile.open(root / "shards" / f"shard-{s:06d}.tar", "w") as tar:
            for i in range(s * per, min(n, (s + 1) * per)):
                for name, data in ((f"{i:09d}.jpg", jpgs[i]), (f"{i:09d}.txt", f"caption {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return {"csv": str(root / "t.csv"), "parquet": str(root / "p.parquet"), "save_to_disk": str(root / "saved"),
            "webdataset": str(root / "shards" / f"shard-{{000000..{shards - 1:06d}}}.tar")}


def main(argv: list[str] | None = None) -> int:
    from mmdiag.data.load import data_fingerprint, load_samples

    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 5000
    start = time.perf_counter()
    import webdataset  # noqa: F401  (it imports torch: a second or more cold, nothing in a pytest run)

    print(f"import webdataset: {time.perf_counter() - start:.2f} s (not in the figures below)")
    with tempfile.TemporaryDirectory() as tmp:
        specs = write_formats(Path(tmp), n)
        print(f"{'format':14s} {'pairs':>6s} {'read s':>7s} {'pairs/s':>8s} {'first 128 ms':>13s} {'fingerprint s':>14s}")
        for name, spec in specs.items():
            start = time.perf_counter()
            samples = load_samples(spec, n)
            read = time.perf_counter() - start
            start = time.perf_counter()
            load_samples(spec, 128)
            first = time.perf_counter() - start
            start = time.perf_counter()
            data_fingerprint(samples)
            fingerprint = time.perf_counter() - start
            print(f"{name:14s} {len(samples):6d} {read:7.2f} {len(samples) / read:8.0f} {first * 1000:13.1f} "
                  f"{fingerprint:14.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
