"""The generic bootstrap: scipy references, invariants (hypothesis) and a coverage calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mmdiag.uncertainty.batched import batched_cone
from mmdiag.uncertainty.bootstrap import (ROW_BLOCK, BatchedStatistic, bootstrap, bootstrap_replicates,
                                          chunk_size, interval_from_replicates, jackknife_replicates,
                                          resample_counts, resample_indices)
from mmdiag.uncertainty.interval import Interval


def _mean_of(x: np.ndarray):
    t = torch.as_tensor(x, dtype=torch.float64)
    return lambda idx: t[idx].mean(dim=1)


def test_resample_indices_are_seeded_and_independent_of_slicing():
    a = resample_indices(17, 150, seed=5)
    assert a.shape == (150, 17) and a.dtype == torch.int64
    assert torch.equal(a, resample_indices(17, 150, seed=5))
    assert not torch.equal(a, resample_indices(17, 150, seed=6))
    assert torch.equal(a[ROW_BLOCK - 3:ROW_BLOCK + 40], resample_indices(17, 43, seed=5, start=ROW_BLOCK - 3))
    assert resample_indices(4, 0, seed=0).shape == (0, 4)
    for bad in [dict(n=0, boot=1, seed=0), dict(n=3, boot=-1, seed=0), dict(n=3, boot=1, seed=-1)]:
        with pytest.raises(ValueError):
            resample_indices(**bad)


def test_resample_indices_are_uniform():
    idx = resample_indices(10, 2000, seed=0)
    counts = torch.bincount(idx.reshape(-1), minlength=10).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_chunking_does_not_change_the_result():
    x = np.random.default_rng(0).normal(size=(50, 3))
    stat = batched_cone(x)
    whole = bootstrap_replicates(stat, 50, 300, seed=2, chunk=300)
    for chunk in (1, 7, 64, 100):
        assert torch.allclose(bootstrap_replicates(stat, 50, 300, seed=2, chunk=chunk), whole, rtol=1e-13)
    assert chunk_size(stat, 50, 300, memory_budget=stat.bytes_per_resample * 10) == 10
    assert chunk_size(lambda idx: idx, 50, 300, memory_budget=1) == 1


@pytest.mark.parametrize("statistic", [np.mean, np.std, np.median])
def test_percentile_interval_matches_scipy(statistic):
    """Same data, many resamples: our percentile interval and scipy's agree up to Monte-Carlo error."""
    x = np.random.default_rng(1).gamma(2.0, size=40)
    t = torch.as_tensor(x)
    batched = {np.mean: lambda idx: t[idx].mean(dim=1), np.std: lambda idx: t[idx].std(dim=1, unbiased=False),
               np.median: lambda idx: torch.quantile(t[idx], 0.5, dim=1)}[statistic]
    ours = bootstrap(batched, 40, 20000, seed=0)
    ref = stats.bootstrap((x,), statistic, n_resamples=20000, method="percentile", random_state=0)
    scale = ref.standard_error
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.1 * scale)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.1 * scale)
    assert ours.se == pytest.approx(scale, rel=0.05)


def test_bca_matches_scipy_on_a_skewed_statistic():
    x = np.random.default_rng(2).exponential(size=30)
    t = torch.as_tensor(x)
    var = lambda idx: t[idx].var(dim=1, unbiased=False)
    ours = bootstrap(var, 30, 20000, seed=1, method="bca")
    ref = stats.bootstrap((x,), lambda a, axis=-1: np.var(a, axis=axis), n_resamples=20000, method="BCa",
                          random_state=1)
    scale = ref.standard_error
    assert ours.method == "bootstrap-bca"
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.1 * scale)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.1 * scale)
    pct = bootstrap(var, 30, 20000, seed=1)
    assert ours.low > pct.low  # BCa moves a right-skewed variance's interval up


def test_jackknife_leaves_each_sample_out_once():
    x = np.arange(6.0)
    jack = jackknife_replicates(_mean_of(x), 6)
    np.testing.assert_allclose(jack.numpy(), [(15 - i) / 5 for i in range(6)])
    with pytest.raises(ValueError):
        jackknife_replicates(_mean_of(x), 1)


def test_bca_falls_back_to_percentile_when_the_estimate_is_outside_all_replicates():
    reps = torch.linspace(1, 2, 50, dtype=torch.float64)
    ci = interval_from_replicates(reps, method="bca", value=5.0, jackknife=torch.zeros(5))
    assert ci.method == "bootstrap-percentile"
    with pytest.raises(ValueError):
        interval_from_replicates(reps, method="bca")
    with pytest.raises(ValueError):
        interval_from_replicates(reps, method="studentized")


