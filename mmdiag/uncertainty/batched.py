"""Batched forms of the sample-mean–like metrics: one call evaluates a metric on b resamples.

Each factory takes the same inputs as the plain metric of :mod:`mmdiag.metrics` and returns a
:class:`~mmdiag.uncertainty.bootstrap.BatchedStatistic` whose value on a resample ``idx[k]`` is
exactly (up to floating-point summation order) the plain metric on the resampled rows
``x[idx[k]]``. The inputs follow the metrics' conventions (:func:`mmdiag.metrics.cone.to_rows`:
numpy or torch ``(n, d)``, computation on the input's device, float64 on the CPU and float32
elsewhere, a zero row normalised to the zero vector).

Most are weighted sums over the samples with the resample counts c_k = #{j: idx[k, j] = i}
(:func:`~mmdiag.uncertainty.bootstrap.resample_counts`), so a chunk of b resamples costs one
``(b, n) @ (n, ·)`` product. Paired metrics (image row i with caption row i) resample both
modalities with the same indices.

Duplicates: a resample repeats about 1 − 1/e ≈ 37% of its rows. The plain metric on the
resampled rows counts a duplicated row's pair with its copy (cosine 1, distance 0), and so do the
batched forms. That biases the bootstrap distribution of the pairwise statistics: the cone's
replicates are larger by about (1 − cone)/n on average (a pair of resampled rows is a row with
its copy with probability 1/n), uniformity's by about log(1 + (e^{−ℓ} − 1)/n) where ℓ is its
value (large at small n: +0.12 for ℓ = −3.5, a spread set at t = 2, and n = 256; +0.016 at
n = 2048). The se is still informative; for the interval prefer ``method="bca"`` or a larger
n, and check :func:`~mmdiag.uncertainty.bootstrap.bootstrap_replicates`' mean against the value.

Metrics without a batched form use :func:`per_resample` (a loop over resamples calling the plain
metric). :data:`NOT_RESAMPLED` lists the metrics for which a sample bootstrap is not meaningful;
they get :func:`no_interval` (``method="none"``).

>>> import numpy as np
>>> from mmdiag.metrics.cone import mean_pairwise_cosine
>>> from mmdiag.uncertainty.bootstrap import bootstrap, resample_indices
>>> x = np.random.default_rng(0).normal(size=(40, 8)) + 1.0
>>> stat = batched_cone(x)
>>> idx = resample_indices(40, 3, seed=0)
>>> bool(np.allclose(stat(idx), [mean_pairwise_cosine(x[i]) for i in idx.numpy()]))
True
>>> ci = bootstrap(stat, n=40, boot=500, seed=0)
>>> bool(ci.low < mean_pairwise_cosine(x) < ci.high)
True
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mmdiag.metrics.cone import normalize_rows, to_pair, to_rows
from mmdiag.uncertainty.bootstrap import BatchedStatistic, resample_counts
from mmdiag.uncertainty.interval import Interval

__all__ = [
    "NOT_RESAMPLED",
    "no_interval",
    "batched_cone",
    "batched_gap_norm",
    "batched_gap_l2i",
    "batched_alignment",
    "batched_uniformity",
    "per_resample",
]

#: metrics for which a bootstrap over samples is not meaningful, with the reason
NOT_RESAMPLED: dict[str, str] = {
    "modality_separability": (
        "a cross-validated accuracy: a resample puts copies of a row into both the training and the "
        "test folds, so the replicates measure memorisation, not the sampling variability of the "
        "accuracy (and each replicate refits k classifiers)"),
}


def no_interval(level: float = 0.95) -> Interval:
    """The interval of a metric in :data:`NOT_RESAMPLED`: undefined, ``method="none"``."""
    return Interval.undefined("none", level)


def _nan(b: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((b,), math.nan, dtype=like.dtype, device=like.device)


def batched_cone(x: Any) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.cone.mean_pairwise_cosine`.

    With x̂ the normalised rows and c the counts of a resample of size m:
    cone = (‖Σ_i c_i x̂_i‖² − Σ_i c_i ‖x̂_i‖²) / (m(m − 1)), clipped to [−1/(m−1), 1] like the
    plain metric. A duplicated row's cosine with its copy (1) is in ‖Σ c_i x̂_i‖² and not in the
    subtracted diagonal, as in the plain metric on the resampled rows. O(b·n·d) per chunk.
    NaN for m < 2.
    """
    t = to_rows(x, "x")
    n, d = t.shape
    xh = normalize_rows(t)
    sq = (xh * xh).sum(dim=1)

    def fn(idx: torch.Tensor) -> torch.Tensor:
        m = idx.shape[1]
        if m < 2:
            return _nan(idx.shape[0], xh)
        c = resample_counts(idx, n, xh.dtype)
        total = c @ xh
        value = ((total * total).sum(dim=1) - c @ sq) / (m * (m - 1))
        return value.clamp(min=-1.0 / (m - 1), max=1.0)

    return BatchedStatistic(fn, n, xh.device, 8 * (3 * n + d), "mean_pairwise_cosine")


