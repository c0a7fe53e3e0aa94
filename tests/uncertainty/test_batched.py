"""Every batched statistic against the plain metric of mmdiag.metrics on the resampled rows x[idx[k]], for every k."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdiag.metrics.cone import mean_pairwise_cosine
from mmdiag.metrics.gap import gap_l2i, gap_norm, modality_separability
from mmdiag.metrics.geometry import alignment, linear_cka, mutual_knn, rankme, uniformity
from mmdiag.metrics.isotropy import isotropy
from mmdiag.uncertainty.batched import (NOT_RESAMPLED, batched_alignment, batched_cone, batched_gap_l2i,
                                        batched_gap_norm, batched_uniformity, no_interval, per_resample)
from mmdiag.uncertainty.batched_spectral import batched_isotropy, batched_linear_cka, batched_rankme
from mmdiag.uncertainty.bootstrap import bootstrap, resample_indices


def _data(n: int, d: int, seed: int = 0, offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, d)) + offset
    txt = img @ rng.normal(size=(d, d)) * 0.3 + rng.normal(size=(n, d)) - offset
    return img, txt


def _brute(fn, idx: torch.Tensor, *arrays: np.ndarray) -> np.ndarray:
    return np.array([fn(*(a[row] for a in arrays)) for row in idx.numpy()])


def _with_duplicates_and_zero(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[3] = x[1]          # an exact duplicate row in the data
    x[5] = 0.0           # a zero row: no direction
    return x


ONE_SET = [
    ("cone", batched_cone, mean_pairwise_cosine, {}),
    ("uniformity", batched_uniformity, uniformity, {}),
    ("uniformity_t5", lambda x: batched_uniformity(x, t=5), lambda x: uniformity(x, t=5), {}),
    ("rankme", batched_rankme, rankme, {}),
    ("isotropy", batched_isotropy, isotropy, {}),
    ("isotropy_raw", lambda x: batched_isotropy(x, normalize=False), lambda x: isotropy(x, normalize=False), {}),
]
PAIRED = [
    ("gap_norm", batched_gap_norm, gap_norm),
    ("gap_l2i", batched_gap_l2i, gap_l2i),
    ("alignment", batched_alignment, alignment),
    ("alignment_a1", lambda a, b: batched_alignment(a, b, alpha=1), lambda a, b: alignment(a, b, alpha=1)),
    ("linear_cka", batched_linear_cka, linear_cka),
]


@pytest.mark.parametrize("n,d", [(24, 6), (12, 20)])
@pytest.mark.parametrize("name,make,plain,_", ONE_SET, ids=[s[0] for s in ONE_SET])
def test_one_set_statistics_match_the_plain_metric_on_every_resample(name, make, plain, _, n, d):
    x = _with_duplicates_and_zero(_data(n, d)[0])
    idx = resample_indices(n, 40, seed=3)
    got = make(x)(idx).numpy()
    np.testing.assert_allclose(got, _brute(plain, idx, x), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n,d", [(24, 6), (12, 20)])
@pytest.mark.parametrize("name,make,plain", PAIRED, ids=[s[0] for s in PAIRED])
def test_paired_statistics_resample_both_modalities_with_the_same_indices(name, make, plain, n, d):
    img, txt = _data(n, d)
    img = _with_duplicates_and_zero(img)
    idx = resample_indices(n, 40, seed=4)
    got = make(img, txt)(idx).numpy()
    np.testing.assert_allclose(got, _brute(plain, idx, img, txt), rtol=1e-9, atol=1e-10)


def test_a_resample_of_one_repeated_row_matches_the_plain_degenerate_values():
    img, txt = _data(10, 4)
    idx = torch.full((1, 10), 2, dtype=torch.int64)
    assert float(batched_cone(img)(idx)[0]) == pytest.approx(mean_pairwise_cosine(img[[2] * 10]))  # = 1
    assert float(batched_uniformity(img)(idx)[0]) == pytest.approx(uniformity(img[[2] * 10]), abs=1e-12)  # = 0
    assert float(batched_linear_cka(img, txt)(idx)[0]) == linear_cka(img[[2] * 10], txt[[2] * 10]) == 0.0
    assert float(batched_rankme(img)(idx)[0]) == pytest.approx(rankme(img[[2] * 10]), rel=1e-6)


def test_duplicates_count_as_in_the_plain_function():
    """A duplicated row's cosine with its copy (1) counts, exactly as the plain cone on x[idx]."""
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    idx = torch.tensor([[0, 0, 1]])
    # ordered pairs: (0,0') twice with cos 1, (0,1) four times with cos 0 -> 2/6
    assert float(batched_cone(x)(idx)[0]) == pytest.approx(1 / 3)
    assert mean_pairwise_cosine(x[[0, 0, 1]]) == pytest.approx(1 / 3)


def test_leave_one_out_rows_work_for_the_jackknife():
    x = _data(15, 5)[0]
    left_out = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, 15)]) for i in range(15)])
    for make, plain in [(batched_cone, mean_pairwise_cosine), (batched_uniformity, uniformity),
                        (batched_isotropy, isotropy)]:
        np.testing.assert_allclose(make(x)(left_out).numpy(), _brute(plain, left_out, x), rtol=1e-9)


def test_per_resample_loops_over_the_plain_metric():
    img, txt = _data(20, 5)
    idx = resample_indices(20, 6, seed=0)
    stat = per_resample(lambda a, b: mutual_knn(a, b, k=3), img, torch.from_numpy(txt), name="mutual_knn")
    np.testing.assert_allclose(stat(idx).numpy(), _brute(lambda a, b: mutual_knn(a, b, k=3), idx, img, txt))
    assert stat.name == "mutual_knn"
    lists = per_resample(lambda s: float(np.mean([len(w) for w in s])), [["a"], ["b", "c"], ["d", "e", "f"]])
    assert lists(torch.tensor([[0, 0, 2]])).tolist() == [pytest.approx(5 / 3)]


def test_per_resample_turns_a_failing_resample_into_nan():
    stat = per_resample(lambda v: mutual_knn(v, v, k=2), np.arange(12.0).reshape(4, 3))
    assert torch.isnan(stat(torch.tensor([[0, 1, 2, 3]]))).tolist() == [False]
    with pytest.raises(ValueError):
        per_resample(lambda a, b: 0.0, np.zeros(3), np.zeros(4))


def test_separability_is_not_resampled():
    assert "modality_separability" in NOT_RESAMPLED
    ci = no_interval()
    assert ci.method == "none" and not ci.defined and ci.to_json()["low"] is None
    img, txt = _data(10, 3)
    assert 0.0 <= modality_separability(img, txt) <= 1.0  # the metric itself is fine, its bootstrap is not


def test_bootstrap_of_a_batched_statistic_agrees_with_the_per_resample_loop():
    img, txt = _data(30, 4)
    fast = bootstrap(batched_gap_norm(img, txt), 30, 64, seed=9)
    slow = bootstrap(per_resample(gap_norm, img, txt), 30, 64, seed=9)
    assert fast.low == pytest.approx(slow.low, rel=1e-12) and fast.high == pytest.approx(slow.high, rel=1e-12)
    assert fast.se == pytest.approx(slow.se, rel=1e-9)


def test_paired_statistics_need_pairs():
    img, txt = _data(10, 3)
    for make in (batched_gap_norm, batched_gap_l2i, batched_alignment, batched_linear_cka):
        with pytest.raises(ValueError):
            make(img, txt[:9])
    with pytest.raises(ValueError):
        batched_uniformity(img[:1])
