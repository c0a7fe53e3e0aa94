"""Representation-geometry metrics beyond the modality gap.

* alignment / uniformity: Wang & Isola 2020, arXiv:2005.10242;
* RankMe (effective rank): Garrido et al. 2023, arXiv:2210.02885;
* linear CKA: Kornblith et al. 2019, arXiv:1905.00414;
* mutual k-nearest-neighbour alignment: Huh et al. 2024, arXiv:2405.07987.

Inputs are ``(n, d)`` numpy arrays or torch tensors (rows = samples); see
:mod:`mmdiag.metrics.cone` for the device/dtype and zero-row conventions.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from mmdiag.metrics.cone import normalize_rows, to_pair, to_rows

__all__ = ["alignment", "uniformity", "uniformity_blocks", "rankme", "linear_cka", "mutual_knn", "mutual_knn_blocks",
           "MKNN_BLOCK_ROWS", "UNIFORMITY_BLOCK_ROWS"]

#: rows per block of :func:`mutual_knn_blocks` (Huh et al. 2024 compute mutual k-NN on 1,024 samples)
MKNN_BLOCK_ROWS = 4096
#: rows per block of :func:`uniformity_blocks`: all pairs of 4,096 rows are 8.4 M distances (its bootstrap holds
#: 4,096² float64 kernels, 128 MB); all pairs of 16,384 rows needed 7 GB and grew as n²
UNIFORMITY_BLOCK_ROWS = 4096


def alignment(img: Any, txt: Any, alpha: float = 2) -> float:
    """Alignment loss ℓ_align = (1/n) Σ_i ‖x̂_i − ŷ_i‖₂^α over matched normalised pairs.

    Wang & Isola 2020 (arXiv:2005.10242), eq. 2; lower = better aligned; in
    [0, 2^α].  Requires the same n and α > 0.
    """
    if not alpha > 0:
        raise ValueError(f"alignment needs alpha > 0, got {alpha}")
    a, b = to_pair(img, txt, same_n=True)
    dist = torch.linalg.vector_norm(normalize_rows(a) - normalize_rows(b), dim=1)
    return float(dist.pow(float(alpha)).mean())


def uniformity(x: Any, t: float = 2) -> float:
    """Uniformity loss ℓ_unif = log E_{i≠j} exp(−t ‖x̂_i − x̂_j‖²).

    Wang & Isola 2020 (arXiv:2005.10242), eq. 3, over all pairs of distinct rows
    (the mean over unordered pairs equals the mean over ordered ones); computed
    as logsumexp(−t·pdist²) − log(n(n−1)/2).  Lower = more uniform; in
    [−4t, 0].  Requires n >= 2 and t > 0.
    """
    if not t > 0:
        raise ValueError(f"uniformity needs t > 0, got {t}")
    xt = to_rows(x, "x")
    n = xt.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs n >= 2 rows, got {n}")
    sq = torch.pdist(normalize_rows(xt), p=2).pow(2)
    value = torch.logsumexp(-float(t) * sq, dim=0) - math.log(n * (n - 1) / 2)
    return min(0.0, float(value))


def uniformity_blocks(x: Any, t: float = 2, block_rows: int = UNIFORMITY_BLOCK_ROWS, seed: int = 0) -> dict[str, Any]:
    """:func:`uniformity` in linear time: over pairs within disjoint random blocks of about ``block_rows`` rows.

    n <= ``block_rows``: the exact value on all pairs (one block). Otherwise the rows are shuffled
    (``numpy.random.default_rng(seed)``) into B = ⌈n / block_rows⌉ disjoint blocks of at most
    ``block_rows`` rows (so memory stays bounded); E_b, the mean of
    exp(−t‖x̂_i − x̂_j‖²) over the pairs of block b, is an unbiased estimate of the mean over all pairs
    (every pair within a block is a uniformly drawn pair of distinct rows), so the value is
    log((1/B) Σ_b E_b). Cost O(n · block_rows · d) time and O(block_rows²) memory instead of O(n²).
    Returns ``{"value", "blocks", "block_rows" (the smallest block), "se", "low", "high"}``: with
    B >= 2, the t interval Ē ± t_{0.975, B-1}·sd(E_b)/√B mapped through log (its lower end kept above
    e^{−4t}, the smallest possible E), and ``se`` = sd(E_b)/(√B·Ē) by the delta method; None with one block.

    >>> import torch
    >>> x = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    >>> uniformity_blocks(x, block_rows=100)["value"] == uniformity(x)  # one block: exact
    True
    >>> found = uniformity_blocks(x, block_rows=12)
    >>> found["blocks"], found["low"] <= found["value"] <= found["high"] <= 0
    (5, True)
    """
    import numpy as np
    from scipy import stats

    xt = to_rows(x, "x")
    n = xt.shape[0]
    if block_rows < 2:
        raise ValueError(f"uniformity_blocks needs block_rows >= 2, got {block_rows}")
    blocks = max(1, min(-(-n // int(block_rows)), n // 2))  # ceil (no block above block_rows), two rows each
    if blocks == 1:
        return {"value": uniformity(xt, t=t), "blocks": 1, "block_rows": n, "se": None, "low": None, "high": None}
    order = torch.as_tensor(np.random.default_rng(seed).permutation(n), device=xt.device)
    parts = torch.tensor_split(order, blocks)
    means = np.exp([uniformity(xt[p], t=t) for p in parts])  # E_b per block
    mean = float(means.mean())
    sd = float(means.std(ddof=1) / math.sqrt(blocks))
    half = float(stats.t.ppf(0.975, blocks - 1)) * sd
    floor = math.exp(-4.0 * float(t))
    return {"value": min(0.0, math.log(mean)), "blocks": blocks, "block_rows": int(min(len(p) for p in parts)),
            "se": sd / mean, "low": math.log(max(floor, mean - half)), "high": min(0.0, math.log(mean + half))}


def rankme(x: Any, eps: float = 1e-7) -> float:
    """RankMe effective rank (Garrido et al. 2023, arXiv:2210.02885, eq. 1).

    With singular values σ_1…σ_K of ``x`` (K = min(n, d), no centring):
    p_k = σ_k / ‖σ‖₁ + ε and RankMe = exp(−Σ_k p_k log p_k).  As in the paper, ε
    is added after the division and the p_k are not renormalised, so the value
    can exceed the bounds [1, K] by O(K²·ε) (≈ 1e-4 for K = 768 with ε = 1e-7).
    An all-zero matrix has rank 0 and returns 0.0.
    """
    xt = to_rows(x, "x")
    sigma = torch.linalg.svdvals(xt)
    total = sigma.sum()
    if float(total) <= 0.0:
        return 0.0
    p = sigma / total + float(eps)
    return float(torch.exp(-(p * torch.log(p)).sum()))


def _centred_unit(z: torch.Tensor) -> torch.Tensor | None:
    """Column-centre ``z`` and scale it to unit Frobenius norm (None if ~constant)."""
    zc = z - z.mean(dim=0, keepdim=True)
    norm = torch.linalg.matrix_norm(zc)
    scale = torch.linalg.matrix_norm(z)
    if float(norm) <= 100 * torch.finfo(z.dtype).eps * float(scale) or float(norm) == 0.0:
        return None
    return zc / norm


def linear_cka(x: Any, y: Any) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019, arXiv:1905.00414).

    With column-centred X (n×d₁) and Y (n×d₂):
    CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) ∈ [0, 1]; evaluated in the equivalent
    Gram form ⟨XXᵀ, YYᵀ⟩_F / (‖XXᵀ‖_F ‖YYᵀ‖_F) when n < max(d₁, d₂).  Invariant
    to orthogonal transforms and isotropic scaling of either input.  Rows must
    be paired (same n; d may differ).  If either input is constant across rows
    (nothing left after centring) the index is undefined; 0.0 is returned.
    """
    xt = to_rows(x, "x")
    yt = to_rows(y, "y", device=xt.device)
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(f"linear_cka needs paired rows (same n), got "
                         f"{xt.shape[0]} and {yt.shape[0]}")
    xc, yc = _centred_unit(xt), _centred_unit(yt)
    if xc is None or yc is None:
        return 0.0
    n = xc.shape[0]
    if n < max(xc.shape[1], yc.shape[1]):
        k, l = xc @ xc.T, yc @ yc.T
        num = (k * l).sum()
        den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
    else:
        num = torch.linalg.matrix_norm(yc.T @ xc).pow(2)
        den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if float(den) <= 0.0:
        return 0.0
    return min(1.0, max(0.0, float(num / den)))