def batched_gap_norm(img: Any, txt: Any) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.gap.gap_norm` over matched pairs (same indices for both).

    ‖Δ‖ with Δ = (1/m) Σ_i c_i (x̂_i − ŷ_i). The plain metric also accepts unpaired sets of
    different sizes; their bootstrap would resample each modality on its own, which this paired
    form does not do (it requires the same n). O(b·n·d) per chunk.
    """
    a, b = to_pair(img, txt, same_n=True)
    n, d = a.shape
    diff = normalize_rows(a) - normalize_rows(b)

    def fn(idx: torch.Tensor) -> torch.Tensor:
        c = resample_counts(idx, n, diff.dtype)
        return torch.linalg.vector_norm(c @ diff, dim=1) / idx.shape[1]

    return BatchedStatistic(fn, n, diff.device, 8 * (2 * n + d), "gap_norm")


def batched_item_mean(values: torch.Tensor, name: str) -> BatchedStatistic:
    """The mean over each resample of one value per item (a per-pair distance, a per-query hit): O(b·n).

    >>> stat = batched_item_mean(torch.tensor([False, True, True]), "hits")
    >>> stat(torch.tensor([[0, 1, 2], [1, 1, 2]])).tolist()
    [0.6666666666666666, 1.0]
    """
    values = values if values.is_floating_point() else values.double()  # hits (bool) are averaged as 0/1
    n = values.shape[0]
    return BatchedStatistic(lambda idx: values[idx.to(values.device)].mean(dim=1), n, values.device, 16 * n, name)


def batched_gap_l2i(img: Any, txt: Any) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.gap.gap_l2i`: the mean over the resample of ‖x̂_i − ŷ_i‖. O(b·n)."""
    a, b = to_pair(img, txt, same_n=True)
    return batched_item_mean(torch.linalg.vector_norm(normalize_rows(a) - normalize_rows(b), dim=1),
                               "gap_l2i")


def batched_alignment(img: Any, txt: Any, alpha: float = 2) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.geometry.alignment`: mean over the resample of ‖x̂_i − ŷ_i‖^α. O(b·n)."""
    if not alpha > 0:
        raise ValueError(f"alignment needs alpha > 0, got {alpha}")
    a, b = to_pair(img, txt, same_n=True)
    dist = torch.linalg.vector_norm(normalize_rows(a) - normalize_rows(b), dim=1)
    return batched_item_mean(dist.pow(float(alpha)), "alignment")


