"""Isotropy of a set of embeddings (Mu & Viswanath 2018, "All-but-the-Top", arXiv:1702.01417, §2).

A representation is isotropic when no direction dominates: the partition function
Z(c) = Σ_i exp(cᵀ x_i) is the same for every unit vector c. Mu & Viswanath measure

    I(X) = min_{c ∈ C} Z(c) / max_{c ∈ C} Z(c)

with C the eigenvectors of XᵀX (following Arora et al. 2016). I lies in (0, 1]:
1 for a perfectly isotropic set, near 0 when the embeddings share a common
direction, which is exactly the narrow cone of Liang et al. 2022.

Conventions here: rows are L2-normalised first by default (the sphere on which the
cone and the gap live; the paper applies I to raw word vectors, ``normalize=False``);
C holds both signs of every eigenvector, so the value does not depend on the
eigensolver's sign choice; Z is compared in log space (logsumexp), so large
norms do not overflow.
"""
from __future__ import annotations

from typing import Any

import torch

from mmdiag.metrics.cone import normalize_rows, to_rows

__all__ = ["isotropy", "higher_is_better", "lower_bound", "upper_bound"]

#: facts of the metric (torchmetrics style): a larger value is more isotropic, within (0, 1]
higher_is_better = True
lower_bound = 0.0
upper_bound = 1.0


def isotropy(x: Any, normalize: bool = True) -> float:
    """I(X) = min_c Z(c) / max_c Z(c), Z(c) = Σ_i exp(cᵀ x_i), c over ± the eigenvectors of XᵀX.

    ``x``: ``(n, d)`` array or tensor, n >= 1. Returns a float in (0, 1] (0.0 only when the ratio
    underflows float64, for raw rows with norms in the hundreds).

    >>> import numpy as np
    >>> round(isotropy(np.vstack([np.eye(3), -np.eye(3)])), 6)   # ±e_i: every direction alike
    1.0
    >>> v = np.tile([[1.0, 0.0]], (5, 1))                          # one shared direction
    >>> bool(abs(isotropy(v) - np.exp(-2.0)) < 1e-9)               # Z(e_1) / Z(-e_1) = e^{-2}
    True
    """
    xt = to_rows(x, "x")
    if xt.shape[0] < 1:
        raise ValueError("isotropy needs at least one row")
    if normalize:
        xt = normalize_rows(xt)
    _, vectors = torch.linalg.eigh(xt.T @ xt)
    directions = torch.cat([vectors, -vectors], dim=1)  # (d, 2d): columns are the unit vectors c
    log_z = torch.logsumexp(xt @ directions, dim=0)
    return float(torch.exp(log_z.min() - log_z.max()).clamp(max=1.0))
