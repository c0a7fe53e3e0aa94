"""``noise``: random pixels and random token ids, the control of Liang et al. (2022) §3.

Mind the Gap shows the cone effect on random-noise inputs to random-init models;
these samples let any model be probed the same way.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from PIL import Image

from mmdiag.data.types import Sample


def make_noise(n: int, seed: int = 0, vocab_size: int = 1000, exclude_ids: Iterable[int] = (),
               image_size: int = 224, length_range: tuple[int, int] = (5, 20)) -> list[Sample]:
    """``n`` samples of uniform RGB noise and uniform token ids (special ids excluded)."""
    rng = np.random.default_rng(seed)
    excluded = set(int(i) for i in exclude_ids)
    allowed = np.array([i for i in range(vocab_size) if i not in excluded]) if excluded else None
    samples = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
        length = int(rng.integers(length_range[0], length_range[1] + 1))
        ids = rng.integers(0, vocab_size if allowed is None else len(allowed), size=length)
        if allowed is not None:
            ids = allowed[ids]
        samples.append(Sample(uid=f"noise-{i:06d}", image=Image.fromarray(pixels, "RGB"), caption="",
                              token_ids=tuple(int(t) for t in ids)))
    return samples