def batched_uniformity(x: Any, t: float = 2) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.geometry.uniformity`, log E_{a<b} exp(−t‖x̂_a − x̂_b‖²) per resample.

    With D_ij = ‖x̂_i − x̂_j‖² (computed once, n×n) and the counts c of a resample of size m, the
    sum over its unordered pairs of rows is

        S = ½ [ Σ_{i≠j} c_i c_j e^{−t D_ij} + Σ_i c_i (c_i − 1) · 1 ],

    the second term being the pairs of a row with its copies (D = 0), which the plain metric on
    the resampled rows counts too. For range safety the exponentials are shifted by the smallest
    off-diagonal D, δ: e^{−t(D−δ)} ∈ [e^{−4t}, 1] and the copies' term is e^{tδ}; in float64 this
    is exact to rounding for t up to about 170 (float32 on a GPU: t up to about 20). Then
    ℓ = log S − tδ − log(m(m−1)/2), capped at 0 as the plain metric.

    Cost: O(n²·d) once for D and O(b·n²) per chunk of b resamples, n² floats of memory
    (32 MiB at n = 2048 in float64). NaN for m < 2.
    """
    if not t > 0:
        raise ValueError(f"uniformity needs t > 0, got {t}")
    xt = to_rows(x, "x")
    n = xt.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs n >= 2 rows, got {n}")
    xh = normalize_rows(xt)
    dist = torch.cdist(xh, xh, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    eye = torch.eye(n, dtype=torch.bool, device=xh.device)
    shift = float(dist.masked_fill(eye, math.inf).min())
    kernel = torch.exp(-float(t) * (dist - shift)).masked_fill(eye, 0.0)
    self_term = math.exp(float(t) * shift)
    del dist

    def fn(idx: torch.Tensor) -> torch.Tensor:
        m = idx.shape[1]
        if m < 2:
            return _nan(idx.shape[0], kernel)
        c = resample_counts(idx, n, kernel.dtype)
        pairs = 0.5 * (((c @ kernel) * c).sum(dim=1) + self_term * (c * (c - 1)).sum(dim=1))
        value = torch.log(pairs) - float(t) * shift - math.log(m * (m - 1) / 2)
        return value.clamp(max=0.0)

    return BatchedStatistic(fn, n, xh.device, 8 * 3 * n, "uniformity")


def _take(a: Any, rows: torch.Tensor) -> Any:
    if isinstance(a, torch.Tensor):
        return a[rows.to(a.device)]
    if isinstance(a, np.ndarray):
        return a[rows.cpu().numpy()]
    return [a[i] for i in rows.tolist()]


def per_resample(fn: Callable[..., float], *arrays: Any, name: str = "",
                 device=None) -> BatchedStatistic:
    """A statistic for any plain metric: ``fn(*(a[idx[k]] for a in arrays))`` for each resample k.

    ``arrays`` are indexed along their first axis with the same indices (paired samples):
    torch tensors and numpy arrays by fancy indexing, other sequences (e.g. lists of per-sentence
    arrays) by a comprehension. Slow, one plain call per resample (B times the metric's cost), but
    right by construction: the fallback for metrics without a batched form (e.g.
    :func:`mmdiag.metrics.geometry.mutual_knn`). A metric that raises on a resample gives NaN
    there (dropped from the interval, see
    :func:`~mmdiag.uncertainty.bootstrap.interval_from_replicates`).

    >>> import numpy as np
    >>> stat = per_resample(lambda v: float(np.median(v)), np.arange(5.0))
    >>> stat(torch.tensor([[0, 0, 1, 4, 4], [2, 2, 2, 2, 2]])).tolist()
    [1.0, 2.0]
    """
    if not arrays:
        raise ValueError("per_resample needs at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"per_resample: paired arrays must have the same length, got "
                         f"{[len(a) for a in arrays]}")
    dev = torch.device(device) if device is not None else next(
        (a.device for a in arrays if isinstance(a, torch.Tensor)), torch.device("cpu"))

    def loop(idx: torch.Tensor) -> torch.Tensor:
        out = []
        for rows in idx:
            try:
                out.append(float(fn(*(_take(a, rows) for a in arrays))))
            except (ValueError, ZeroDivisionError, FloatingPointError):
                out.append(math.nan)
        return torch.tensor(out, dtype=torch.float64)

    label = name or getattr(fn, "__name__", "statistic")
    return BatchedStatistic(loop, n, dev, 64 * n, label)
