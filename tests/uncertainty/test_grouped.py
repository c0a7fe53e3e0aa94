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
