"""Tests of mmdiag.metrics.probe_scores, probe_recovery and probe_trees against independent references."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from scipy.stats import spearmanr

from mmdiag.metrics.probe_recovery import mst_edges, mst_edges_by_layer, root_accuracy, uuas, uuas_by_layer
from mmdiag.metrics.probe_scores import (
    dspr, dspr_details, dspr_details_by_layer, nspr, nspr_details, nspr_details_by_layer, spearman_rows,
)
from mmdiag.metrics.probe_trees import tree_depths, tree_distances

SETTINGS = settings(max_examples=30, deadline=None)


# ---------------------------------------------------------------- helpers

def random_heads(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniformly random labelled rooted tree as 1-based heads (0 = root)."""
    perm = rng.permutation(n)
    heads = np.zeros(n, dtype=np.int64)
    for k in range(1, n):
        heads[perm[k]] = perm[rng.integers(0, k)] + 1
    return heads


@st.composite
def trees(draw, min_n=1, max_n=12):
    n = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    return random_heads(np.random.default_rng(seed), n)


def ref_distances(heads) -> np.ndarray:
    """Tree distances by breadth-first search over the undirected tree (scipy)."""
    n = len(heads)
    rows = [i for i in range(n) if heads[i] > 0]
    cols = [heads[i] - 1 for i in rows]
    g = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return shortest_path(g, directed=False, unweighted=True)


def prufer_trees(n: int):
    """All labelled spanning trees of K_n as edge sets, from Prüfer sequences."""
    if n == 2:
        yield {(0, 1)}
        return
    for seq in itertools.product(range(n), repeat=n - 2):
        degree = [1] * n
        for x in seq:
            degree[x] += 1
        edges = set()
        for x in seq:
            leaf = min(i for i in range(n) if degree[i] == 1)
            edges.add((min(leaf, x), max(leaf, x)))
            degree[leaf] -= 1
            degree[x] -= 1
        u, v = [i for i in range(n) if degree[i] == 1]
        edges.add((u, v))
        yield edges


def weight(d, edges) -> float:
    return float(sum(d[i, j] for i, j in edges))


# ---------------------------------------------------------------- gold structure

@SETTINGS
@given(trees())
def test_tree_depths_and_distances_match_bfs(heads):
    ref = ref_distances(heads)
    np.testing.assert_array_equal(tree_distances(heads), ref)
    root = int(np.flatnonzero(heads == 0)[0])
    np.testing.assert_array_equal(tree_depths(heads), ref[root])


@pytest.mark.parametrize("bad", [[0, 0], [2, 1], [1, 2], [0, 3], [], [0, -1]])
def test_tree_helpers_reject_non_trees(bad):
    with pytest.raises(ValueError):
        tree_distances(bad)


# ---------------------------------------------------------------- Spearman

@SETTINGS
@given(st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_spearman_rows_matches_scipy_with_ties(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=(5, n)).astype(float)  # many ties
    b = rng.integers(0, 4, size=(5, n)).astype(float)
    got = spearman_rows(a, b)
    for k in range(5):
        if np.ptp(a[k]) == 0 or np.ptp(b[k]) == 0:
            assert np.isnan(got[k])
        else:
            assert got[k] == pytest.approx(spearmanr(a[k], b[k]).statistic, abs=1e-12)


def test_spearman_rows_undefined_cases():
    assert np.isnan(spearman_rows(np.array([[1.0]]), np.array([[2.0]]))).all()
    assert np.isnan(spearman_rows(np.array([[1.0, 1.0, 1.0]]), np.array([[1.0, 2.0, 3.0]]))).all()


# ---------------------------------------------------------------- MST

@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1), st.booleans())
def test_mst_matches_brute_force(n, seed, ties):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 3, size=(n, n)).astype(float) if ties else rng.random((n, n))
    d = np.triu(d, 1)
    d = d + d.T  # zeros included when ties: scipy would drop them without the shift
    got = mst_edges(d)
    assert len(got) == n - 1
    all_trees = list(prufer_trees(n))
    assert got in all_trees  # a spanning tree
    best = min(weight(d, t) for t in all_trees)
    assert weight(d, got) == pytest.approx(best)
    if not ties:  # distinct weights: the MST is unique
        assert got == min(all_trees, key=lambda t: weight(d, t))


def test_prufer_enumeration_counts():
    # Cayley: n^(n-2) labelled trees, all distinct
    for n in range(2, 7):
        ts = [frozenset(t) for t in prufer_trees(n)]
        assert len(set(ts)) == len(ts) == n ** (n - 2)


