"""Evaluation metrics of structural probes (Hewitt & Manning, NAACL 2019).

Structural probes (Hewitt & Manning, "A Structural Probe for Finding Syntax in
Word Representations", NAACL 2019, code john-hewitt/structural-probes; reused by
Milewski et al., "Finding Structural Knowledge in Multimodal-BERT", ACL 2022,
arXiv:2203.09306) predict a word's depth in the dependency tree, or the tree
distance between two words, from the word's hidden state.  This module scores
such predictions against gold trees; it is model-free: inputs are per-sentence
numpy arrays.

* :func:`nspr` / :func:`nspr_details` — "NSpr": Spearman correlation of
  predicted vs gold depths per sentence;
* :func:`dspr` / :func:`dspr_details` — "DSpr": Spearman correlation of each
  word's row of the predicted vs gold distance matrix;
* :func:`root_accuracy` — the shallowest predicted non-punctuation word is the
  gold root;
* :func:`uuas` — undirected unlabelled attachment score of the minimum spanning
  tree over predicted distances.

Both Spearman metrics are averaged in Hewitt's way: per sentence, then per
sentence length, then macro-averaged over the lengths ``min_len..max_len``
(5–50 in the paper), so that each length counts once however many sentences
have it.  Image captions are often shorter than 5 words; when no sentence has a
length in range the average is taken over every length present instead and the
``*_details`` functions report ``fallback=True``.

Gold structure comes from head arrays in CoNLL-U convention (1-based, 0 = root):
:func:`tree_depths` and :func:`tree_distances` turn them into the probes'
targets.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.stats import rankdata

__all__ = [
    "PUNCT",
    "tree_depths",
    "tree_distances",
    "spearman_rows",
    "mst_edges",
    "nspr",
    "nspr_details",
    "dspr",
    "dspr_details",
    "root_accuracy",
    "uuas",
    "nspr_details_by_layer",
    "dspr_details_by_layer",
    "mst_edges_by_layer",
    "uuas_by_layer",
]

#: UPOS tag of the words excluded from root accuracy and UUAS.
PUNCT = "PUNCT"


# --------------------------------------------------------------------------
# gold structure
# --------------------------------------------------------------------------

def _check_heads(heads: Sequence[int]) -> np.ndarray:
    h = np.asarray(heads)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"heads: expected a non-empty 1-D sequence, got shape {h.shape}")
    if not np.issubdtype(h.dtype, np.integer):
        if not np.all(np.equal(np.mod(h, 1), 0)):
            raise ValueError("heads: expected integers (1-based, 0 = root)")
        h = h.astype(np.int64)
    n = h.size
    if h.min() < 0 or h.max() > n:
        raise ValueError(f"heads: each head must be in 0..{n} (0 = root)")
    if int(np.sum(h == 0)) != 1:
        raise ValueError(f"heads: exactly one word must have head 0, got {int(np.sum(h == 0))}")
    return h.astype(np.int64)


def _ancestor_matrix(heads: Sequence[int]) -> np.ndarray:
    """``A[i, k] = 1`` iff word ``k`` is word ``i`` or one of its ancestors."""
    h = _check_heads(heads)
    n = h.size
    anc = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        k, steps = i, 0
        while k >= 0:
            if anc[i, k]:
                raise ValueError("heads: the head relation has a cycle")
            anc[i, k] = 1
            k = h[k] - 1
            steps += 1
            if steps > n:
                raise ValueError("heads: the head relation has a cycle")
    return anc


def tree_depths(heads: Sequence[int]) -> np.ndarray:
    """Gold depth of every word: number of edges on its path to the root.

    ``heads`` is 1-based with 0 for the root (CoNLL-U HEAD column); the root has
    depth 0.  Raises ``ValueError`` unless ``heads`` is a tree.
    """
    return _ancestor_matrix(heads).sum(axis=1).astype(np.float64) - 1.0


def tree_distances(heads: Sequence[int]) -> np.ndarray:
    """Gold tree distance matrix: ``d_ij`` = number of edges between words i, j.

    Computed as ``depth_i + depth_j - 2 depth_lca(i, j)``, with
    ``depth_lca + 1`` = number of common ancestors-or-self (``A @ A.T``).
    """
    anc = _ancestor_matrix(heads)
    depth = anc.sum(axis=1) - 1
    common = anc @ anc.T
    return (depth[:, None] + depth[None, :] - 2 * (common - 1)).astype(np.float64)


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------

def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation of two arrays of shape ``(m, n)``.

    ``rho_k = pearson(rank(a_k), rank(b_k))`` with average ranks for ties (as
    ``scipy.stats.spearmanr``).  NaN where it is undefined: ``n < 2`` or a
    constant row in ``a`` or ``b``.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"spearman_rows: shapes differ or are not 2-D: {a.shape} vs {b.shape}")
    m, n = a.shape
    if n < 2:
        return np.full(m, np.nan)
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    num = np.sum(ra * rb, axis=1)
    den = np.sqrt(np.sum(ra * ra, axis=1) * np.sum(rb * rb, axis=1))
    out = np.full(m, np.nan)
    ok = den > 0
    out[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
    return out


def mst_edges(dist: np.ndarray) -> set[tuple[int, int]]:
    """Edges ``(i, j)``, ``i < j``, of a minimum spanning tree of ``dist``.

    The weight of edge ``{i, j}`` is ``dist[i, j]`` for ``i < j`` (the upper
    triangle, as Hewitt's code reads it).  ``scipy.sparse.csgraph`` treats a
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


def _pairs(pred: Sequence[np.ndarray], gold: Sequence[np.ndarray], ndim: int,
           name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(pred) != len(gold):
        raise ValueError(f"{name}: {len(pred)} predictions but {len(gold)} gold sentences")
    out = []
    for k, (p, g) in enumerate(zip(pred, gold)):
        p = np.asarray(p, dtype=np.float64)
        g = np.asarray(g, dtype=np.float64)
        if p.shape != g.shape or p.ndim != ndim or (ndim == 2 and p.shape[0] != p.shape[1]):
            raise ValueError(f"{name}: sentence {k}: prediction shape {p.shape} does not "
                             f"match gold shape {g.shape} (expected {ndim}-D"
                             f"{', square' if ndim == 2 else ''})")
        out.append((p, g))
    return out


def _length_average(scores: list[tuple[int, float]], n_skipped: int, min_len: int,
                    max_len: int) -> dict:
    by_len: dict[int, list[float]] = defaultdict(list)
    for n, s in scores:
        by_len[n].append(s)
    per_length = {n: float(np.mean(v)) for n, v in sorted(by_len.items())}
    used = [n for n in per_length if min_len <= n <= max_len]
    fallback = not used
    if fallback:
        used = list(per_length)
    value = float(np.mean([per_length[n] for n in used])) if used else float("nan")
    return {
        "value": value,
        "lengths_used": used,
        "fallback": fallback,
        "n_sentences": int(sum(len(by_len[n]) for n in used)),
        "n_skipped": int(n_skipped),
        "per_length": per_length,
    }


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

def nspr_details(pred_depths: Sequence[np.ndarray], gold_depths: Sequence[np.ndarray],
                 min_len: int = 5, max_len: int = 50) -> dict:
    """NSpr with its bookkeeping (Hewitt & Manning 2019, §4.1 "norm Spearman").

    ``rho_s = spearman(pred_s, gold_s)`` for each sentence ``s``;
    ``m_n = mean of rho_s over sentences of length n``;
    ``NSpr = mean of m_n over the lengths n in [min_len, max_len]`` that occur.
    Sentence length = number of words, punctuation included (as Hewitt's code).

    Sentences where Spearman is undefined (one word, or constant gold or
    predicted depths) are skipped and counted in ``n_skipped`` (Hewitt's code
    would propagate a NaN).  Fallback: when no scored sentence has a length in
    range, the mean is over every length present and ``fallback`` is True.
    No scored sentence at all gives ``value`` NaN.

    Returns ``{"value", "lengths_used", "fallback", "n_sentences" (scored
    sentences in the lengths used), "n_skipped", "per_length" {n: m_n}}``.
    """
    scores, skipped = [], 0
    for p, g in _pairs(pred_depths, gold_depths, 1, "nspr"):
        rho = spearman_rows(p[None, :], g[None, :])[0] if p.size else np.nan
        if np.isnan(rho):
            skipped += 1
        else:
            scores.append((p.size, float(rho)))
    return _length_average(scores, skipped, min_len, max_len)


def nspr(pred_depths: Sequence[np.ndarray], gold_depths: Sequence[np.ndarray],
         min_len: int = 5, max_len: int = 50) -> float:
    """NSpr (Hewitt & Manning 2019): see :func:`nspr_details` for the formula."""
    return nspr_details(pred_depths, gold_depths, min_len, max_len)["value"]


def dspr_details(pred_dist: Sequence[np.ndarray], gold_dist: Sequence[np.ndarray],
                 min_len: int = 5, max_len: int = 50) -> dict:
    """DSpr with its bookkeeping (Hewitt & Manning 2019, §4.1 "distance Spearman").

    For sentence ``s`` of length n and each word i:
    ``rho_si = spearman(pred_s[i, :], gold_s[i, :])`` — the row includes the
    word's zero distance to itself, as in Hewitt's code; ``r_s`` = mean of the
    defined ``rho_si``; then per length and macro over lengths in
    ``[min_len, max_len]`` as :func:`nspr_details` (same fallback, same keys).
    When no row is undefined this equals Hewitt's pooling of all rows of a
    length, since every sentence of a length has the same number of rows.
    Rows with a constant predicted row are skipped; a sentence with no defined
    row (one word, or all predicted distances equal) is skipped and counted.

    Chance level is NOT 0: the self-distance is the smallest entry of both
    rows, so even unrelated rows correlate.  Squared euclidean distances
    between random Gaussian vectors (D = 32) against uniformly random trees of
    5–20 words give DSpr ≈ 0.27 (``tests/metrics/test_probe_scores.py``;
    NSpr of their squared norms ≈ 0.03).  Compare with a control or a random
    baseline, not with 0.
    """
    scores, skipped = [], 0
    for p, g in _pairs(pred_dist, gold_dist, 2, "dspr"):
        if p.shape[0] < 2:
            skipped += 1
            continue
        rho = spearman_rows(p, g)
        ok = ~np.isnan(rho)
        if not ok.any():
            skipped += 1
        else:
            scores.append((p.shape[0], float(rho[ok].mean())))
    return _length_average(scores, skipped, min_len, max_len)


def dspr(pred_dist: Sequence[np.ndarray], gold_dist: Sequence[np.ndarray],
         min_len: int = 5, max_len: int = 50) -> float:
    """DSpr (Hewitt & Manning 2019): see :func:`dspr_details` for the formula."""
    return dspr_details(pred_dist, gold_dist, min_len, max_len)["value"]


def _keep_mask(n: int, upos: Optional[Sequence[str]], k: int, name: str) -> np.ndarray:
    if upos is None:
        return np.ones(n, dtype=bool)
    if len(upos) != n:
        raise ValueError(f"{name}: sentence {k}: {len(upos)} UPOS tags for {n} words")
    return np.array([u != PUNCT for u in upos], dtype=bool)


def root_accuracy(pred_depths: Sequence[np.ndarray], heads_list: Sequence[Sequence[int]],
                  upos_list: Optional[Sequence[Sequence[str]]] = None) -> float:
    """Root accuracy (Hewitt & Manning 2019, §4.1).

    ``mean over sentences of [argmin_{i not PUNCT} pred_i == gold root]``, the
    gold root being the word with head 0.  Words tagged ``PUNCT`` in
    ``upos_list`` are excluded from the argmin (none when ``upos_list`` is None).
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
        h = _check_heads(heads)
        if p.shape != h.shape:
            raise ValueError(f"root_accuracy: sentence {k}: {p.shape} predictions for "
                             f"{h.size} words")
        keep = _keep_mask(h.size, None if upos_list is None else upos_list[k], k,
                          "root_accuracy")
        if not keep.any():
            continue
        idx = np.flatnonzero(keep)
        pred_root = idx[int(np.argmin(p[idx]))]
        correct += int(pred_root == int(np.flatnonzero(h == 0)[0]))
        total += 1
    return correct / total if total else float("nan")


def _kept_gold_edges(h: np.ndarray, upos: Optional[Sequence[str]], k: int) -> tuple[np.ndarray, set]:
    """The words UUAS keeps (not PUNCT) and the gold edges between them, as pairs of positions among the kept."""
    idx = np.flatnonzero(_keep_mask(h.size, upos, k, "uuas"))
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

    For each sentence, the words not tagged ``PUNCT`` are kept; the predicted
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
        h = _check_heads(heads)
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
# A probe run scores L layers against the same gold trees.  These functions
# return exactly ``[f(p, gold) for p in preds_by_layer]`` for the metric f
# named, but rank the gold once per sentence and every layer's predictions of a
# sentence in one call (about L times fewer calls than layer by layer).

def _by_sentence(preds_by_layer: Sequence[Sequence[np.ndarray]], gold: Sequence, name: str) -> int:
    for k, preds in enumerate(preds_by_layer):
        if len(preds) != len(gold):
            raise ValueError(f"{name}: layer {k}: {len(preds)} predictions but {len(gold)} gold sentences")
    return len(preds_by_layer)


def _stacked(preds_by_layer: Sequence[Sequence[np.ndarray]], s: int, shape: tuple, ndim: int,
             name: str) -> np.ndarray:
    P = np.stack([np.asarray(preds[s], dtype=np.float64) for preds in preds_by_layer])
    if P.shape[1:] != shape or len(shape) != ndim or (ndim == 2 and shape[0] != shape[1]):
        raise ValueError(f"{name}: sentence {s}: prediction shape {P.shape[1:]} does not match gold shape {shape} "
                         f"(expected {ndim}-D{', square' if ndim == 2 else ''})")
    return P


def _details_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold: Sequence[np.ndarray], ndim: int,
                      name: str, sentence_scores: Callable[[np.ndarray, np.ndarray], np.ndarray], min_len: int,
                      max_len: int) -> list[dict]:
    """Per layer, :func:`_length_average` of ``sentence_scores(P, g)`` ((L,), NaN = sentence skipped)."""
    L = _by_sentence(preds_by_layer, gold, name)
    scores: list[list[tuple[int, float]]] = [[] for _ in range(L)]
    skipped = np.zeros(L, dtype=np.int64)
    for s, g in enumerate(gold):
        g = np.asarray(g, dtype=np.float64)
        values = sentence_scores(_stacked(preds_by_layer, s, g.shape, ndim, name), g)
        for k, v in enumerate(values.tolist()):
            if np.isnan(v):
                skipped[k] += 1
            else:
                scores[k].append((g.shape[0], float(v)))
    return [_length_average(scores[k], int(skipped[k]), min_len, max_len) for k in range(L)]


def _nspr_sentence(P: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Spearman of each layer's depths (L, n) with the gold depths (n,)."""
    return spearman_rows(P, np.broadcast_to(g, P.shape)) if g.size else np.full(P.shape[0], np.nan)


def _dspr_sentence(P: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Mean over defined rows of the row-wise Spearman of each layer's distances (L, n, n) with the gold (n, n)."""
    L, n = P.shape[0], g.shape[0]
    if n < 2:
        return np.full(L, np.nan)
    rho = spearman_rows(P.reshape(L * n, n), np.broadcast_to(g, P.shape).reshape(L * n, n)).reshape(L, n)
    ok = ~np.isnan(rho)
    return np.array([rho[k][ok[k]].mean() if ok[k].any() else np.nan for k in range(L)])


def nspr_details_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold_depths: Sequence[np.ndarray],
                          min_len: int = 5, max_len: int = 50) -> list[dict]:
    """:func:`nspr_details` of each layer's predicted depths against the same gold depths."""
    return _details_by_layer(preds_by_layer, gold_depths, 1, "nspr", _nspr_sentence, min_len, max_len)


def dspr_details_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold_dist: Sequence[np.ndarray],
                          min_len: int = 5, max_len: int = 50) -> list[dict]:
    """:func:`dspr_details` of each layer's predicted distances against the same gold distances."""
    return _details_by_layer(preds_by_layer, gold_dist, 2, "dspr", _dspr_sentence, min_len, max_len)


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
    L = _by_sentence(preds_by_layer, heads_list, "uuas")
    if upos_list is not None and len(upos_list) != len(heads_list):
        raise ValueError("uuas: upos_list and heads_list differ in length")
    hit = np.zeros(L, dtype=np.int64)
    total = 0
    for s, heads in enumerate(heads_list):
        h = _check_heads(heads)
        n = h.size
        P = _stacked(preds_by_layer, s, (n, n), 2, "uuas")
        idx, gold = _kept_gold_edges(h, None if upos_list is None else upos_list[s], s)
        if not gold:
            continue
        for k, pred in enumerate(mst_edges_by_layer(P[:, idx][:, :, idx])):
            hit[k] += len(pred & gold)
        total += len(gold)
    return [h / total if total else float("nan") for h in hit.tolist()]
