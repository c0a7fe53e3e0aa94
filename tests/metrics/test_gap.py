"""Tests for mmdiag.metrics.gap (Liang et al. 2022 arXiv:2203.02053; Schrodi et al. 2024 arXiv:2404.07983)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import ortho_group

from mmdiag.metrics.gap import (gap_l2i, gap_norm, gap_vector, modality_separability,
                                relative_modality_gap)

SETTINGS = settings(max_examples=40, deadline=None)



def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def ref_rmg(img, txt) -> float:
    """RMG from explicit cosine matrices (Schrodi et al. 2024)."""
    a, b = unit(img), unit(txt)
    n = len(a)
    dist = lambda c: 1.0 - (c + 1.0) / 2.0  # noqa: E731
    d_m = dist(np.sum(a * b, axis=1)).mean()
    off = ~np.eye(n, dtype=bool)
    d_ii = dist(a @ a.T)[off].mean()
    d_tt = dist(b @ b.T)[off].mean()
    den = d_m + (d_ii + d_tt) / 2
    return 0.0 if den == 0 else float(d_m / den)


def pair(seed, n, d, offset=0.0, noise=0.5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    o = np.zeros(d); o[0] = offset
    return (z + noise * rng.normal(size=(n, d)) + o,
            z + noise * rng.normal(size=(n, d)) - o)


pairs = st.tuples(st.integers(0, 2**31), st.integers(2, 30), st.integers(2, 10),
                  st.floats(-2, 2), st.floats(0.0, 2.0))
int_pairs = st.tuples(st.integers(2, 10), st.integers(1, 5)).flatmap(
    lambda s: st.tuples(arrays(np.float64, s, elements=st.integers(-3, 3).map(float)),
                        arrays(np.float64, s, elements=st.integers(-3, 3).map(float))))


def test_closed_form_e1_e2():
    n, d = 6, 4
    img = np.zeros((n, d)); img[:, 0] = 2.0
    txt = np.zeros((n, d)); txt[:, 1] = 0.5
    assert gap_norm(img, txt) == pytest.approx(math.sqrt(2))
    np.testing.assert_allclose(gap_vector(img, txt).numpy(), [1, -1, 0, 0])
    assert gap_l2i(img, txt) == pytest.approx(math.sqrt(2))
    # d_m = 1/2, d_ii = d_tt = 0  ->  RMG = 1
    assert relative_modality_gap(img, txt) == pytest.approx(1.0)
    assert modality_separability(img, txt) == 1.0


@SETTINGS
@given(pairs)
def test_gap_against_numpy(p):
    img, txt = pair(*p)
    ref = unit(img).mean(0) - unit(txt).mean(0)
    np.testing.assert_allclose(gap_vector(img, txt).numpy(), ref, atol=1e-12)
    assert gap_norm(img, txt) == pytest.approx(np.linalg.norm(ref), abs=1e-12)
    assert gap_l2i(img, txt) == pytest.approx(
        np.linalg.norm(unit(img) - unit(txt), axis=1).mean(), abs=1e-12)
    assert 0.0 <= gap_norm(img, txt) <= 2.0 and 0.0 <= gap_l2i(img, txt) <= 2.0


@SETTINGS
@given(pairs)
def test_rmg_against_explicit_matrices(p):
    img, txt = pair(*p)
    assert relative_modality_gap(img, txt) == pytest.approx(ref_rmg(img, txt), abs=1e-12)


@SETTINGS
@given(int_pairs)
def test_rmg_in_unit_interval_with_zero_rows_and_ties(ab):
    img, txt = ab
    v = relative_modality_gap(img, txt)
    assert 0.0 <= v <= 1.0
    assert v == pytest.approx(ref_rmg(img, txt), abs=1e-12)


@SETTINGS
@given(pairs, st.integers(0, 2**31))
def test_invariant_to_rotation_and_batch_permutation(p, seed2):
    img, txt = pair(*p)
    d = img.shape[1]
    q = ortho_group.rvs(d, random_state=seed2)
    perm = np.random.default_rng(seed2).permutation(len(img))
    for f in (gap_norm, gap_l2i, relative_modality_gap):
        v = f(img, txt)
        assert f(img @ q, txt @ q) == pytest.approx(v, abs=1e-10)
        assert f(img[perm], txt[perm]) == pytest.approx(v, abs=1e-12)
    # the gap vector rotates with the data
    np.testing.assert_allclose(gap_vector(img @ q, txt @ q).numpy(),
                               gap_vector(img, txt).numpy() @ q, atol=1e-12)


@SETTINGS
@given(pairs)
def test_identical_modalities_have_no_gap(p):
    img, _ = pair(*p)
    assert gap_norm(img, img) == 0.0
    assert gap_l2i(img, img * 3.0) == pytest.approx(0.0, abs=1e-12)
    assert relative_modality_gap(img, img) == pytest.approx(0.0, abs=1e-12)


def test_rmg_of_identical_nearly_parallel_rows_is_exactly_zero():
    """Found by hypothesis (pair(1460, 2, 2, -1.5, 0.0)): 1 − cos of identical rows rounds to ~1e-16, which over a
    tiny within-modality spread made RMG 1e-11; the difference form ‖â − b̂‖²/4 is exactly 0."""
    img, _ = pair(1460, 2, 2, -1.5, 0.0)
    assert relative_modality_gap(img, img) == 0.0


def test_rmg_zero_over_zero_is_zero():
    same = np.tile([[1.0, 2.0, 3.0]], (5, 1))
    assert relative_modality_gap(same, same) == 0.0


def test_unequal_batch_sizes():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    ref = unit(img).mean(0) - unit(txt).mean(0)
    assert gap_norm(img, txt) == pytest.approx(np.linalg.norm(ref))
    with pytest.raises(ValueError, match="same n"):
        gap_l2i(img, txt)
    with pytest.raises(ValueError, match="same n"):
        relative_modality_gap(img, txt)
    with pytest.raises(ValueError, match="same dimension"):
        gap_norm(img, rng.normal(size=(7, 4)))
    with pytest.raises(ValueError, match="n >= 2"):
        relative_modality_gap(img[:1], txt[:1])


def test_torch_input_matches_numpy():
    img, txt = pair(1, 25, 6, offset=1.0)
    assert gap_norm(torch.from_numpy(img), txt) == pytest.approx(gap_norm(img, txt))
    assert relative_modality_gap(torch.from_numpy(img).float(), torch.from_numpy(txt)) \
        == pytest.approx(relative_modality_gap(img, txt), abs=1e-6)


def test_separability_distinguishes_gap_from_no_gap():
    img, txt = pair(2, 120, 8, offset=3.0, noise=0.3)
    assert modality_separability(img, txt) >= 0.95
    # same distribution for both modalities: chance level for balanced classes
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(120, 8)), rng.normal(size=(120, 8))
    assert modality_separability(a, b) <= 0.65
    # deterministic for a given seed
    assert modality_separability(a, b, seed=4) == modality_separability(a, b, seed=4)
    v = modality_separability(img, txt, folds=3)
    assert 0.0 <= v <= 1.0


def test_separability_small_n_reduces_folds_and_rejects_tiny():
    rng = np.random.default_rng(5)
    img = rng.normal(size=(3, 4)) + [4, 0, 0, 0]
    txt = rng.normal(size=(2, 4)) - [4, 0, 0, 0]
    assert modality_separability(img, txt, folds=10) == 1.0  # ran with 2 folds
    with pytest.raises(ValueError, match="at least 2 rows"):
        modality_separability(img, txt[:1])
    with pytest.raises(ValueError, match="folds"):
        modality_separability(img, txt, folds=1)