def test_mst_with_all_zero_distances_is_spanning():
    assert len(mst_edges(np.zeros((5, 5)))) == 4


# ---------------------------------------------------------------- NSpr / DSpr

def test_nspr_per_length_then_macro_average():
    g5 = np.arange(5.0)
    g6 = np.array([0.0, 1, 1, 2, 3, 2])
    pred = [g5, g5[::-1], g6 * 2 + 1, np.arange(4.0), np.ones(5)]
    gold = [g5, g5, g6, np.arange(4.0), g5]
    det = nspr_details(pred, gold)
    # length 5: (1 + -1) / 2 = 0; length 6: 1; length 4 out of [5, 50]; const pred skipped
    assert det["per_length"] == {4: 1.0, 5: 0.0, 6: 1.0}
    assert det["lengths_used"] == [5, 6]
    assert det["value"] == pytest.approx(0.5)  # the pooled mean would be 1/3
    assert det["n_sentences"] == 3 and det["n_skipped"] == 1 and not det["fallback"]
    assert nspr(pred, gold) == det["value"]


def test_nspr_fallback_for_short_captions():
    gold = [np.array([0.0, 1, 1]), np.array([0.0, 1, 2, 1]), np.array([1.0, 0, 2, 1])]
    pred = [np.array([0.0, 2, 3]), np.array([3.0, 2, 1, 0]), np.array([1.0, 0, 2, 1])]
    det = nspr_details(pred, gold)
    assert det["fallback"] and det["lengths_used"] == [3, 4]
    r3 = spearmanr(pred[0], gold[0]).statistic
    r4 = (spearmanr(pred[1], gold[1]).statistic + 1.0) / 2
    assert det["value"] == pytest.approx((r3 + r4) / 2)
    empty = nspr_details([np.array([1.0])], [np.array([0.0])])
    assert np.isnan(empty["value"]) and empty["n_skipped"] == 1


def _dspr_reference(pred, gold, lo=5, hi=50):
    by_len = {}
    for p, g in zip(pred, gold):
        rows = [spearmanr(p[i], g[i]).statistic for i in range(len(p))]
        rows = [r for r in rows if not np.isnan(r)]
        if rows:
            by_len.setdefault(len(p), []).append(np.mean(rows))
    lengths = [n for n in by_len if lo <= n <= hi] or list(by_len)
    return np.mean([np.mean(by_len[n]) for n in lengths])


