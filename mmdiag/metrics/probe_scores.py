"""Spearman metrics of structural probes, NSpr and DSpr (Hewitt & Manning, NAACL 2019).

Structural probes (Hewitt & Manning, "A Structural Probe for Finding Syntax in
Word Representations", NAACL 2019, code john-hewitt/structural-probes; reused by
Milewski et al., "Finding Structural Knowledge in Multimodal-BERT", ACL 2022,
arXiv:2203.09306) predict a word's depth in the dependency tree, or the tree
distance between two words, from the word's hidden state.  This module scores
such predictions by rank correlation with the gold structure; it is model-free:
inputs are per-sentence numpy arrays.

* :func:`nspr` / :func:`nspr_details` — "NSpr": Spearman correlation of
  predicted vs gold depths per sentence;
* :func:`dspr` / :func:`dspr_details` — "DSpr": Spearman correlation of each
  word's row of the predicted vs gold distance matrix;
* :func:`nspr_details_by_layer` / :func:`dspr_details_by_layer` — the same for
  every layer of a probe run at once.

Both are averaged in Hewitt's way: per sentence, then per sentence length, then
macro-averaged over the lengths ``min_len..max_len`` (5–50 in the paper), so
that each length counts once however many sentences have it.  Image captions
are often shorter than 5 words; when no sentence has a length in range the
average is taken over every length present instead and the ``*_details``
functions report ``fallback=True``.

The tree-recovery metrics (root accuracy, UUAS) are in
:mod:`mmdiag.metrics.probe_recovery`; gold depths and distances come from
:func:`~mmdiag.metrics.probe_trees.tree_depths` and
:func:`~mmdiag.metrics.probe_trees.tree_distances`.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "spearman_rows",
    "nspr",
    "nspr_details",
    "dspr",
    "dspr_details",
    "nspr_details_by_layer",
    "dspr_details_by_layer",
    "count_layers",
    "stack_layers",
]


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


# --------------------------------------------------------------------------
# every layer at once
# --------------------------------------------------------------------------
# A probe run scores L layers against the same gold trees.  These functions
# return exactly ``[f(p, gold) for p in preds_by_layer]`` for the metric f
# named, but rank the gold once per sentence and every layer's predictions of a
# sentence in one call (about L times fewer calls than layer by layer).

def count_layers(preds_by_layer: Sequence[Sequence[np.ndarray]], gold: Sequence, name: str) -> int:
    """The number of layers L, after checking that each layer has one prediction per gold sentence."""
    for k, preds in enumerate(preds_by_layer):
        if len(preds) != len(gold):
            raise ValueError(f"{name}: layer {k}: {len(preds)} predictions but {len(gold)} gold sentences")
    return len(preds_by_layer)


def stack_layers(preds_by_layer: Sequence[Sequence[np.ndarray]], s: int, shape: tuple, ndim: int,
                 name: str) -> np.ndarray:
    """Sentence ``s``'s predictions of every layer as one (L, *shape) float64 array, checked against ``shape``."""
    P = np.stack([np.asarray(preds[s], dtype=np.float64) for preds in preds_by_layer])
    if P.shape[1:] != shape or len(shape) != ndim or (ndim == 2 and shape[0] != shape[1]):
        raise ValueError(f"{name}: sentence {s}: prediction shape {P.shape[1:]} does not match gold shape {shape} "
                         f"(expected {ndim}-D{', square' if ndim == 2 else ''})")
    return P


def sentence_scores_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold: Sequence[np.ndarray], ndim: int,
                             name: str, sentence_scores: Callable[[np.ndarray, np.ndarray], np.ndarray]
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(scores (L, S), lengths (S,)): ``sentence_scores(P, g)`` of every sentence for all layers at once
    (NaN = sentence skipped), the per-sentence values that the length averages and their bootstrap share."""
    L = count_layers(preds_by_layer, gold, name)
    scores = np.full((L, len(gold)), np.nan)
    for s, g in enumerate(gold):
        g = np.asarray(g, dtype=np.float64)
        scores[:, s] = sentence_scores(stack_layers(preds_by_layer, s, g.shape, ndim, name), g)
    return scores, np.asarray([np.asarray(g).shape[0] for g in gold], dtype=np.int64)


def details_from_sentence_scores(scores: np.ndarray, lengths: np.ndarray, min_len: int = 5,
                                 max_len: int = 50) -> list[dict]:
    """Per layer (row of ``scores``), the :func:`_length_average` of its per-sentence values."""
    out = []
    for row in scores:
        kept = [(int(n), float(v)) for n, v in zip(lengths.tolist(), row.tolist()) if not np.isnan(v)]
        out.append(_length_average(kept, int(np.isnan(row).sum()), min_len, max_len))
    return out


def _details_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold: Sequence[np.ndarray], ndim: int,
                      name: str, sentence_scores: Callable[[np.ndarray, np.ndarray], np.ndarray], min_len: int,
                      max_len: int) -> list[dict]:
    """Per layer, :func:`_length_average` of ``sentence_scores(P, g)`` ((L,), NaN = sentence skipped)."""
    scores, lengths = sentence_scores_by_layer(preds_by_layer, gold, ndim, name, sentence_scores)
    return details_from_sentence_scores(scores, lengths, min_len, max_len)


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


def nspr_by_sentence(preds_by_layer: Sequence[Sequence[np.ndarray]], gold_depths: Sequence[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """ρ_s of every layer and sentence ((L, S)) and the sentence lengths: what :func:`nspr_details_by_layer` averages."""
    return sentence_scores_by_layer(preds_by_layer, gold_depths, 1, "nspr", _nspr_sentence)


def dspr_by_sentence(preds_by_layer: Sequence[Sequence[np.ndarray]], gold_dist: Sequence[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """r_s of every layer and sentence ((L, S)) and the sentence lengths: what :func:`dspr_details_by_layer` averages."""
    return sentence_scores_by_layer(preds_by_layer, gold_dist, 2, "dspr", _dspr_sentence)


def nspr_details_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold_depths: Sequence[np.ndarray],
                          min_len: int = 5, max_len: int = 50) -> list[dict]:
    """:func:`nspr_details` of each layer's predicted depths against the same gold depths."""
    return details_from_sentence_scores(*nspr_by_sentence(preds_by_layer, gold_depths), min_len, max_len)


def dspr_details_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], gold_dist: Sequence[np.ndarray],
                          min_len: int = 5, max_len: int = 50) -> list[dict]:
    """:func:`dspr_details` of each layer's predicted distances against the same gold distances."""
    return details_from_sentence_scores(*dspr_by_sentence(preds_by_layer, gold_dist), min_len, max_len)
