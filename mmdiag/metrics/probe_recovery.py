"""Tree-recovery metrics of structural probes: root accuracy and UUAS (Hewitt & Manning, NAACL 2019, §4.1).

Where NSpr and DSpr (:mod:`mmdiag.metrics.probe_scores`) correlate predicted
with gold depths and distances, these read a tree off the predictions and
count what it gets right:

* :func:`root_accuracy` — the shallowest predicted non-punctuation word is the
  gold root (depth probe);
* :func:`uuas` — undirected unlabelled attachment score of the minimum spanning
  tree (:func:`mst_edges`) over predicted distances (distance probe);
* :func:`mst_edges_by_layer` / :func:`uuas_by_layer` — the same for every layer
  of a probe run at once.

Model-free: inputs are per-sentence numpy arrays and CoNLL-U heads (1-based,
0 = root); punctuation words are left out as in Hewitt's code: the tags passed
(``upos_list``, per sentence UPOS or PTB XPOS tags, or None) are read by
:func:`~mmdiag.metrics.probe_trees.keep_mask` (UPOS ``PUNCT`` or one of
Hewitt's seven PTB tags, ``--mm-probe-punctuation``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree

from mmdiag.metrics.probe_scores import count_layers, stack_layers
from mmdiag.metrics.probe_trees import check_heads, keep_mask

__all__ = [
    "mst_edges",
    "root_accuracy",
    "uuas",
    "mst_edges_by_layer",
    "uuas_by_layer",
]


def root_accuracy(pred_depths: Sequence[np.ndarray], heads_list: Sequence[Sequence[int]],
                  upos_list: Optional[Sequence[Sequence[str]]] = None) -> float:
    """Root accuracy (Hewitt & Manning 2019, §4.1).

    ``mean over sentences of [argmin_{i not PUNCT} pred_i == gold root]``, the
    gold root being the word with head 0.  Punctuation words by ``upos_list``
    (UPOS ``PUNCT`` or a PTB punctuation tag, :func:`~mmdiag.metrics.probe_trees.keep_mask`)
    are excluded from the argmin (none when ``upos_list`` or a sentence's entry is None).
    Sentences with no non-punctuation word are left out of the mean; NaN when
    no sentence is left.  Ties in the argmin go to the first word.
    """
    if len(pred_depths) != len(heads_list):
        raise ValueError(f"root_accuracy: {len(pred_depths)} predictions but "
                         f"{len(heads_list)} gold trees")
    if upos_list is not None and len(upos_list) != len(heads_list):
        raise ValueError("root_accuracy: upos_list and heads_list differ in length")
    correct = total = 0
    for k, (p, heads) in enumerate(zip(pred_depths, heads_list)):
        p = np.asarray(p, dtype=np.float64)
        h = check_heads(heads)
        if p.shape != h.shape:
            raise ValueError(f"root_accuracy: sentence {k}: {p.shape} predictions for "
                             f"{h.size} words")
        keep = keep_mask(h.size, None if upos_list is None else upos_list[k], k,
                          "root_accuracy")
        if not keep.any():
            continue
        idx = np.flatnonzero(keep)
        pred_root = idx[int(np.argmin(p[idx]))]
        correct += int(pred_root == int(np.flatnonzero(h == 0)[0]))
        total += 1
    return correct / total if total else float("nan")


def mst_edges(dist: np.ndarray) -> set[tuple[int, int]]:
    """Edges ``(i, j)``, ``i < j``, of a minimum spanning tree of ``dist``.

    The weight of edge ``{i, j}`` is ``dist[i, j]`` for ``i < j`` (the upper
    triangle).  Hewitt's ``prims_matrix_to_edges`` (structural-probes
    ``reporter.py``) reads every ``(i, j)``, both triangles, and runs Kruskal
    over them, so on an asymmetric matrix its weight of ``{i, j}`` is
    ``min(dist[i, j], dist[j, i])``; a distance probe's predictions
    ``||B(h_i - h_j)||^2`` are symmetric, where the two agree.  ``scipy.sparse.csgraph`` treats a
    zero weight as a missing edge, so every weight is shifted by the same
    constant to be >= 1 first; a constant shift does not change which trees
    are minimal (all spanning trees have n-1 edges).  With ties any one
    minimum spanning tree is returned.
    """
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"mst_edges: expected a square matrix, got shape {d.shape}")
    n = d.shape[0]
    if n < 2:
        return set()
    iu = np.triu_indices(n, 1)
    w = d[iu]
    if not np.all(np.isfinite(w)):
        raise ValueError("mst_edges: distances must be finite")
    shifted = np.zeros((n, n))
    shifted[iu] = w - w.min() + 1.0
    tree = minimum_spanning_tree(shifted).tocoo()
    return {(int(min(i, j)), int(max(i, j))) for i, j in zip(tree.row, tree.col)}


def _kept_gold_edges(h: np.ndarray, upos: Optional[Sequence[str]], k: int) -> tuple[np.ndarray, set]:
    """The words UUAS keeps (not punctuation) and the gold edges between them, as pairs of positions among the kept."""
    idx = np.flatnonzero(keep_mask(h.size, upos, k, "uuas"))
    pos = {int(w): j for j, w in enumerate(idx)}
    gold = set()
    for i in idx:
        hd = int(h[i]) - 1
        if hd >= 0 and hd in pos:
            a, b = pos[int(i)], pos[hd]
            gold.add((min(a, b), max(a, b)))
    return idx, gold


def uuas(pred_dist: Sequence[np.ndarray], heads_list: Sequence[Sequence[int]],
         upos_list: Optional[Sequence[Sequence[str]]] = None) -> float:
    """Undirected unlabelled attachment score (Hewitt & Manning 2019, §4.1).

    For each sentence, the non-punctuation words (:func:`~mmdiag.metrics.probe_trees.keep_mask`) are kept; the predicted
    tree is a minimum spanning tree (:func:`mst_edges`) of the predicted
    distances restricted to them; the gold edges are the undirected edges
    ``{i, head_i}`` of the gold tree whose two ends are both kept.  Pooled over
    the corpus:

        UUAS = sum_s |pred_edges_s ∩ gold_edges_s| / sum_s |gold_edges_s|

    Denominator: in UD trees punctuation is always a leaf and never the root,
    so ``|gold_edges_s| = n_nonpunct_s - 1`` — the count Hewitt's code uses
    (there, the gold edges are the spanning tree of the gold distances over
    the non-punctuation words, which is the same edge set in that case).
    One-word sentences add nothing to either sum; NaN when the denominator
    is 0.

    Chance level: an MST over random Gaussian embeddings (D = 32) against
    uniformly random trees of 5–20 words scores UUAS ≈ 0.15 (observed 0.149 in
    ``tests/metrics/test_probe_scores.py``; a uniformly random spanning tree of
    n nodes shares 2/n of its edges with a given tree on average).  Root
    accuracy of random norms there: 0.10 (≈ 1/n).
    """
    if len(pred_dist) != len(heads_list):
        raise ValueError(f"uuas: {len(pred_dist)} predictions but {len(heads_list)} gold trees")
    if upos_list is not None and len(upos_list) != len(heads_list):
        raise ValueError("uuas: upos_list and heads_list differ in length")
    hit = total = 0
    for k, (p, heads) in enumerate(zip(pred_dist, heads_list)):
        p = np.asarray(p, dtype=np.float64)
        h = check_heads(heads)
        n = h.size
        if p.shape != (n, n):
            raise ValueError(f"uuas: sentence {k}: distance matrix {p.shape} for {n} words")
        idx, gold = _kept_gold_edges(h, None if upos_list is None else upos_list[k], k)
        if not gold:
            continue
        pred = mst_edges(p[np.ix_(idx, idx)])
        hit += len(pred & gold)
        total += len(gold)
    return hit / total if total else float("nan")


# --------------------------------------------------------------------------
# every layer at once
# --------------------------------------------------------------------------
# ``[f(p, gold) for p in preds_by_layer]`` for the metric f named, with the
# gold edges built once per sentence and one Prim's run for all layers.

def mst_edges_by_layer(dist: np.ndarray) -> list[set[tuple[int, int]]]:
    """:func:`mst_edges` of each ``dist[k]`` of an (L, n, n) stack, by Prim's algorithm on all L at once.

    Weights are read from the upper triangle as in :func:`mst_edges`.  Where
    several minimum spanning trees exist, the tree may differ from
    :func:`mst_edges`'s; its total weight does not.
    """
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 3 or d.shape[1] != d.shape[2]:
        raise ValueError(f"mst_edges_by_layer: expected an (L, n, n) stack, got shape {d.shape}")
    L, n, _ = d.shape
    if n < 2:
        return [set() for _ in range(L)]
    upper = np.triu(d, 1)
    if not np.all(np.isfinite(upper)):
        raise ValueError("mst_edges_by_layer: distances must be finite")
    w = upper + upper.transpose(0, 2, 1)
    rows = np.arange(L)
    in_tree = np.zeros((L, n), dtype=bool)
    in_tree[:, 0] = True
    best = w[:, 0, :].copy()          # cheapest known edge from the tree to each node
    parent = np.zeros((L, n), dtype=np.int64)
    edges: list[set[tuple[int, int]]] = [set() for _ in range(L)]
    for _ in range(n - 1):
        j = np.argmin(np.where(in_tree, np.inf, best), axis=1)
        in_tree[rows, j] = True
        for k in range(L):
            a, b = int(parent[k, j[k]]), int(j[k])
            edges[k].add((min(a, b), max(a, b)))
        closer = w[rows, j, :] < best
        best = np.where(closer, w[rows, j, :], best)
        parent = np.where(closer, j[:, None], parent)
    return edges


def uuas_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], heads_list: Sequence[Sequence[int]],
                  upos_list: Optional[Sequence[Sequence[str]]] = None) -> list[float]:
    """:func:`uuas` of each layer's predicted distances against the same gold trees."""
    L = count_layers(preds_by_layer, heads_list, "uuas")
    if upos_list is not None and len(upos_list) != len(heads_list):
        raise ValueError("uuas: upos_list and heads_list differ in length")
    hit = np.zeros(L, dtype=np.int64)
    total = 0
    for s, heads in enumerate(heads_list):
        h = check_heads(heads)
        n = h.size
        P = stack_layers(preds_by_layer, s, (n, n), 2, "uuas")
        idx, gold = _kept_gold_edges(h, None if upos_list is None else upos_list[s], s)
        if not gold:
            continue
        for k, pred in enumerate(mst_edges_by_layer(P[:, idx][:, :, idx])):
            hit[k] += len(pred & gold)
        total += len(gold)
    return [h / total if total else float("nan") for h in hit.tolist()]