def _knn_indices(xh: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Indices of the k most cosine-similar other rows, row blocks at a time."""
    n = xh.shape[0]
    out = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sim = xh[start:stop] @ xh.T
        rows = torch.arange(stop - start, device=xh.device)
        sim[rows, rows + start] = -math.inf
        out.append(torch.topk(sim, k, dim=1).indices)
    return torch.cat(out)


def mutual_knn(x: Any, y: Any, k: int = 10, block: int = 1024) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, arXiv:2405.07987).

    m = (1/n) Σ_i |N_x(i) ∩ N_y(i)| / k, where N_x(i) are the k rows most
    cosine-similar to row i of ``x`` (itself excluded).  Rows must be paired
    (same n; d may differ); k >= 1 and n > k (``ValueError`` otherwise).  Ties
    in similarity are broken by ``torch.topk``.  Similarities are computed
    ``block`` rows at a time (O(block·n) memory).  In [0, 1].
    """
    if k < 1:
        raise ValueError(f"mutual_knn needs k >= 1, got {k}")
    xt = to_rows(x, "x")
    yt = to_rows(y, "y", device=xt.device)
    n = xt.shape[0]
    if yt.shape[0] != n:
        raise ValueError(f"mutual_knn needs paired rows (same n), got {n} and {yt.shape[0]}")
    if n <= k:
        raise ValueError(f"mutual_knn needs n > k, got n={n}, k={k}")
    ix = _knn_indices(normalize_rows(xt), k, max(1, int(block)))
    iy = _knn_indices(normalize_rows(yt), k, max(1, int(block)))
    shared = (ix.unsqueeze(2) == iy.unsqueeze(1)).any(dim=2).sum(dim=1)
    return int(shared.sum()) / (n * k)


def mutual_knn_blocks(x: Any, y: Any, k: int = 10, block_rows: int = MKNN_BLOCK_ROWS,
                      seed: int = 0) -> dict[str, Any]:
    """:func:`mutual_knn` in linear time: on disjoint random blocks of about ``block_rows`` pairs when n is larger.

    n <= ``block_rows``: the exact value on all rows (one block). Otherwise the rows are
    shuffled (``numpy.random.default_rng(seed)``) and cut into B = ⌊n / block_rows⌋ disjoint
    blocks of ⌊n/B⌋ or ⌈n/B⌉ pairs; neighbours are sought within each block and the value is
    the mean of the B block values (Huh et al. 2024 likewise measure on a 1,024-sample subset).
    Cost O(n · block_rows · d) instead of O(n² d). Returns ``{"value", "blocks", "block_rows"
    (the smallest block), "se", "low", "high"}``: with B >= 2 blocks, ``se`` = sd / √B of the
    block values and [low, high] = value ± t_{0.975, B-1}·se (a t interval over the blocks, which
    are independent given the data); None with one block. Chance is k / (block_rows − 1).
    """
    import numpy as np
    from scipy import stats

    xt = to_rows(x, "x")
    yt = to_rows(y, "y", device=xt.device)
    n = xt.shape[0]
    if yt.shape[0] != n:
        raise ValueError(f"mutual_knn needs paired rows (same n), got {n} and {yt.shape[0]}")
    if block_rows <= k:
        raise ValueError(f"mutual_knn_blocks needs block_rows > k, got {block_rows} and k={k}")
    blocks = max(1, n // int(block_rows))
    if blocks == 1:
        return {"value": mutual_knn(xt, yt, k=k), "blocks": 1, "block_rows": n, "se": None, "low": None,
                "high": None}
    order = torch.as_tensor(np.random.default_rng(seed).permutation(n), device=xt.device)
    parts = torch.tensor_split(order, blocks)
    values = np.array([mutual_knn(xt[p], yt[p], k=k) for p in parts])
    value = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(blocks))
    half = float(stats.t.ppf(0.975, blocks - 1)) * se
    return {"value": value, "blocks": blocks, "block_rows": int(min(len(p) for p in parts)), "se": se,
            "low": value - half, "high": value + half}
