"""Batched forms of the spectral and kernel metrics: RankMe, linear CKA, isotropy.

Same contract as :mod:`mmdiag.uncertainty.batched`: each factory takes the plain metric's inputs
and returns a :class:`~mmdiag.uncertainty.bootstrap.BatchedStatistic` whose value on resample
``idx[k]`` is the plain metric on the resampled rows, up to rounding (eigen- and singular-value
solvers on algebraically equal matrices; agreement to ~1e-9 on well-conditioned data).

These statistics depend on the number of *distinct* rows, and a resample holds only about
63% of them. When n is not much larger than d the bootstrap distribution is shifted: RankMe's
resamples have rank at most the number of distinct rows (for n <= d it is biased low by about a
third), CKA between high-dimensional representations is biased up when n is comparable to d.
Read the interval of these metrics as an interval only for n >> d (n >= 4d is a reasonable
rule); otherwise the se still measures spread, but not around the value.

>>> import numpy as np
>>> from mmdiag.metrics.geometry import rankme
>>> from mmdiag.uncertainty.bootstrap import resample_indices
>>> x = np.random.default_rng(0).normal(size=(30, 4))
>>> idx = resample_indices(30, 2, seed=0)
>>> bool(np.allclose(batched_rankme(x)(idx), [rankme(x[i]) for i in idx.numpy()]))
True
"""
from __future__ import annotations

from typing import Any

import torch

from mmdiag.metrics.cone import normalize_rows, to_rows
from mmdiag.uncertainty.bootstrap import BatchedStatistic, resample_counts

__all__ = ["batched_rankme", "batched_linear_cka", "batched_isotropy"]

#: rows of the n×n kernels multiplied at a time by :func:`batched_linear_cka`
KERNEL_ROW_BLOCK = 512


