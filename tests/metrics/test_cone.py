"""Tests for mmdiag.metrics.cone (cone effect, Liang et al. 2022, arXiv:2203.02053)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import ortho_group, spearmanr

from mmdiag.metrics.cone import (cone_narrowing, mean_pairwise_cosine,
                                 normalize_rows, to_pair, to_rows)

SETTINGS = settings(max_examples=40, deadline=None)



def ref_cone(x: np.ndarray) -> float:
    """Explicit n×n cosine matrix, zero rows -> zero vector, mean off-diagonal."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    xh = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    c = xh @ xh.T
    n = len(x)
    return float((c.sum() - np.trace(c)) / (n * (n - 1)))


# small integer entries: hit zero rows, duplicate rows and exact ties
int_mats = st.integers(2, 12).flatmap(
    lambda n: st.integers(1, 6).flatmap(
        lambda d: arrays(np.float64, (n, d), elements=st.integers(-4, 4).map(float))))
# continuous data from a seed
gauss = st.tuples(st.integers(0, 2**31), st.integers(2, 40), st.integers(2, 12))


def _gauss(seed, n, d, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + shift


@SETTINGS
@given(int_mats)
def test_cone_matches_explicit_matrix_int(x):
    assert mean_pairwise_cosine(x) == pytest.approx(ref_cone(x), abs=1e-12)


@SETTINGS
@given(gauss, st.floats(-3, 3))
def test_cone_matches_explicit_matrix_gauss(params, shift):
    x = _gauss(*params, shift=shift)
    assert mean_pairwise_cosine(x) == pytest.approx(ref_cone(x), abs=1e-12)


@SETTINGS
@given(int_mats)
def test_cone_bounds_and_finite(x):
    n = x.shape[0]
    v = mean_pairwise_cosine(x)
    assert isinstance(v, float) and math.isfinite(v)
    assert -1.0 / (n - 1) - 1e-12 <= v <= 1.0


@SETTINGS
@given(gauss, st.integers(0, 2**31))
def test_cone_invariant_to_rotation_and_permutation(params, seed2):
    x = _gauss(*params, shift=0.7)
    q = ortho_group.rvs(x.shape[1], random_state=seed2)
    perm = np.random.default_rng(seed2).permutation(x.shape[0])
    v = mean_pairwise_cosine(x)
    assert mean_pairwise_cosine(x @ q) == pytest.approx(v, abs=1e-10)
    assert mean_pairwise_cosine(x[perm]) == pytest.approx(v, abs=1e-12)
    # positive per-row rescaling does not change any cosine
    scales = np.random.default_rng(seed2).uniform(0.1, 10, size=(x.shape[0], 1))
    assert mean_pairwise_cosine(x * scales) == pytest.approx(v, abs=1e-10)


def test_cone_closed_forms():
    n, d = 7, 5
    e1 = np.zeros((n, d)); e1[:, 0] = 1.0
    assert mean_pairwise_cosine(e1) == pytest.approx(1.0, abs=1e-15)
    # two opposite vectors: cosine -1 = lower bound for n = 2
    assert mean_pairwise_cosine([[1.0, 2.0], [-2.0, -4.0]]) == pytest.approx(-1.0)
    # orthonormal basis: all off-diagonal cosines are 0
    assert mean_pairwise_cosine(np.eye(6) * 3.0) == pytest.approx(0.0, abs=1e-15)
    # simplex (n unit vectors summing to 0) reaches the lower bound -1/(n-1)
    k = 5
    simplex = np.eye(k) - 1.0 / k
    assert mean_pairwise_cosine(simplex) == pytest.approx(-1.0 / (k - 1), abs=1e-12)


def test_cone_zero_rows_defined_as_zero_vectors():
    x = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    # pairs (0,2),(2,0) have cosine 1; the 4 pairs with the zero row have 0
    assert mean_pairwise_cosine(x) == pytest.approx(2.0 / 6.0)
    assert mean_pairwise_cosine(np.zeros((4, 3))) == 0.0
    z = normalize_rows(torch.zeros(3, 2, dtype=torch.float64))
    assert torch.equal(z, torch.zeros(3, 2, dtype=torch.float64))


def test_cone_accepts_torch_and_numpy_alike():
    x = _gauss(3, 20, 8, shift=0.5)
    v = mean_pairwise_cosine(x)
    assert mean_pairwise_cosine(torch.from_numpy(x)) == pytest.approx(v, abs=1e-12)
    assert mean_pairwise_cosine(x.tolist()) == pytest.approx(v, abs=1e-12)
    assert mean_pairwise_cosine(x.astype(np.float32)) == pytest.approx(v, abs=1e-6)
    t = torch.from_numpy(x.astype(np.float32)).requires_grad_(True)
    assert mean_pairwise_cosine(t) == pytest.approx(v, abs=1e-6)
    assert to_rows(x.astype(np.float32)).dtype == torch.float64  # CPU: float64
    ro = x.copy()
    ro.setflags(write=False)
    assert mean_pairwise_cosine(ro) == pytest.approx(v, abs=1e-12)


def test_cone_rejects_bad_input():
    with pytest.raises(ValueError, match="n >= 2"):
        mean_pairwise_cosine(np.ones((1, 3)))
    with pytest.raises(ValueError, match="shape"):
        mean_pairwise_cosine(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        mean_pairwise_cosine(np.array([[1.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="numeric"):
        mean_pairwise_cosine(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="same dimension"):
        to_pair(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="same n"):
        to_pair(np.ones((3, 2)), np.ones((4, 2)), same_n=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cone_on_gpu_stays_on_device():
    x = _gauss(5, 300, 16, shift=0.3)
    t = torch.from_numpy(x).cuda()
    assert to_rows(t).device.type == "cuda" and to_rows(t).dtype == torch.float32
    assert mean_pairwise_cosine(t) == pytest.approx(ref_cone(x), abs=1e-5)


# ---------------------------------------------------------------- narrowing
@SETTINGS
@given(st.lists(st.floats(-1, 1), min_size=2, max_size=30))
def test_narrowing_matches_scipy_or_zero_for_constant(values):
    rho = cone_narrowing(values)
    assert isinstance(rho, float) and -1.0 <= rho <= 1.0
    if len(set(values)) == 1:
        assert rho == 0.0
    else:
        ref = spearmanr(np.arange(len(values)), values).statistic
        assert rho == pytest.approx(ref, abs=1e-12)


def test_narrowing_closed_forms():
    assert cone_narrowing([0.1, 0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert cone_narrowing([0.9, 0.8, 0.3, -0.1]) == pytest.approx(-1.0)
    assert cone_narrowing([0.4, 0.4, 0.4]) == 0.0
    # monotone but non-linear is still a perfect rank correlation
    assert cone_narrowing(np.exp(np.arange(6.0))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cone_narrowing([0.3])
    with pytest.raises(ValueError):
        cone_narrowing([0.3, float("nan")])
