"""Tests for mmdiag.metrics.shift (shift experiment, Liang et al. 2022, arXiv:2203.02053)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.special import log_softmax

from mmdiag.metrics.shift import (DEFAULT_LAMBDAS, LIANG_BATCH, recall_at_1, shift_batches, shift_curve,
                                  shift_embeddings, symmetric_infonce)

SETTINGS = settings(max_examples=30, deadline=None)



def unit(x):
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def ref_infonce(img, txt, tau):
    s = unit(img) @ unit(txt).T / tau
    i2t = -np.diag(log_softmax(s, axis=1)).mean()
    t2i = -np.diag(log_softmax(s, axis=0)).mean()
    return float((i2t + t2i) / 2)


def ref_recall(img, txt):
    s = unit(img) @ unit(txt).T
    idx = np.arange(len(s))
    return float((s.argmax(1) == idx).mean()), float((s.argmax(0) == idx).mean())


def pair(seed, n, d, offset=0.0, noise=0.5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    o = np.zeros(d); o[0] = offset
    return (z + noise * rng.normal(size=(n, d)) + o,
            z + noise * rng.normal(size=(n, d)) - o)


pairs = st.tuples(st.integers(0, 2**31), st.integers(2, 30), st.integers(2, 10),
                  st.floats(-2, 2), st.floats(0.0, 2.0))
taus = st.sampled_from([0.01, 0.05, 0.1, 1.0, 3.0])


@SETTINGS
@given(pairs, taus)
def test_infonce_against_scipy_log_softmax(p, tau):
    img, txt = pair(*p)
    assert symmetric_infonce(img, txt, tau) == pytest.approx(ref_infonce(img, txt, tau),
                                                             rel=1e-10, abs=1e-10)


def test_infonce_closed_form():
    n, tau = 5, 0.1
    eye = np.eye(n)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + n - 1))
    assert symmetric_infonce(eye, 2.0 * eye, tau) == pytest.approx(expected)
    # all rows identical: every pair equally likely -> log n
    same = np.ones((n, 3))
    assert symmetric_infonce(same, same, 0.07) == pytest.approx(math.log(n))


def test_infonce_is_symmetric_not_one_sided():
    img, txt = pair(7, 12, 4, offset=0.5, noise=1.0)
    tau = 0.1
    s = unit(img) @ unit(txt).T / tau
    i2t_only = -np.diag(log_softmax(s, axis=1)).mean()
    t2i_only = -np.diag(log_softmax(s, axis=0)).mean()
    assert abs(i2t_only - t2i_only) > 1e-3  # the two halves differ on this data
    assert symmetric_infonce(img, txt, tau) == pytest.approx((i2t_only + t2i_only) / 2)
    assert symmetric_infonce(txt, img, tau) == pytest.approx(symmetric_infonce(img, txt, tau))


@SETTINGS
@given(pairs)
def test_recall_against_numpy(p):
    img, txt = pair(*p)
    r = recall_at_1(img, txt)
    assert r == pytest.approx(ref_recall(img, txt), abs=1e-15)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in r)


def test_recall_closed_forms():
    eye = np.eye(4)
    assert recall_at_1(eye, eye) == (1.0, 1.0)
    assert recall_at_1(eye, eye[[1, 0, 2, 3]]) == (0.5, 0.5)


@SETTINGS
@given(pairs, st.integers(0, 2**31), taus)
def test_loss_and_recall_invariant_to_batch_permutation(p, seed2, tau):
    img, txt = pair(*p)
    perm = np.random.default_rng(seed2).permutation(len(img))
    assert symmetric_infonce(img[perm], txt[perm], tau) == pytest.approx(
        symmetric_infonce(img, txt, tau), rel=1e-10)
    assert recall_at_1(img[perm], txt[perm]) == pytest.approx(recall_at_1(img, txt))


def test_shift_embeddings_formula_and_meeting_point():
    img, txt = pair(3, 40, 6, offset=1.5)
    x0, y0 = shift_embeddings(img, txt, 0.0)
    np.testing.assert_allclose(x0.numpy(), unit(img), atol=1e-12)
    np.testing.assert_allclose(y0.numpy(), unit(txt), atol=1e-12)
    lam = 0.3
    delta = unit(img).mean(0) - unit(txt).mean(0)
    xs, ys = shift_embeddings(img, txt, lam)
    np.testing.assert_allclose(xs.numpy(), unit(unit(img) - lam * delta), atol=1e-12)
    np.testing.assert_allclose(ys.numpy(), unit(unit(txt) + lam * delta), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(xs.numpy(), axis=1), 1.0, atol=1e-12)
    # explicit delta is used as given
    d2 = np.linspace(-1, 1, 6)
    xs2, _ = shift_embeddings(img, txt, 0.5, delta=d2)
    np.testing.assert_allclose(xs2.numpy(), unit(unit(img) - 0.5 * d2), atol=1e-12)
    with pytest.raises(ValueError):
        shift_embeddings(img, txt, 0.5, delta=np.ones(5))
    # e1 vs e2: lambda = 0.5 sends both to (e1+e2)/sqrt 2 -> no gap left
    e1 = np.tile([1.0, 0.0, 0.0], (3, 1))
    e2 = np.tile([0.0, 1.0, 0.0], (3, 1))
    xs, ys = shift_embeddings(e1, e2, 0.5)
    np.testing.assert_allclose(xs.numpy(), ys.numpy(), atol=1e-15)


def test_shift_curve_structure():
    img, txt = pair(4, 30, 5, offset=1.0)
    c = shift_curve(img, txt, 0.1)
    assert set(c) >= {"lambda", "loss", "recall_i2t", "recall_t2i", "optimum", "loss_at_0"}
    assert len(c["lambda"]) == len(DEFAULT_LAMBDAS) == 41
    assert 0.0 in c["lambda"] and 0.5 in [round(v, 12) for v in c["lambda"]]
    for key in ("loss", "recall_i2t", "recall_t2i", "gap"):
        assert len(c[key]) == 41 and all(isinstance(v, float) for v in c[key])
    i0 = c["lambda"].index(0.0)
    assert c["loss"][i0] == pytest.approx(c["loss_at_0"], rel=1e-12)
    assert c["loss_at_0"] == pytest.approx(ref_infonce(img, txt, 0.1))
    assert c["gap"][i0] == pytest.approx(c["gap_norm"])
    assert c["loss"][c["lambda"].index(c["optimum"])] == min(c["loss"])
    # recall entries match a direct computation at one grid point
    lam = c["lambda"][30]
    xs, ys = shift_embeddings(img, txt, lam)
    assert (c["recall_i2t"][30], c["recall_t2i"][30]) == ref_recall(xs.numpy(), ys.numpy())
    # custom grid without 0 still reports the unshifted loss
    c2 = shift_curve(img, txt, 0.1, lambdas=[0.2, 0.4])
    assert c2["lambda"] == [0.2, 0.4] and c2["loss_at_0"] == pytest.approx(c["loss_at_0"])
    with pytest.raises(ValueError):
        shift_curve(img, txt, 0.0)
    with pytest.raises(ValueError):
        shift_curve(img, txt, 0.1, lambdas=[])


@SETTINGS
@given(pairs, taus)
def test_shift_curve_equals_direct_computation(p, tau):
    # the curve updates one cosine matrix in closed form; check it pointwise
    img, txt = pair(*p)
    lams = [-1.0, -0.35, 0.0, 0.5, 0.8]
    c = shift_curve(img, txt, tau, lambdas=lams)
    for i, lam in enumerate(lams):
        xs, ys = shift_embeddings(img, txt, lam)
        xs, ys = xs.numpy(), ys.numpy()
        assert c["loss"][i] == pytest.approx(ref_infonce(xs, ys, tau), rel=1e-9, abs=1e-9)
        assert (c["recall_i2t"][i], c["recall_t2i"][i]) == ref_recall(xs, ys)
        assert c["gap"][i] == pytest.approx(
            np.linalg.norm(xs.mean(0) - ys.mean(0)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.05, 0.1])
def test_shift_optimum_positive_for_offset_gap(seed, tau):
    # matched content + a constant offset between modalities: closing the gap helps
    img, txt = pair(seed, 150, 16, offset=2.0)
    c = shift_curve(img, txt, tau)
    assert c["gap_norm"] > 0.6
    assert c["optimum"] > 0.25
    assert c["optimum_gap"] < 0.5 * c["gap_norm"]
    assert min(c["loss"]) < 0.7 * c["loss_at_0"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.05, 0.1])
def test_shift_optimum_near_zero_without_gap(seed, tau):
    # no systematic offset: the gap is sampling noise and the best shift is ~0
    img, txt = pair(seed, 150, 16, offset=0.0)
    c = shift_curve(img, txt, tau)
    assert c["gap_norm"] < 0.1
    assert abs(c["optimum"]) * c["gap_norm"] < 0.1  # distance moved at the optimum
    assert min(c["loss"]) > 0.95 * c["loss_at_0"]   # the curve is essentially flat
    # exactly no gap (identical modalities): flat curve, optimum exactly 0
    c0 = shift_curve(img, img, tau)
    assert c0["gap_norm"] == 0.0 and c0["optimum"] == 0.0


# ----------------------------------------------------------------------------- batches (Liang et al.'s 50)
def test_shift_batches_closed_forms():
    assert LIANG_BATCH == 50
    np.testing.assert_array_equal(shift_batches(7, 0), [np.arange(7)])  # 0: all pairs, in order
    np.testing.assert_array_equal(shift_batches(7, 7, seed=3), [np.arange(7)])
    np.testing.assert_array_equal(shift_batches(7, 50, seed=3), [np.arange(7)])  # fewer pairs than a batch
    rows = shift_batches(10, 3, seed=5)
    assert rows.shape == (3, 3) and rows.dtype == np.int64
    order = np.random.default_rng(5).permutation(10)
    np.testing.assert_array_equal(rows.ravel(), order[:9])  # consecutive batches of the seeded shuffle
    for bad in (1, -1):
        with pytest.raises(ValueError, match="batch_size"):
            shift_batches(10, bad)
    with pytest.raises(ValueError):
        shift_batches(0, 5)


@SETTINGS
@given(st.integers(1, 400), st.integers(0, 120).filter(lambda b: b != 1), st.integers(0, 2**32 - 1))
def test_shift_batches_partition_the_scored_pairs(n, batch, seed):
    rows = shift_batches(n, batch, seed)
    k, b = rows.shape
    if batch == 0 or batch >= n:
        assert (k, b) == (1, n)
    else:
        assert (k, b) == (n // batch, batch)  # full batches only: n mod batch pairs left out
    flat = rows.ravel()
    assert len(set(flat.tolist())) == flat.size and flat.min() >= 0 and flat.max() < n
    np.testing.assert_array_equal(shift_batches(n, batch, seed), rows)  # deterministic in the seed


def ref_batched_curve(img, txt, tau, lams, batch, seed):
    """Direct loop: shift all pairs, then score each batch with the full-matrix references and average."""
    out = []
    for lam in lams:
        xs, ys = (t.numpy() for t in shift_embeddings(img, txt, lam))
        per_batch = [(ref_infonce(xs[r], ys[r], tau), *ref_recall(xs[r], ys[r]))
                     for r in shift_batches(len(img), batch, seed)]
        out.append(np.mean(per_batch, axis=0))
    return np.array(out)


@SETTINGS
@given(st.integers(0, 2**31), st.integers(2, 60), st.integers(2, 8), st.floats(-2, 2),
       st.integers(2, 25), st.integers(0, 2**32 - 1), taus)
def test_batched_curve_equals_a_loop_over_batches(data_seed, n, d, offset, batch, seed, tau):
    img, txt = pair(data_seed, n, d, offset)
    lams = [-1.0, -0.3, 0.0, 0.45, 1.0]
    c = shift_curve(img, txt, tau, lambdas=lams, batch_size=batch, seed=seed)
    ref = ref_batched_curve(img, txt, tau, lams, batch, seed)
    np.testing.assert_allclose(c["loss"], ref[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(c["recall_i2t"], ref[:, 1], atol=1e-12)
    np.testing.assert_allclose(c["recall_t2i"], ref[:, 2], atol=1e-12)
    assert c["loss_at_0"] == pytest.approx(ref[2, 0], rel=1e-9, abs=1e-9)
    rows = shift_batches(n, batch, seed)
    assert (c["batches"], c["batch_size"], c["pairs_left_out"]) == (rows.shape[0], rows.shape[1], n - rows.size)
    # the gap after the shift is the centroid distance of all pairs, batched or not
    np.testing.assert_allclose(c["gap"], shift_curve(img, txt, tau, lambdas=lams)["gap"], atol=1e-12)


def test_batch_of_all_pairs_is_the_unbatched_loss():
    img, txt = pair(2, 40, 5, offset=1.0)
    full = shift_curve(img, txt, 0.1)
    for batch in (0, 40, 50):
        c = shift_curve(img, txt, 0.1, batch_size=batch, seed=9)
        assert (c["batches"], c["batch_size"], c["pairs_left_out"]) == (1, 40, 0)
        np.testing.assert_allclose(c["loss"], full["loss"], rtol=1e-12)
    assert full["loss_at_0"] == pytest.approx(symmetric_infonce(img, txt, 0.1), rel=1e-12)


def test_batched_loss_does_not_grow_with_n():
    # the contrastive loss of one batch grows like log(batch size): scored all at once, the loss (and so the
    # curve) depends on n; in batches of 50 it does not (Liang et al. average 100 batches of 50)
    img, txt = pair(11, 2000, 16, offset=1.0, noise=1.0)
    small, large = (shift_curve(img[:n], txt[:n], 0.1, lambdas=[0.0]) for n in (200, 2000))
    assert large["loss_at_0"] - small["loss_at_0"] > 1.0  # about log(10)
    small_b, large_b = (shift_curve(img[:n], txt[:n], 0.1, lambdas=[0.0], batch_size=50) for n in (200, 2000))
    assert abs(large_b["loss_at_0"] - small_b["loss_at_0"]) < 0.15
    assert large_b["batches"] == 40 and small_b["batches"] == 4


def test_optimum_at_the_grid_edge_is_flagged():
    img, txt = pair(0, 150, 16, offset=2.0)
    c = shift_curve(img, txt, 0.05, lambdas=np.linspace(-1.0, 0.2, 25), batch_size=50)
    assert c["optimum"] == pytest.approx(0.2) and c["at_grid_edge"] is True  # the loss falls on beyond 0.2
    c = shift_curve(img, txt, 0.05, batch_size=50)  # default grid: the optimum lies inside
    assert 0.25 < c["optimum"] < 1.0 and c["at_grid_edge"] is False
    assert shift_curve(img, txt, 0.05, lambdas=[0.3])["at_grid_edge"] is False  # a single λ has no edge
    flat = shift_curve(img, img, 0.05, lambdas=[-1.0, 0.0, 1.0])
    assert flat["optimum"] == 0.0 and flat["at_grid_edge"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_shift_curve_on_gpu():
    img, txt = pair(0, 200, 16, offset=2.0)
    cpu = shift_curve(img, txt, 0.05)
    gpu = shift_curve(torch.from_numpy(img).cuda(), torch.from_numpy(txt).cuda(), 0.05)
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-4)
    assert gpu["optimum"] == cpu["optimum"]
    cpu_b = shift_curve(img, txt, 0.05, batch_size=50, seed=1)
    gpu_b = shift_curve(torch.from_numpy(img).cuda(), torch.from_numpy(txt).cuda(), 0.05, batch_size=50, seed=1)
    np.testing.assert_allclose(gpu_b["loss"], cpu_b["loss"], rtol=1e-4)


captions_per_image = st.lists(st.integers(1, 5), min_size=1, max_size=40)


@SETTINGS
@given(captions_per_image, st.integers(0, 60).filter(lambda b: b != 1), st.integers(0, 2**32 - 1))
def test_grouped_batches_never_hold_two_captions_of_one_image(per, batch, seed):
    m = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(per)), per))  # captions in any order
    rows = shift_batches(len(m), batch, seed, text_to_image=m)
    flat = rows.ravel()
    assert len(set(flat.tolist())) == flat.size  # no row twice
    for batch_rows in rows:
        assert len(set(m[batch_rows].tolist())) == len(batch_rows)  # no image twice in a batch
    if batch >= 2 and any(sum(1 for c in per if c > r) >= batch for r in range(max(per))):
        assert rows.shape[1] == batch  # full batches whenever some round fills one
        # every round scores all its full batches: only remainders are left out
        rounds = [sum(1 for c in per if c > r) for r in range(max(per))]
        assert rows.shape[0] == sum(r // batch for r in rounds)
    else:
        assert rows.shape[0] == 1 and sorted(m[rows[0]].tolist()) == list(range(len(per)))  # each image once


@SETTINGS
@given(st.integers(1, 200), st.integers(0, 60).filter(lambda b: b != 1), st.integers(0, 2**32 - 1))
def test_one_caption_per_image_is_the_plain_batching(n, batch, seed):
    np.testing.assert_array_equal(shift_batches(n, batch, seed, text_to_image=np.arange(n)),
                                  shift_batches(n, batch, seed))


def test_grouped_curve_scores_no_sibling_as_a_negative():
    """Five captions per image: the grouped curve equals the loop over batches of distinct images, and Δ counts
    each image once; the ungrouped curve (siblings as negatives) scores a higher loss at λ = 0."""
    rng = np.random.default_rng(0)
    n_img, per, d, tau = 40, 5, 6, 0.05
    base = rng.normal(size=(n_img, d))
    m = np.repeat(np.arange(n_img), per)
    img = base[m]  # each caption's own image row
    txt = base[m] + 0.3 * rng.normal(size=(len(m), d))
    lams = [-0.5, 0.0, 0.5]
    c = shift_curve(img, txt, tau, lambdas=lams, batch_size=10, seed=3, text_to_image=m)
    rows = shift_batches(len(m), 10, 3, text_to_image=m)
    assert (c["batches"], c["batch_size"], c["pairs_left_out"]) == (20, 10, 0)
    delta = unit(base).mean(0) - unit(txt).mean(0)  # each image once
    assert c["gap_norm"] == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    for k, lam in enumerate(lams):
        x = unit(unit(img) - lam * delta)
        y = unit(unit(txt) + lam * delta)
        assert c["loss"][k] == pytest.approx(np.mean([ref_infonce(x[r], y[r], tau) for r in rows]), rel=1e-9)
        assert c["gap"][k] == pytest.approx(np.linalg.norm(x[:n_img * per:per].mean(0) - y.mean(0)), rel=1e-9)
    plain = shift_curve(img, txt, tau, lambdas=[0.0], batch_size=10, seed=3)
    assert plain["loss"][0] > c["loss"][1]