def batched_rankme(x: Any, eps: float = 1e-7) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.geometry.rankme`: ``torch.linalg.svdvals`` on the ``(b, m, d)`` stack.

    p_k = σ_k/‖σ‖₁ + ε, RankMe = exp(−Σ_k p_k log p_k); 0 for an all-zero resample.
    Cost: one SVD of an m×d matrix per resample, O(m·d·min(m, d)), i.e. B times the plain
    metric (the batched solver saves only call overhead), and m·d floats per resample in memory.
    """
    xt = to_rows(x, "x")
    n, d = xt.shape

    def fn(idx: torch.Tensor) -> torch.Tensor:
        sigma = torch.linalg.svdvals(xt[idx])
        total = sigma.sum(dim=1, keepdim=True)
        p = sigma / torch.where(total > 0, total, torch.ones_like(total)) + float(eps)
        value = torch.exp(-(p * torch.log(p)).sum(dim=1))
        return torch.where(total[:, 0] > 0, value, torch.zeros_like(value))

    return BatchedStatistic(fn, n, xt.device, 8 * 3 * n * d, "rankme")


def _constant_resample(group: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """True for resamples whose rows are all the same row of the data (ids of equal rows: ``group``)."""
    g = group[idx]
    return (g == g[:, :1]).all(dim=1)


def batched_linear_cka(x: Any, y: Any) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.geometry.linear_cka` in Gram form, weighted by the resample counts.

    With K = X₀X₀ᵀ, L = Y₀Y₀ᵀ (X₀, Y₀ centred on the full sample once: CKA of a resample does
    not change under a shift of all rows, and pre-centring keeps the cancellation below small),
    counts c of a resample of size m, r = Kc/m, q = Lc/m, s = cᵀKc/m², u = cᵀLc/m²:

        HSIC(K, L) = Σ_ij c_i c_j K̃_ij L̃_ij = cᵀ(K∘L)c − 2m Σ_i c_i r_i q_i + m² s u,

    K̃ being K centred on the resample's own mean (the expansion of
    Σ c_i c_j (K_ij − r_i − r_j + s)(L_ij − q_i − q_j + u)), and
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), clipped to [0, 1].

    Degenerate resamples: the plain metric returns 0 when either input is constant across the
    rows (to 100 ulp); here a resample all of whose rows are copies of one data row gives 0 (exact
    equality of rows), and a resample of distinct rows that agree only to rounding is not
    detected (its value is rounding noise). Cost: O(n²(d₁ + d₂)) once, O(b·n²) per chunk, and
    two n×n matrices (64 MiB at n = 2048 in float64).
    """
    xt = to_rows(x, "x")
    yt = to_rows(y, "y", device=xt.device)
    n = xt.shape[0]
    if yt.shape[0] != n:
        raise ValueError(f"linear_cka needs paired rows (same n), got {n} and {yt.shape[0]}")
    x0, y0 = xt - xt.mean(dim=0), yt - yt.mean(dim=0)
    k, l = x0 @ x0.T, y0 @ y0.T
    gx = torch.unique(xt, dim=0, return_inverse=True)[1]
    gy = torch.unique(yt, dim=0, return_inverse=True)[1]

    def fn(idx: torch.Tensor) -> torch.Tensor:
        m = idx.shape[1]
        c = resample_counts(idx, n, k.dtype)
        kc, lc = c @ k, c @ l
        s, u = (kc * c).sum(dim=1) / m**2, (lc * c).sum(dim=1) / m**2
        r, q = kc / m, lc / m
        a_kl = torch.zeros_like(s)
        a_kk, a_ll = torch.zeros_like(s), torch.zeros_like(s)
        for start in range(0, n, KERNEL_ROW_BLOCK):
            rows = slice(start, min(n, start + KERNEL_ROW_BLOCK))
            kr, lr, cr = k[rows], l[rows], c[:, rows]
            a_kl += ((c @ (kr * lr).T) * cr).sum(dim=1)
            a_kk += ((c @ (kr * kr).T) * cr).sum(dim=1)
            a_ll += ((c @ (lr * lr).T) * cr).sum(dim=1)
        num = a_kl - 2 * m * (c * r * q).sum(dim=1) + m**2 * s * u
        den_k = a_kk - 2 * m * (c * r * r).sum(dim=1) + m**2 * s * s
        den_l = a_ll - 2 * m * (c * q * q).sum(dim=1) + m**2 * u * u
        den = torch.sqrt(den_k.clamp(min=0) * den_l.clamp(min=0))
        value = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                            torch.zeros_like(den)).clamp(0.0, 1.0)
        degenerate = _constant_resample(gx, idx) | _constant_resample(gy, idx)
        return torch.where(degenerate, torch.zeros_like(value), value)

    return BatchedStatistic(fn, n, xt.device, 8 * (6 * n + 3 * KERNEL_ROW_BLOCK), "linear_cka")


def batched_isotropy(x: Any, normalize: bool = True) -> BatchedStatistic:
    """Batched :func:`mmdiag.metrics.isotropy.isotropy` (Mu & Viswanath 2018, arXiv:1702.01417).

    Per resample with counts c: G = Σ_i c_i x_i x_iᵀ (= x[idx]ᵀ x[idx]), its eigenvectors V by
    ``torch.linalg.eigh`` on the ``(b, d, d)`` stack, and log Z(±v) = logsumexp_i(±x_i·v + log c_i)
    (rows not drawn have log 0 = −inf and drop out). I = exp(min log Z − max log Z), capped at 1.
    Directions in the null space of G (d larger than the distinct rows) are orthogonal to every
    drawn row, so Z = m there whatever basis the solver picks, as in the plain metric.
    Cost per resample: O(n·d²) for G and the projections plus an O(d³) eigendecomposition, about
    the plain metric's cost each; memory 2·n·d + 2·d² floats per resample.
    """
    xt = to_rows(x, "x")
    if normalize:
        xt = normalize_rows(xt)
    n, d = xt.shape

    def fn(idx: torch.Tensor) -> torch.Tensor:
        c = resample_counts(idx, n, xt.dtype)
        gram = (c[:, :, None] * xt[None]).transpose(1, 2) @ xt
        _, vectors = torch.linalg.eigh(gram)
        proj = xt[None] @ vectors                                    # (b, n, d)
        log_c = torch.log(c)[:, :, None]
        log_z = torch.cat([torch.logsumexp(proj + log_c, dim=1),
                           torch.logsumexp(-proj + log_c, dim=1)], dim=1)
        return torch.exp(log_z.min(dim=1).values - log_z.max(dim=1).values).clamp(max=1.0)

    return BatchedStatistic(fn, n, xt.device, 8 * (2 * n * d + 2 * d * d), "isotropy")
