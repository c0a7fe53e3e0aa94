"""Generic helpers for rooted trees given as a head list.

A tree over ``n`` nodes is written in CoNLL-U style: ``heads[i]`` is the
1-based index of node ``i``'s head and ``0`` marks the single root. Dependency
trees (:class:`mmdiag.data.types.DepTree`) use this form directly; scene trees
(``Sample.scene_parents``: 0-based parent indices, ``-1`` for the image root)
are converted with :func:`parents_to_heads`.

The gold labels of the structural probes come from here (Hewitt & Manning,
NAACL 2019, "A Structural Probe for Finding Syntax in Word Representations"):
the depth of a word is its number of edges to the root, the distance of two
words is the length of the path between them in the undirected tree.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

__all__ = [
    "validate_heads",
    "depths",
    "distances",
    "tree_edges",
    "parents_to_heads",
]


def _as_heads(heads: Sequence[int]) -> np.ndarray:
    """Return ``heads`` as a 1-D int64 array; ValueError for non-integers."""
    arr = np.asarray(heads)
    if arr.ndim != 1:
        raise ValueError(f"heads must be a flat sequence of integers, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) \
                and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ValueError(f"heads must be integers, got {list(heads)!r}")
    return arr.astype(np.int64)


def validate_heads(heads: Sequence[int]) -> None:
    """Check that ``heads`` (1-based, 0 = root) encodes one rooted tree.

    Raises :class:`ValueError` naming the problem when the list is empty, a head
    is outside ``0..n``, a node is its own head, there is not exactly one root,
    or following heads from some node never reaches the root (a cycle).
    """
    arr = _as_heads(heads)
    n = arr.size
    if n == 0:
        raise ValueError("a tree needs at least one node; got an empty head list")
    bad = np.flatnonzero((arr < 0) | (arr > n))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"head of node {i + 1} is {int(arr[i])}, outside 0..{n} (heads are 1-based, 0 = root)")
    selfloop = np.flatnonzero(arr == np.arange(1, n + 1))
    if selfloop.size:
        i = int(selfloop[0])
        raise ValueError(f"node {i + 1} is its own head (a cycle of length 1)")
    roots = np.flatnonzero(arr == 0)
    if roots.size != 1:
        which = ", ".join(str(int(r) + 1) for r in roots) or "none"
        raise ValueError(f"a tree needs exactly one root (head 0); found {roots.size}: {which}")
    # Every node must reach the root: walk up with memoisation.
    state = np.zeros(n, dtype=np.int8)  # 0 = unknown, 1 = on current path, 2 = reaches root
    state[roots[0]] = 2
    for start in range(n):
        path = []
        v = start
        while state[v] == 0:
            state[v] = 1
            path.append(v)
            v = int(arr[v]) - 1
        if state[v] == 1:
            cycle = path[path.index(v):]
            nodes = " -> ".join(str(u + 1) for u in cycle + [v])
            raise ValueError(f"the heads contain a cycle: {nodes}")
        state[path] = 2


def depths(heads: Sequence[int]) -> np.ndarray:
    """Depth of every node: number of edges on its path to the root (root = 0).

    ``depth(i) = 0`` if ``heads[i] == 0`` else ``1 + depth(heads[i] - 1)``;
    the gold label of Hewitt & Manning's (2019) depth probe.
    """
    validate_heads(heads)
    arr = _as_heads(heads)
    n = arr.size
    out = np.full(n, -1, dtype=np.int64)
    for start in range(n):
        path = []
        v = start
        while out[v] < 0:
            if arr[v] == 0:
                out[v] = 0
                break
            path.append(v)
            v = int(arr[v]) - 1
        d = out[v]
        for u in reversed(path):
            d += 1
            out[u] = d
    return out


def distances(heads: Sequence[int]) -> np.ndarray:
    """Pairwise path lengths ``d[i, j]`` in the undirected tree (n×n, int).

    ``d[i, j]`` = number of edges on the unique path between nodes ``i`` and
    ``j``; the gold label of Hewitt & Manning's (2019) distance probe. Computed
    with :func:`scipy.sparse.csgraph.shortest_path` on the unweighted tree.
    """
    validate_heads(heads)
    arr = _as_heads(heads)
    n = arr.size
    child = np.flatnonzero(arr > 0)
    parent = arr[child] - 1
    graph = coo_matrix((np.ones(child.size), (child, parent)), shape=(n, n)).tocsr()
    dist = shortest_path(graph, method="D", directed=False, unweighted=True)
    return dist.astype(np.int64)


def tree_edges(heads: Sequence[int]) -> set[frozenset[int]]:
    """Undirected edges ``{i, head(i)}`` as 0-based node index pairs (root excluded)."""
    validate_heads(heads)
    arr = _as_heads(heads)
    return {frozenset((i, int(h) - 1)) for i, h in enumerate(arr) if h != 0}


def parents_to_heads(parents: Sequence[int]) -> tuple[int, ...]:
    """Convert 0-based parent indices (``-1`` = root) to 1-based heads (``0`` = root).

    ``heads[i] = parents[i] + 1``; e.g. a scene tree ``(-1, 0, 1)`` becomes
    ``(0, 1, 2)``. The result is validated with :func:`validate_heads`.
    """
    arr = _as_heads(parents)
    if arr.size and arr.min() < -1:
        i = int(np.argmin(arr))
        raise ValueError(f"parent of node {i} is {int(arr[i])}; parents are 0-based with -1 for the root")
    heads = tuple(int(p) + 1 for p in arr)
    validate_heads(heads)
    return heads
