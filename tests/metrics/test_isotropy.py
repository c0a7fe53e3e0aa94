"""Tests for mmdiag.metrics.isotropy against a numpy reference and closed forms, with hypothesis invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.stats import ortho_group

from mmdiag.metrics import isotropy as isotropy_module
from mmdiag.metrics.isotropy import isotropy

SETTINGS = settings(max_examples=30, deadline=None)
shapes = st.tuples(st.integers(0, 2**31), st.integers(2, 40), st.integers(2, 12))


def reference(x, normalize=True):
    """Mu & Viswanath 2018, eq. (2) written out directly: numpy eigenvectors of XᵀX, both signs, plain exp sums."""
    x = np.asarray(x, dtype=np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(x.T @ x)
    z = [np.exp(x @ (sign * c)).sum() for c in vectors.T for sign in (1, -1)]
    return min(z) / max(z)


def gauss(seed, n, d, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


@SETTINGS
@given(shapes, st.booleans())
def test_matches_the_reference(p, normalize):
    seed, n, d = p
    x = gauss(seed, n, d)
    assert isotropy(x, normalize=normalize) == pytest.approx(reference(x, normalize), rel=1e-9, abs=1e-12)


@SETTINGS
@given(shapes, st.floats(-3, 3))
def test_in_zero_one(p, shift):
    seed, n, d = p
    value = isotropy(gauss(seed, n, d, shift))
    assert 0.0 < value <= 1.0


@SETTINGS
@given(shapes)
def test_invariant_to_rotation_order_and_scale(p):
    seed, n, d = p
    x = gauss(seed, n, d, 0.5)
    q = ortho_group.rvs(d, random_state=seed % 2**32) if d > 1 else np.ones((1, 1))
    order = np.random.default_rng(seed).permutation(n)
    base = isotropy(x)
    assert isotropy(x @ q) == pytest.approx(base, rel=1e-7)
    assert isotropy(x[order]) == pytest.approx(base, rel=1e-9)
    assert isotropy(3.7 * x) == pytest.approx(base, rel=1e-9)  # rows are normalised first


def test_closed_forms():
    assert isotropy(np.vstack([np.eye(4), -np.eye(4)])) == pytest.approx(1.0)
    shared = np.tile([[2.0, 0.0, 0.0]], (6, 1))
    assert isotropy(shared) == pytest.approx(np.exp(-2.0))  # unit rows: Z(e1)/Z(-e1) = e^-2
    assert isotropy(shared, normalize=False) == pytest.approx(np.exp(-4.0))  # raw norm 2


def test_a_narrow_cone_is_less_isotropic():
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(200, 16))
    narrow = wide + 6.0  # all rows share the direction (1, ..., 1)
    assert isotropy(narrow) < 0.5 * isotropy(wide)


def test_large_norms_do_not_overflow():
    x = gauss(1, 20, 5) * 1e4  # exp(cᵀx) overflows float64; the ratio underflows to 0.0, never NaN
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(reference(x, normalize=False))
    assert isotropy(x, normalize=False) == 0.0
    assert isotropy(x * 1e-3, normalize=False) == pytest.approx(reference(x * 1e-3, normalize=False), rel=1e-6)


def test_torch_input_and_facts():
    x = torch.randn(30, 6, dtype=torch.float64)
    assert isotropy(x) == pytest.approx(reference(x.numpy()), rel=1e-9)
    assert isotropy_module.higher_is_better is True
    assert (isotropy_module.lower_bound, isotropy_module.upper_bound) == (0.0, 1.0)


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.array([[np.nan, 1.0]])])
def test_bad_input_is_a_value_error(bad):
    with pytest.raises(ValueError):
        isotropy(bad)
