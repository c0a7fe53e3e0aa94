"""Tests for mmdiag.data.trees against hand-worked cases and networkx."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdiag.data.trees import depths, distances, parents_to_heads, tree_edges, validate_heads

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def random_heads(draw, max_n: int = 25) -> tuple[int, ...]:
    """A random valid head list: random recursive tree, randomly relabelled."""
    n = draw(st.integers(1, max_n))
    parent = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    perm = draw(st.permutations(range(n)))  # node i of the recursive tree -> perm[i]
    heads = [0] * n
    for i in range(n):
        heads[perm[i]] = 0 if parent[i] < 0 else perm[parent[i]] + 1
    return tuple(heads)


def _graph(heads) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(len(heads)))
    g.add_edges_from((i, h - 1) for i, h in enumerate(heads) if h)
    return g


def _ancestors(heads, i) -> list[int]:
    """i, head(i), head(head(i)), ..., root (0-based)."""
    out = [i]
    while heads[out[-1]] != 0:
        out.append(heads[out[-1]] - 1)
    return out


def _path(heads, i, j) -> list[int]:
    ai, aj = _ancestors(heads, i), _ancestors(heads, j)
    common = next(v for v in ai if v in set(aj))
    return ai[: ai.index(common) + 1] + aj[: aj.index(common)][::-1]


# --- hand-worked cases -----------------------------------------------------

def test_small_tree_by_hand():
    # "a red circle ." : a->circle, red->circle, circle root, . -> circle
    heads = (3, 3, 0, 3)
    assert depths(heads).tolist() == [1, 1, 0, 1]
    assert distances(heads).tolist() == [
        [0, 2, 1, 2],
        [2, 0, 1, 2],
        [1, 1, 0, 1],
        [2, 2, 1, 0],
    ]
    assert tree_edges(heads) == {frozenset({0, 2}), frozenset({1, 2}), frozenset({3, 2})}


def test_chain():
    heads = (0, 1, 2, 3, 4)   # 1 <- 2 <- 3 <- 4 <- 5
    assert depths(heads).tolist() == [0, 1, 2, 3, 4]
    d = distances(heads)
    assert d.tolist() == [[abs(i - j) for j in range(5)] for i in range(5)]
    assert d.dtype.kind == "i"


def test_single_node():
    assert depths([0]).tolist() == [0]
    assert distances([0]).tolist() == [[0]]
    assert tree_edges([0]) == set()


def test_accepts_numpy_input():
    assert depths(np.array([2, 0, 2])).tolist() == [1, 0, 1]


@pytest.mark.parametrize("heads, match", [
    ((), "at least one node"),
    ((0, 0, 1), "exactly one root"),
    ((2, 3, 1), "exactly one root"),
    ((0, 4, 1), "outside 0..3"),
    ((0, -1, 1), "outside 0..3"),
    ((0, 2, 1), "own head"),
    ((0, 3, 2), "cycle"),
    ((0, 3, 4, 2), "cycle"),
    ((0, 1.5), "integers"),
    ([[0, 1]], "flat"),
])
def test_validate_rejects(heads, match):
    with pytest.raises(ValueError, match=match):
        validate_heads(heads)


def test_helpers_validate_too():
    for fn in (depths, distances, tree_edges):
        with pytest.raises(ValueError):
            fn((0, 3, 2))


def test_parents_to_heads():
    assert parents_to_heads((-1, 0, 1, 0)) == (0, 1, 2, 1)
    assert depths(parents_to_heads((-1, 0, 1, 0))).tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="exactly one root"):
        parents_to_heads((-1, -1))
    with pytest.raises(ValueError, match="-1 for the root"):
        parents_to_heads((-1, -2))
    with pytest.raises(ValueError, match="cycle"):
        parents_to_heads((-1, 2, 1))


# --- properties on random trees -------------------------------------------

@SETTINGS
@given(random_heads())
def test_random_trees_are_valid(heads):
    validate_heads(heads)


@SETTINGS
@given(random_heads())
def test_distances_match_networkx(heads):
    n = len(heads)
    ref = dict(nx.all_pairs_shortest_path_length(_graph(heads)))
    expected = np.array([[ref[i][j] for j in range(n)] for i in range(n)])
    d = distances(heads)
    np.testing.assert_array_equal(d, expected)
    np.testing.assert_array_equal(d, d.T)
    assert np.all(np.diag(d) == 0)
    assert np.all(d[~np.eye(n, dtype=bool)] >= 1)


@SETTINGS
@given(random_heads())
def test_depth_is_distance_to_root_and_ancestor_count(heads):
    root = heads.index(0)
    dep = depths(heads)
    np.testing.assert_array_equal(dep, distances(heads)[:, root])
    assert dep.tolist() == [len(_ancestors(heads, i)) - 1 for i in range(len(heads))]
    assert dep[root] == 0 and int((dep == 0).sum()) == 1


@SETTINGS
@given(random_heads())
def test_edges_are_distance_one(heads):
    d = distances(heads)
    edges = tree_edges(heads)
    assert len(edges) == len(heads) - 1
    pairs = {frozenset((int(i), int(j))) for i, j in zip(*np.nonzero(d == 1))}
    assert pairs == edges
    dep = depths(heads)
    for e in edges:
        i, j = tuple(e)
        assert abs(int(dep[i]) - int(dep[j])) == 1


@SETTINGS
@given(random_heads(max_n=15), st.data())
def test_additivity_along_paths(heads, data):
    d = distances(heads)
    n = len(heads)
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1))
    path = _path(heads, i, j)
    assert d[i, j] == len(path) - 1
    on_path = set(path)
    for k in range(n):
        if k in on_path:
            assert d[i, k] + d[k, j] == d[i, j]
        else:
            assert d[i, k] + d[k, j] > d[i, j]


@SETTINGS
@given(random_heads(), st.data())
def test_parents_round_trip_and_broken_trees_rejected(heads, data):
    parents = tuple(h - 1 for h in heads)
    assert parents_to_heads(parents) == heads
    n = len(heads)
    if n < 2:
        return
    root = heads.index(0)
    # A second root must be rejected.
    other = data.draw(st.sampled_from([i for i in range(n) if i != root]))
    two_roots = list(heads)
    two_roots[other] = 0
    with pytest.raises(ValueError, match="exactly one root"):
        validate_heads(two_roots)
    # Hanging the root under one of its descendants makes a cycle and no root.
    cyc = list(heads)
    cyc[root] = other + 1
    with pytest.raises(ValueError):
        validate_heads(cyc)