@SETTINGS
@given(st.lists(trees(min_n=2, max_n=9), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
def test_dspr_matches_loop_reference(heads_list, seed):
    rng = np.random.default_rng(seed)
    gold = [tree_distances(h) for h in heads_list]
    pred = []
    for g in gold:
        x = rng.standard_normal((len(g), 3))
        pred.append(((x[:, None] - x[None]) ** 2).sum(-1))
    assert dspr(pred, gold) == pytest.approx(_dspr_reference(pred, gold), abs=1e-12)


def test_dspr_row_includes_self_distance():
    # word 0's row: gold [0, 1, 2], pred [5, 1, 2]: with the self entry rho = -0.5,
    # without it (gold [1, 2] vs pred [1, 2]) it would be 1.
    gold = np.array([[0.0, 1, 2], [1, 0, 1], [2, 1, 0]])
    pred = gold.copy()
    pred[0, 0] = 5.0
    det = dspr_details([pred], [gold])
    assert det["value"] == pytest.approx((-0.5 + 1 + 1) / 3)


@SETTINGS
@given(st.lists(trees(min_n=2, max_n=12), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_scores_invariant_to_monotone_maps(heads_list, seed):
    rng = np.random.default_rng(seed)
    pd, pdist = [], []
    for h in heads_list:
        x = rng.standard_normal((len(h), 4))
        pd.append((x ** 2).sum(1))
        pdist.append(((x[:, None] - x[None]) ** 2).sum(-1))
    gd = [tree_depths(h) for h in heads_list]
    gdist = [tree_distances(h) for h in heads_list]
    assert nspr([np.exp(p) * 3 for p in pd], gd) == pytest.approx(nspr(pd, gd), abs=1e-12)
    assert dspr([np.sqrt(p) + 7 for p in pdist], gdist) == pytest.approx(dspr(pdist, gdist),
                                                                          abs=1e-12)
    # MST depends only on the order of the off-diagonal distances
    assert uuas([np.sqrt(p) * 2 for p in pdist], heads_list) == pytest.approx(
        uuas(pdist, heads_list))


# ---------------------------------------------------------------- root accuracy / UUAS

def test_root_accuracy_excludes_punctuation():
    heads = [[2, 0, 2, 2], [0, 1, 1]]
    upos = [["DET", "NOUN", "VERB", "PUNCT"], ["VERB", "NOUN", "NOUN"]]
    pred = [np.array([3.0, 1.0, 2.0, 0.5]),  # PUNCT is shallowest, next is the root
            np.array([1.0, 0.0, 2.0])]       # wrong
    assert root_accuracy(pred, heads, upos) == pytest.approx(0.5)
    assert root_accuracy(pred, heads) == pytest.approx(0.0)  # without tags PUNCT wins


def test_uuas_pooled_over_corpus_with_punct_excluded():
    # sentence A: chain 1-2-3-4 plus a PUNCT leaf 5 attached to 4
    heads_a = [0, 1, 2, 3, 4]
    upos_a = ["X", "X", "X", "X", "PUNCT"]
    # predicted distances favour edges (0,1), (1,2), (0,3) -> 2 of 3 gold edges
    pa = np.full((5, 5), 10.0)
    for i, j in [(0, 1), (1, 2), (0, 3)]:
        pa[i, j] = pa[j, i] = 1.0
    pa[4, :] = pa[:, 4] = 0.0  # the PUNCT word is closest to all: must be ignored
    np.fill_diagonal(pa, 0.0)
    # sentence B: star with 3 words, predicted exactly -> 2 of 2
    heads_b = [0, 1, 1]
    pb = tree_distances(heads_b)
    got = uuas([pa, pb], [heads_a, heads_b], [upos_a, ["X"] * 3])
    assert got == pytest.approx((2 + 2) / (3 + 2))  # per-sentence mean would be 5/6


def test_uuas_with_zero_predicted_distances():
    # zeros on the gold edges (scipy would treat them as missing edges)
    heads = [0, 1, 2, 3]
    p = tree_distances(heads) - 1.0
    np.fill_diagonal(p, 0.0)
    assert uuas([p], [heads]) == 1.0


@st.composite
def ud_sentences(draw):
    heads = draw(trees(min_n=2, max_n=15))
    n = len(heads)
    children = {int(h) - 1 for h in heads if h > 0}
    leaves = [i for i in range(n) if i not in children and heads[i] != 0]
    punct = set(draw(st.lists(st.sampled_from(leaves), max_size=3))) if leaves else set()
    upos = ["PUNCT" if i in punct else "NOUN" for i in range(n)]
    return heads, upos


@SETTINGS
@given(st.lists(ud_sentences(), min_size=1, max_size=6))
def test_perfect_predictions_score_one(sents):
    heads = [h for h, _ in sents]
    upos = [u for _, u in sents]
    gd = [tree_depths(h) for h in heads]
    gdist = [tree_distances(h) for h in heads]
    assert nspr(gd, gd) == pytest.approx(1.0)
    assert dspr(gdist, gdist) == pytest.approx(1.0)
    assert root_accuracy(gd, heads, upos) == 1.0
    n_edges = sum(1 for h, u in sents for i in range(len(h))
                  if h[i] > 0 and u[i] != "PUNCT" and u[h[i] - 1] != "PUNCT")
    if n_edges:
        assert uuas(gdist, heads, upos) == 1.0
    else:  # e.g. a 2-word sentence whose leaf is PUNCT: nothing to score
        assert np.isnan(uuas(gdist, heads, upos))


def test_random_embedding_chance_levels():
    """Chance: squared distances / norms of random Gaussian vectors (D = 32)."""
    rng = np.random.default_rng(0)
    heads = [random_heads(rng, int(n)) for n in rng.integers(5, 21, size=300)]
    xs = [rng.standard_normal((len(h), 32)) for h in heads]
    pdist = [((x[:, None] - x[None]) ** 2).sum(-1) for x in xs]
    pdep = [(x ** 2).sum(1) for x in xs]
    d = dspr(pdist, [tree_distances(h) for h in heads])
    u = uuas(pdist, heads)
    ns = nspr(pdep, [tree_depths(h) for h in heads])
    ra = root_accuracy(pdep, heads)
    print(f"\nchance (random Gaussian, D=32, n=5..20): DSpr={d:.3f} UUAS={u:.3f} "
          f"NSpr={ns:.3f} root_acc={ra:.3f}")
    # DSpr is far from 0 at chance: every row holds the word's zero self-distance,
    # the smallest value in both rows, so random rows still correlate (~0.27 here)
    assert 0.15 < d < 0.4 and abs(ns) < 0.05
    assert 0.08 < u < 0.25 and ra < 0.2


def test_shape_errors():
    with pytest.raises(ValueError):
        nspr([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError):
        dspr([np.zeros((3, 3))], [])
    with pytest.raises(ValueError):
        uuas([np.zeros((2, 2))], [[0, 1, 1]])
    with pytest.raises(ValueError):
        root_accuracy([np.zeros(2)], [[0, 1]], [["X"]])


# ---------------------------------------------------------------- every layer at once

@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1), st.booleans(), st.integers(1, 4))
def test_mst_by_layer_matches_brute_force(n, seed, ties, layers):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 3, size=(layers, n, n)).astype(float) if ties else rng.random((layers, n, n))
    d = np.triu(d, 1)
    d = d + d.transpose(0, 2, 1)
    all_trees = list(prufer_trees(n))
    for k, got in enumerate(mst_edges_by_layer(d)):
        assert got in all_trees
        assert weight(d[k], got) == pytest.approx(min(weight(d[k], t) for t in all_trees))
        if not ties:
            assert got == mst_edges(d[k])


@SETTINGS
@given(st.lists(ud_sentences(), min_size=1, max_size=6), st.integers(1, 4), st.integers(0, 2**31 - 1),
       st.booleans())
def test_by_layer_scores_equal_layer_by_layer(sents, layers, seed, coarse):
    """The batched functions return exactly what the per-layer functions return, ties included."""
    rng = np.random.default_rng(seed)
    heads = [h for h, _ in sents]
    upos = [u for _, u in sents]

    def draw(shape):  # coarse values make tied and constant rows (undefined Spearman)
        return rng.integers(0, 2, size=shape).astype(float) if coarse else rng.random(shape)

    depths = [[draw(len(h)) for h in heads] for _ in range(layers)]
    dists = []
    for _ in range(layers):
        mats = []
        for h in heads:
            m = np.triu(draw((len(h), len(h))), 1)
            mats.append(m + m.T)
        dists.append(mats)
    gold_d = [tree_depths(h) for h in heads]
    gold_m = [tree_distances(h) for h in heads]
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN == NaN)
    assert same(nspr_details_by_layer(depths, gold_d), [nspr_details(p, gold_d) for p in depths])
    assert same(dspr_details_by_layer(dists, gold_m), [dspr_details(p, gold_m) for p in dists])
    if not coarse:  # with tied distances the two MSTs may differ (equal weight, other edges)
        assert same(uuas_by_layer(dists, heads, upos), [uuas(p, heads, upos) for p in dists])


def test_by_layer_shape_errors():
    with pytest.raises(ValueError, match="layer 1: 1 predictions but 2 gold"):
        dspr_details_by_layer([[np.zeros((2, 2))] * 2, [np.zeros((2, 2))]], [np.zeros((2, 2))] * 2)
    with pytest.raises(ValueError, match="sentence 0"):
        nspr_details_by_layer([[np.zeros(3)]], [np.zeros(4)])
    with pytest.raises(ValueError, match="sentence 0"):
        uuas_by_layer([[np.zeros((3, 3))]], [[0, 1]])
    with pytest.raises(ValueError, match=r"\(L, n, n\)"):
        mst_edges_by_layer(np.zeros((3, 3)))


def _hewitt_mst_weight(d: np.ndarray) -> float:
    """Weight of the tree Hewitt's ``prims_matrix_to_edges`` builds: Kruskal over EVERY (i, j), both triangles."""
    n = d.shape[0]
    parent = list(range(n))

    def find(v):
        while parent[v] != v:
            v = parent[v]
        return v

    total = 0.0
    for (i, j), w in sorted(((ij, d[ij]) for ij in itertools.product(range(n), range(n))), key=lambda x: x[1]):
        if find(i) != find(j):
            parent[find(i)] = j
            total += w
    return total


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_mst_reads_the_upper_triangle_hewitt_reads_both(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    sym = ((x[:, None] - x[None]) ** 2).sum(-1)       # a distance probe's predictions are symmetric
    weight = lambda d, edges: sum(d[i, j] for i, j in edges)  # noqa: E731
    assert weight(sym, mst_edges(sym)) == pytest.approx(_hewitt_mst_weight(sym))
    # on an asymmetric matrix Hewitt's weight of {i, j} is min(d_ij, d_ji); mmdiag's is d_ij for i < j
    asym = sym + np.triu(rng.uniform(0, 5, size=(n, n)), 1)
    assert _hewitt_mst_weight(asym) == pytest.approx(_hewitt_mst_weight(np.minimum(asym, asym.T)))
    assert weight(asym, mst_edges(asym)) >= _hewitt_mst_weight(asym) - 1e-9