def test_non_finite_replicates_are_dropped():
    reps = torch.tensor([1.0, float("nan"), 2.0, float("inf"), 3.0], dtype=torch.float64)
    ci = interval_from_replicates(reps)
    assert ci.resamples == 3 and ci.se == pytest.approx(1.0)
    one = interval_from_replicates(torch.tensor([1.0, float("nan")]))
    assert one.resamples == 1 and not one.defined and one.to_json()["low"] is None


def test_boot_zero_and_bad_arguments():
    f = _mean_of(np.arange(4.0))
    assert bootstrap(f, 4, 0, seed=0) is None
    for bad in [dict(boot=-1), dict(level=1.0), dict(method="basic")]:
        with pytest.raises(ValueError):
            bootstrap(f, 4, **{"boot": 10, "seed": 0, **bad})
    with pytest.raises(ValueError):
        bootstrap(lambda idx: torch.zeros(1), 4, 10, seed=0, chunk=5)  # wrong number of values


def test_batched_statistic_moves_indices_to_its_device_and_has_a_point_value():
    x = np.random.default_rng(0).normal(size=(10, 3))
    stat = batched_cone(x)
    assert isinstance(stat, BatchedStatistic) and stat.device.type == "cpu"
    from mmdiag.metrics.cone import mean_pairwise_cosine
    assert stat.point() == pytest.approx(mean_pairwise_cosine(x))
    assert resample_counts(torch.tensor([[1, 1, 1]]), 2).tolist() == [[0.0, 3.0]]


# ----------------------------------------------------------------- invariants (hypothesis)

samples = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=30)


@settings(max_examples=40, deadline=None)
@given(samples, st.integers(0, 2**31), st.integers(2, 80), st.floats(0.5, 0.99))
def test_interval_invariants(values, seed, boot, level):
    x = np.asarray(values)
    f = _mean_of(x)
    ci = bootstrap(f, x.size, boot, seed, level=level)
    assert ci == bootstrap(f, x.size, boot, seed, level=level)        # determinism under the seed
    assert ci.low <= ci.high and ci.se >= 0 and ci.level == level
    assert x.min() - 1e-9 <= ci.low and ci.high <= x.max() + 1e-9      # the percentile respects the range
    assert ci.resamples == boot


@settings(max_examples=25, deadline=None)
@given(samples, st.integers(0, 2**31), st.randoms(use_true_random=False))
def test_permuting_the_samples_permutes_nothing_but_the_labels(values, seed, rnd):
    """Statistic(x[π], idx) == statistic(x, π[idx]): a permutation of the samples only relabels them, and
    π[idx] has the same distribution as idx, so the bootstrap distribution is the same."""
    x = np.asarray(values)
    perm = np.arange(x.size)
    rnd.shuffle(perm)
    idx = resample_indices(x.size, 20, seed)
    a = _mean_of(x[perm])(idx)
    b = _mean_of(x)(torch.from_numpy(perm)[idx])
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-9)


def test_permuted_data_give_the_same_interval_in_distribution():
    x = np.random.default_rng(3).normal(size=(60, 4)) + 0.3
    perm = np.random.default_rng(4).permutation(60)
    a = bootstrap(batched_cone(x), 60, 4000, seed=0)
    b = bootstrap(batched_cone(x[perm]), 60, 4000, seed=0)
    assert a.low == pytest.approx(b.low, abs=0.1 * a.se) and a.high == pytest.approx(b.high, abs=0.1 * a.se)
    assert a.se == pytest.approx(b.se, rel=0.06)


# ----------------------------------------------------------------- calibration

def test_percentile_interval_of_the_mean_covers_the_truth_about_95_percent_of_the_time():
    """200 datasets of n = 50 from N(1, 2²): the 95% percentile interval of the mean (B = 1000) covers 1.

    The percentile interval of a mean is slightly narrow at n = 50 (its coverage is about 0.94);
    a binomial(200, 0.94) lands in [0.90, 0.98] with probability > 0.99."""
    rng = np.random.default_rng(12345)
    hits = 0
    for k in range(200):
        x = rng.normal(1.0, 2.0, size=50)
        ci = bootstrap(_mean_of(x), 50, 1000, seed=k)
        hits += ci.contains(1.0)
    assert 0.90 <= hits / 200 <= 0.98


def test_interval_object():
    ci = Interval(1.0, 2.0, 0.3, level=0.9, method="bootstrap-percentile", resamples=10)
    assert ci.to_json() == {"low": 1.0, "high": 2.0, "level": 0.9, "method": "bootstrap-percentile"}
    assert ci.width == 1.0 and ci.contains(2.0) and not ci.contains(float("nan")) and ci.excludes(2.5)
    assert not Interval(1.0, float("inf"), 0.1).defined
    assert Interval(1.0, float("inf"), 0.1).to_json()["high"] is None
    for bad in [dict(low=2.0, high=1.0, se=0.1), dict(low=0.0, high=1.0, se=-1.0),
                dict(low=0.0, high=1.0, se=0.1, level=1.5)]:
        with pytest.raises(ValueError):
            Interval(**bad)
