"""Linear-time forms of the quadratic geometry/gap metrics: mutual k-NN on blocks, separability on a subsample."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.metrics.gap import modality_separability, separability_subsample
from mmdiag.metrics.geometry import mutual_knn, mutual_knn_blocks, uniformity, uniformity_blocks


def pairs(n, d=8, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x + noise * torch.randn(n, d, generator=g)


def test_one_block_is_the_exact_value():
    x, y = pairs(60)
    found = mutual_knn_blocks(x, y, k=5, block_rows=100)
    assert found["value"] == mutual_knn(x, y, k=5) and found["blocks"] == 1 and found["se"] is None


def test_blocks_are_the_mean_over_a_seeded_partition():
    x, y = pairs(250, seed=1)
    found = mutual_knn_blocks(x, y, k=5, block_rows=60, seed=7)
    order = np.random.default_rng(7).permutation(250)
    parts = np.array_split(order, 4)  # 250 // 60 = 4 blocks of 62-63 rows
    expected = [mutual_knn(x[p], y[p], k=5) for p in parts]
    assert found["blocks"] == 4 and found["block_rows"] == 62
    assert found["value"] == pytest.approx(np.mean(expected))
    assert found["se"] == pytest.approx(np.std(expected, ddof=1) / 2)
    assert found["low"] < found["value"] < found["high"]


@settings(max_examples=20, deadline=None)
@given(n=st.integers(30, 200), block=st.integers(12, 80), seed=st.integers(0, 50))
def test_blocks_stay_in_the_unit_interval_and_identical_spaces_score_one(n, block, seed):
    x, y = pairs(n, seed=seed)
    found = mutual_knn_blocks(x, y, k=3, block_rows=block, seed=seed)
    assert 0.0 <= found["value"] <= 1.0
    assert found["blocks"] == max(1, n // block)
    assert mutual_knn_blocks(x, x.clone(), k=3, block_rows=block, seed=seed)["value"] == pytest.approx(1.0)


def test_blocks_refuse_blocks_not_larger_than_k():
    x, y = pairs(50)
    with pytest.raises(ValueError, match="block_rows > k"):
        mutual_knn_blocks(x, y, k=10, block_rows=10)


def test_separability_subsample_is_exact_when_small_and_bounded_when_large():
    x, y = pairs(80, seed=2, noise=1.0)
    small = separability_subsample(x, y + 0.5, max_rows=100, seed=3)
    assert small["value"] == modality_separability(x, y + 0.5, seed=3)
    assert (small["rows_image"], small["of_image"]) == (80, 80)
    big = separability_subsample(x, y + 0.5, max_rows=30, seed=3)
    assert big["rows_image"] == big["rows_text"] == 30 and big["of_text"] == 80
    assert 0.0 <= big["low"] <= big["value"] <= big["high"] <= 1.0


def test_wilson_interval_matches_its_formula():
    x, y = pairs(40, seed=4)
    found = separability_subsample(x, y + 3.0, max_rows=40)
    p, m, z = found["value"], 80, 1.959963984540054
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    assert (found["low"], found["high"]) == pytest.approx((centre - half, centre + half))


def test_uniformity_blocks_average_the_blocks_pair_means():
    """value = log of the mean over the seeded blocks of each block's mean exp(-t d²), the closed form."""
    x, _ = pairs(250, seed=4)
    found = uniformity_blocks(x, t=2, block_rows=60, seed=7)
    parts = np.array_split(np.random.default_rng(7).permutation(250), 5)  # ceil(250 / 60) = 5 blocks of 50
    means = np.array([math.exp(uniformity(x[p], t=2)) for p in parts])
    assert found["blocks"] == 5 and found["block_rows"] == 50
    assert found["value"] == pytest.approx(math.log(means.mean()), rel=1e-12)
    assert found["se"] == pytest.approx(np.std(means, ddof=1) / math.sqrt(5) / means.mean(), rel=1e-9)
    assert found["low"] < found["value"] < found["high"] <= 0.0
    whole = uniformity_blocks(x, t=2, block_rows=300)
    assert whole["value"] == uniformity(x, t=2) and whole["blocks"] == 1 and whole["se"] is None


def test_uniformity_blocks_estimate_the_all_pairs_value():
    """Each block's pair mean is unbiased for the all-pairs mean: on 2,000 rows, 8 blocks land within their
    interval of the exact value (seeded: the interval is 95%, this data and seed are one fixed draw)."""
    x, _ = pairs(2000, d=6, seed=5)
    exact = uniformity(x, t=2)
    found = uniformity_blocks(x, t=2, block_rows=250, seed=0)
    assert found["low"] <= exact <= found["high"]
    assert abs(found["value"] - exact) < 0.02


@settings(max_examples=20, deadline=None)
@given(n=st.integers(30, 200), block=st.integers(2, 80), seed=st.integers(0, 50), t=st.sampled_from([0.5, 2.0, 5.0]))
def test_uniformity_blocks_stay_in_range(n, block, seed, t):
    x, _ = pairs(n, seed=seed)
    found = uniformity_blocks(x, t=t, block_rows=block, seed=seed)
    assert -4 * t - 1e-9 <= found["value"] <= 0.0
    assert found["blocks"] == min(math.ceil(n / block), n // 2) and 2 <= found["block_rows"] <= block
    if found["blocks"] > 1:
        assert -4 * t - 1e-9 <= found["low"] <= found["value"] <= found["high"] <= 0.0
