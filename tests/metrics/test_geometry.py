"""Tests for mmdiag.metrics.geometry (alignment/uniformity, RankMe, linear CKA, mutual kNN)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from scipy.stats import ortho_group

from mmdiag.metrics.geometry import alignment, linear_cka, mutual_knn, rankme, uniformity

SETTINGS = settings(max_examples=30, deadline=None)



def unit(x):
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def gauss(seed, n, d, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


shapes = st.tuples(st.integers(0, 2**31), st.integers(3, 30), st.integers(2, 10))
int_mats = st.tuples(st.integers(2, 10), st.integers(1, 5)).flatmap(
    lambda s: arrays(np.float64, s, elements=st.integers(-3, 3).map(float)))


# ------------------------------------------------------------- alignment
@SETTINGS
@given(shapes, st.sampled_from([1, 2, 3.5]))
def test_alignment_against_numpy(p, alpha):
    seed, n, d = p
    x, y = gauss(seed, n, d), gauss(seed + 1, n, d)
    ref = (np.linalg.norm(unit(x) - unit(y), axis=1) ** alpha).mean()
    assert alignment(x, y, alpha) == pytest.approx(ref, rel=1e-12)
    perm = np.random.default_rng(seed).permutation(n)
    assert alignment(x[perm], y[perm], alpha) == pytest.approx(ref, rel=1e-12)
    q = ortho_group.rvs(d, random_state=seed)
    assert alignment(x @ q, y @ q, alpha) == pytest.approx(ref, rel=1e-9)


def test_alignment_closed_forms():
    e1 = np.tile([1.0, 0, 0], (4, 1))
    e2 = np.tile([0, 1.0, 0], (4, 1))
    assert alignment(e1, e2) == pytest.approx(2.0)            # ‖e1 − e2‖² = 2
    assert alignment(e1, e2, alpha=1) == pytest.approx(math.sqrt(2))
    assert alignment(e1, -e1) == pytest.approx(4.0)
    assert alignment(e1, 5 * e1) == 0.0
    with pytest.raises(ValueError):
        alignment(e1, e2[:3])
    with pytest.raises(ValueError):
        alignment(e1, e2, alpha=0)


# ------------------------------------------------------------- uniformity
def ref_uniformity(x, t):
    xh = unit(x)
    sq = cdist(xh, xh, "sqeuclidean")
    off = ~np.eye(len(x), dtype=bool)
    return float(logsumexp(-t * sq[off]) - math.log(off.sum()))


@SETTINGS
@given(shapes, st.sampled_from([0.5, 2.0, 5.0]))
def test_uniformity_against_brute_force(p, t):
    seed, n, d = p
    x = gauss(seed, n, d, shift=0.4)
    v = uniformity(x, t)
    assert v == pytest.approx(ref_uniformity(x, t), abs=1e-10)
    assert -4 * t - 1e-12 <= v <= 0.0
    q = ortho_group.rvs(d, random_state=seed)
    perm = np.random.default_rng(seed).permutation(n)
    assert uniformity(x @ q, t) == pytest.approx(v, abs=1e-10)
    assert uniformity(x[perm], t) == pytest.approx(v, abs=1e-12)


@SETTINGS
@given(int_mats)
def test_uniformity_with_zero_rows_and_duplicates(x):
    v = uniformity(x)
    assert math.isfinite(v) and v == pytest.approx(ref_uniformity(x, 2.0), abs=1e-10)


def test_uniformity_closed_forms():
    assert uniformity(np.tile([1.0, 2.0], (5, 1))) == pytest.approx(0.0, abs=1e-15)
    # antipodal pair: ‖x−y‖² = 4  ->  −4t
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]]), t=2) == pytest.approx(-8.0)
    # spread points are more uniform (lower) than a narrow cone
    spread = gauss(0, 200, 8)
    narrow = gauss(0, 200, 8) * 0.1 + 1.0
    assert uniformity(spread) < uniformity(narrow)
    with pytest.raises(ValueError):
        uniformity(np.ones((1, 3)))


# ------------------------------------------------------------- RankMe
def ref_rankme(x, eps=1e-7):
    s = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


@SETTINGS
@given(shapes, st.floats(0.01, 100.0))
def test_rankme_against_numpy_and_bounds(p, scale):
    seed, n, d = p
    x = gauss(seed, n, d) * scale
    v = rankme(x)
    assert v == pytest.approx(ref_rankme(x), rel=1e-10)
    k = min(n, d)
    assert 1.0 - 1e-6 <= v <= k * (1 + 1e-4)
    perm = np.random.default_rng(seed).permutation(n)
    q = ortho_group.rvs(d, random_state=seed)
    assert rankme(x[perm]) == pytest.approx(v, rel=1e-10)
    assert rankme(x @ q) == pytest.approx(v, rel=1e-8)
    assert rankme(x * 7.0) == pytest.approx(v, rel=1e-10)


@SETTINGS
@given(int_mats)
def test_rankme_bounds_on_degenerate_input(x):
    v = rankme(x)
    if not np.any(x):
        assert v == 0.0
    else:
        assert 1.0 - 1e-6 <= v <= min(x.shape) * (1 + 1e-4)


def test_rankme_closed_forms():
    # isotropic Gaussian with n >> d: close to full rank d
    assert rankme(gauss(0, 4000, 16)) > 0.97 * 16
    # rank 1: outer product
    rng = np.random.default_rng(1)
    r1 = np.outer(rng.normal(size=50), rng.normal(size=12))
    assert rankme(r1) == pytest.approx(1.0, abs=1e-4)
    # exactly equal singular values: RankMe = K (up to the eps term)
    assert rankme(np.eye(10) * 3) == pytest.approx(10.0, rel=1e-4)
    assert rankme(np.eye(10), eps=0.0) == pytest.approx(10.0, rel=1e-12)
    assert rankme(np.zeros((5, 3))) == 0.0


# ------------------------------------------------------------- CKA
def ref_cka(x, y):
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l)))


cka_shapes = st.tuples(st.integers(0, 2**31), st.integers(4, 30),
                       st.integers(2, 40), st.integers(2, 40))


@SETTINGS
@given(cka_shapes)
def test_cka_against_hsic_reference(p):
    seed, n, d1, d2 = p  # covers both the n < d (Gram) and the n >= d branch
    x = gauss(seed, n, d1)
    y = x[:, :1] @ np.ones((1, d2)) + gauss(seed + 1, n, d2)
    v = linear_cka(x, y)
    assert v == pytest.approx(ref_cka(x, y), abs=1e-10)
    assert 0.0 <= v <= 1.0


@SETTINGS
@given(cka_shapes, st.floats(0.001, 1000.0))
def test_cka_invariances(p, scale):
    seed, n, d1, d2 = p
    x = gauss(seed, n, d1)
    y = np.tanh(x @ gauss(seed + 2, d1, d2)) + 0.3 * gauss(seed + 3, n, d2)
    v = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(scale * x, y) == pytest.approx(v, abs=1e-10)
    assert linear_cka(x, y / scale) == pytest.approx(v, abs=1e-10)
    q1 = ortho_group.rvs(d1, random_state=seed)
    q2 = ortho_group.rvs(d2, random_state=seed + 1)
    assert linear_cka(x @ q1, y @ q2) == pytest.approx(v, abs=1e-10)
    assert linear_cka(x + 5.0, y - 3.0) == pytest.approx(v, abs=1e-8)  # centring
    perm = np.random.default_rng(seed).permutation(n)
    assert linear_cka(x[perm], y[perm]) == pytest.approx(v, abs=1e-10)
    assert linear_cka(y, x) == pytest.approx(v, abs=1e-10)


def test_cka_edge_cases():
    x = gauss(0, 20, 5)
    assert linear_cka(x, np.full((20, 3), 0.1)) == 0.0      # constant: undefined -> 0
    with pytest.raises(ValueError):
        linear_cka(x, x[:10])
    # independent high-dimensional noise has low CKA with a low-rank signal
    z = gauss(1, 200, 2)
    assert linear_cka(z, gauss(2, 200, 2)) < 0.1


# ------------------------------------------------------------- mutual kNN
def ref_mknn(x, y, k):
    def nn(a):
        s = unit(a) @ unit(a).T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    nx, ny = nn(x), nn(y)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny)]))


@SETTINGS
@given(st.tuples(st.integers(0, 2**31), st.integers(12, 40), st.integers(2, 10),
                 st.integers(2, 10)), st.integers(1, 10), st.integers(1, 16))
def test_mknn_against_brute_force(p, k, block):
    seed, n, d1, d2 = p
    x = gauss(seed, n, d1)
    y = x[:, :1] @ np.ones((1, d2)) + 0.8 * gauss(seed + 1, n, d2)
    v = mutual_knn(x, y, k=k, block=block)
    assert v == pytest.approx(ref_mknn(x, y, k), abs=1e-12)
    assert 0.0 <= v <= 1.0
    assert mutual_knn(x, x, k=k) == 1.0
    perm = np.random.default_rng(seed).permutation(n)
    assert mutual_knn(x[perm], y[perm], k=k) == pytest.approx(v, abs=1e-12)
    q = ortho_group.rvs(d1, random_state=seed)
    assert mutual_knn(x @ q, y, k=k) == pytest.approx(v, abs=1e-12)


def test_mknn_edge_cases():
    x = gauss(0, 11, 4)
    with pytest.raises(ValueError, match="n > k"):
        mutual_knn(x[:10], x[:10], k=10)
    assert mutual_knn(x, x, k=10) == 1.0                    # n = k + 1: every other row
    with pytest.raises(ValueError):
        mutual_knn(x, x, k=0)
    with pytest.raises(ValueError):
        mutual_knn(x, x[:5], k=2)
    # unrelated data: about chance level k/(n-1)
    a, b = gauss(1, 400, 8), gauss(2, 400, 8)
    assert mutual_knn(a, b, k=10) < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_geometry_on_gpu_matches_cpu():
    x, y = gauss(0, 300, 32), gauss(1, 300, 32) + gauss(0, 300, 32)
    gx, gy = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    assert linear_cka(gx, gy) == pytest.approx(linear_cka(x, y), abs=1e-4)
    assert rankme(gx) == pytest.approx(rankme(x), rel=1e-4)
    assert uniformity(gx) == pytest.approx(uniformity(x), abs=1e-4)
    assert alignment(gx, gy) == pytest.approx(alignment(x, y), abs=1e-4)
    assert mutual_knn(gx, gy) == pytest.approx(mutual_knn(x, y), abs=0.02)
