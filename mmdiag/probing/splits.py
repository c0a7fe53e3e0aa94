"""Train/dev/test splits of a probe data set, reproducible from a seed.

Every probe score is read on the test part of a 60/20/20 split of the
sentences (Hewitt & Manning 2019 use the treebank's fixed splits; the
annotated sentences probed here have none, so the split is drawn): the
same ``(n, seed, fractions)`` always gives the same split, so a check, a
benchmark and a test that use one seed score the same sentences.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["split_indices"]


def split_indices(n_sentences: int, seed: int,
                  fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train/dev/test split of ``range(n_sentences)``.

    A permutation from ``numpy.random.default_rng(seed)`` is cut into parts of
    sizes ``floor(f * n)``, the remaining sentences going one each to the parts
    with the largest remainders ``f * n - floor(f * n)`` (ties to the earlier
    part).  Each part with a positive fraction gets at least one sentence when
    ``n`` allows it (taken from the largest part).  Fractions must be >= 0 and
    sum to 1.  Returns three sorted int64 arrays, disjoint, covering 0..n-1;
    the same ``(n, seed, fractions)`` always gives the same split.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or not math.isclose(float(f.sum()), 1.0, abs_tol=1e-9):
        raise ValueError(f"split_indices: fractions must be 3 numbers >= 0 summing to 1, "
                         f"got {fractions}")
    n = int(n_sentences)
    if n < 0:
        raise ValueError("split_indices: n_sentences must be >= 0")
    raw = f * n
    sizes = np.floor(raw).astype(np.int64)
    rest = n - int(sizes.sum())
    order = sorted(range(3), key=lambda k: (-(raw[k] - sizes[k]), k))
    for k in order[:rest]:
        sizes[k] += 1
    for k in range(3):
        if f[k] > 0 and sizes[k] == 0:
            big = int(np.argmax(sizes))
            if sizes[big] > 1:
                sizes[big] -= 1
                sizes[k] += 1
    perm = np.random.default_rng(seed).permutation(n)
    a, b = int(sizes[0]), int(sizes[0] + sizes[1])
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])
