"""Probe-score bootstraps over sentences against the plain metrics on the resampled sentence lists."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmdiag.metrics.probe_recovery import root_accuracy, uuas
from mmdiag.metrics.probe_scores import dspr, nspr, nspr_details
from mmdiag.metrics.probe_trees import tree_depths, tree_distances
from mmdiag.uncertainty.bootstrap import resample_indices
from mmdiag.uncertainty.grouped import (bootstrap_grouped, bootstrap_ratio, dspr_items, grouped_statistic,
                                        nspr_items, ratio_statistic, root_accuracy_items, uuas_items)


def _heads(rng: np.random.Generator, n: int) -> list[int]:
    """A random tree: word i > 0 of a random order hangs under an earlier word; one root."""
    order = rng.permutation(n)
    heads = [0] * n
    for pos in range(1, n):
        heads[order[pos]] = int(order[rng.integers(0, pos)]) + 1
    return heads


def _corpus(lengths, seed=0):
    rng = np.random.default_rng(seed)
    heads = [_heads(rng, n) for n in lengths]
    depth = [tree_depths(h) + rng.normal(scale=1.0, size=len(h)) for h in heads]
    dist = []
    for h in heads:
        z = rng.normal(size=(len(h), 4))
        noisy = tree_distances(h) + ((z[:, None] - z[None]) ** 2).sum(-1) * 0.3
        dist.append((noisy + noisy.T) / 2)
    upos = [["PUNCT" if rng.random() < 0.15 and h[i] != 0 else "NOUN" for i in range(len(h))] for h in heads]
    # punctuation must be a leaf for the denominator convention; keep only leaves tagged PUNCT
    for h, u in zip(heads, upos):
        for i in range(len(h)):
            if (i + 1) in h:
                u[i] = "NOUN"
    return heads, depth, dist, upos


LENGTHS = [1, 3, 4, 6, 6, 7, 9, 12, 12, 12, 15, 20, 55, 2, 5]


def _take(seq, row):
    return [seq[i] for i in row]


def test_nspr_and_dspr_resamples_match_the_plain_metric():
    heads, depth, dist, _ = _corpus(LENGTHS)
    gold_d = [tree_depths(h) for h in heads]
    gold_t = [tree_distances(h) for h in heads]
    idx = resample_indices(len(heads), 60, seed=1).numpy()
    items = nspr_items(depth, gold_d)
    got = grouped_statistic(items.values, items.groups)(torch.from_numpy(idx)).numpy()
    want = [nspr(_take(depth, r), _take(gold_d, r)) for r in idx]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    items = dspr_items(dist, gold_t)
    got = grouped_statistic(items.values, items.groups)(torch.from_numpy(idx)).numpy()
    want = [dspr(_take(dist, r), _take(gold_t, r)) for r in idx]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_the_fallback_to_all_lengths_is_recomputed_per_resample():
    """Captions shorter than 5 words: no length in range, so every length present counts."""
    lengths = [2, 3, 3, 4, 4, 4, 6]
    heads, depth, _, _ = _corpus(lengths, seed=5)
    gold = [tree_depths(h) for h in heads]
    items = nspr_items(depth, gold)
    stat = grouped_statistic(items.values, items.groups)
    idx = resample_indices(len(lengths), 80, seed=2)
    want = np.array([nspr(_take(depth, r), _take(gold, r)) for r in idx.numpy()])
    np.testing.assert_allclose(stat(idx).numpy(), want, rtol=1e-12, equal_nan=True)
    fell_back = [nspr_details(_take(depth, r), _take(gold, r))["fallback"] for r in idx.numpy()]
    assert any(fell_back) and not all(fell_back)   # both branches exercised
    assert stat.point() == pytest.approx(nspr(depth, gold))


def test_skipped_sentences_are_drawn_but_count_nowhere():
    stat = grouped_statistic([math.nan, 0.5, 0.7], [6, 6, 8])
    assert torch.isnan(stat(torch.tensor([[0, 0, 0]])))[0]
    assert float(stat(torch.tensor([[0, 1, 2]]))[0]) == pytest.approx(0.6)


def test_uuas_and_root_accuracy_pool_over_the_resampled_sentences():
    heads, depth, dist, upos = _corpus(LENGTHS, seed=3)
    idx = resample_indices(len(heads), 40, seed=3)
    items = uuas_items(dist, heads, upos)
    assert items.values.sum() / items.totals.sum() == pytest.approx(uuas(dist, heads, upos))
    got = ratio_statistic(items.values, items.totals)(idx).numpy()
    want = [uuas(_take(dist, r), _take(heads, r), _take(upos, r)) for r in idx.numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    items = root_accuracy_items(depth, heads, upos)
    got = ratio_statistic(items.values, items.totals)(idx).numpy()
    want = [root_accuracy(_take(depth, r), _take(heads, r), _take(upos, r)) for r in idx.numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_grouped_and_ratio_intervals():
    heads, depth, dist, upos = _corpus(LENGTHS * 3, seed=4)
    items = nspr_items(depth, [tree_depths(h) for h in heads])
    ci = bootstrap_grouped(items.values, items.groups, boot=300, seed=0)
    assert ci.low <= ci.high and ci.se > 0 and ci.resamples == 300
    assert bootstrap_grouped(items.values, items.groups, boot=0, seed=0) is None
    u = uuas_items(dist, heads, upos)
    ci = bootstrap_ratio(u.values, u.totals, boot=300, seed=0)
    assert 0.0 <= ci.low <= ci.high <= 1.0
    assert bootstrap_ratio([1, 2], [2, 2], boot=0, seed=0) is None


def test_bad_inputs():
    with pytest.raises(ValueError):
        grouped_statistic([0.1, 0.2], [5])
    with pytest.raises(ValueError):
        ratio_statistic([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        nspr_items([np.zeros(3)], [])


# -- every layer at once, and paired differences --------------------------------------------------------------

def _layers_of_predictions(heads, n_layers=3, seed=7):
    """Depth and distance predictions of a few 'layers' of increasing noise, for the same sentences."""
    rng = np.random.default_rng(seed)
    depth, dist = [], []
    for k in range(n_layers):
        depth.append([tree_depths(h) + rng.normal(scale=0.5 + k, size=len(h)) for h in heads])
        layer = []
        for h in heads:
            z = rng.normal(size=(len(h), 3))
            noisy = tree_distances(h) + ((z[:, None] - z[None]) ** 2).sum(-1) * (0.2 + k)
            layer.append((noisy + noisy.T) / 2)
        dist.append(layer)
    return depth, dist


def test_items_by_layer_are_the_per_layer_items_and_their_point_is_the_metric():
    from mmdiag.metrics.probe_scores import dspr_details_by_layer, nspr_details_by_layer
    from mmdiag.uncertainty.grouped import dspr_items_by_layer, nspr_items_by_layer

    heads, _, _, _ = _corpus(LENGTHS, seed=8)
    depth, dist = _layers_of_predictions(heads)
    gold_d, gold_t = [tree_depths(h) for h in heads], [tree_distances(h) for h in heads]
    for by_layer, one, details, preds, gold in (
            (nspr_items_by_layer, nspr_items, nspr_details_by_layer, depth, gold_d),
            (dspr_items_by_layer, dspr_items, dspr_details_by_layer, dist, gold_t)):
        items = by_layer(preds, gold)
        assert items.values.shape == (3, len(heads))
        for k in range(3):
            alone = one(preds[k], gold)
            np.testing.assert_allclose(items.values[k], alone.values, rtol=1e-12, equal_nan=True)
            np.testing.assert_array_equal(items.groups, alone.groups)
            assert grouped_statistic(items.values[k], items.groups).point() == pytest.approx(
                details(preds, gold)[k]["value"], rel=1e-12, abs=1e-12)


def test_all_layers_at_once_equal_one_layer_at_a_time():
    from mmdiag.uncertainty.grouped import bootstrap_grouped_layers, dspr_items_by_layer

    heads, _, _, _ = _corpus(LENGTHS * 2, seed=9)
    _, dist = _layers_of_predictions(heads, n_layers=4)
    items = dspr_items_by_layer(dist, [tree_distances(h) for h in heads])
    # a tiny memory budget forces many chunks; the resamples are the same seeded stream
    layered = bootstrap_grouped_layers(items.values, items.groups, boot=150, seed=3, memory_budget=2000)
    for k, ci in enumerate(layered):
        alone = bootstrap_grouped(items.values[k], items.groups, boot=150, seed=3)
        assert ci.resamples == alone.resamples == 150 and ci.method == alone.method
        assert (ci.low, ci.high, ci.se) == pytest.approx((alone.low, alone.high, alone.se), rel=1e-12, abs=1e-12)
    assert bootstrap_grouped_layers(items.values, items.groups, boot=0, seed=3) is None
    bca = bootstrap_grouped_layers(items.values[:2], items.groups, boot=50, seed=3, method="bca")
    assert [c.method for c in bca] == ["bootstrap-bca"] * 2
    with pytest.raises(ValueError):
        bootstrap_grouped_layers(items.values[0], items.groups, boot=10, seed=0)


def test_grouped_difference_resamples_both_sides_with_the_same_sentences():
    """Against a brute-force loop: metric(A on resample r) − metric(B on resample r), r the same rows."""
    from mmdiag.uncertainty.bootstrap import bootstrap_replicates, interval_from_replicates
    from mmdiag.uncertainty.grouped import bootstrap_grouped_difference, grouped_difference_statistic

    lengths = LENGTHS * 2 + [3, 4]          # some out-of-range lengths, and one-word sentences (skipped)
    heads, _, _, _ = _corpus(lengths, seed=10)
    _, dist = _layers_of_predictions(heads, n_layers=2, seed=11)
    gold = [tree_distances(h) for h in heads]
    a, b = dspr_items(dist[0], gold), dspr_items(dist[1], gold)
    stat = grouped_difference_statistic(a.values, b.values, a.groups)
    assert stat.point() == pytest.approx(dspr(dist[0], gold) - dspr(dist[1], gold), rel=1e-12)
    boot, seed = 120, 4
    idx = resample_indices(len(heads), boot, seed).numpy()
    brute = np.array([dspr(_take(dist[0], r), _take(gold, r)) - dspr(_take(dist[1], r), _take(gold, r))
                      for r in idx])
    np.testing.assert_allclose(bootstrap_replicates(stat, stat.n, boot, seed).numpy(), brute, rtol=1e-10,
                               atol=1e-12)
    ci = bootstrap_grouped_difference(a.values, b.values, a.groups, boot, seed)
    want = interval_from_replicates(torch.from_numpy(brute))
    assert (ci.low, ci.high, ci.se) == pytest.approx((want.low, want.high, want.se), rel=1e-10, abs=1e-12)
    # pairing matters: B = A − 0.1 + a little noise per sentence; paired, the difference barely varies
    close = a.values - 0.1 + np.random.default_rng(0).normal(scale=0.01, size=a.values.size)
    paired = bootstrap_grouped_difference(a.values, close, a.groups, boot, seed)
    alone = bootstrap_grouped(a.values, a.groups, boot, seed)
    assert paired.se < 0.2 * alone.se and paired.contains(0.1)
    assert bootstrap_grouped_difference(a.values, b.values, a.groups, 0, seed) is None
    with pytest.raises(ValueError, match="same sentences"):
        grouped_difference_statistic(a.values, b.values[:-1], a.groups)


def test_uuas_items_by_layer_pool_to_uuas_by_layer_exactly():
    from mmdiag.metrics.probe_recovery import uuas_by_layer
    from mmdiag.uncertainty.grouped import uuas_items_by_layer

    heads, _, _, upos = _corpus(LENGTHS, seed=12)
    _, dist = _layers_of_predictions(heads, n_layers=3, seed=13)
    dist[2] = [np.round(d) for d in dist[2]]        # ties: the MST is the one uuas_by_layer picks
    items = uuas_items_by_layer(dist, heads, upos)
    assert items.values.shape == (3, len(heads)) and items.totals.shape == (len(heads),)
    assert [h.sum() / items.totals.sum() for h in items.values] == uuas_by_layer(dist, heads, upos)
    for k in range(3):
        np.testing.assert_array_equal(items.totals, uuas_items(dist[k], heads, upos).totals)
