"""Bootstrap of the structural-probe scores over test sentences (Hewitt & Manning, NAACL 2019).

A probe's NSpr, DSpr, UUAS and root accuracy are computed from per-sentence quantities, and the
unit that is sampled is the sentence (the treebank's test split), not the word: words of a
sentence are not independent. These functions resample sentences and recompute the aggregate
exactly as :mod:`mmdiag.metrics.probe_scores` / :mod:`mmdiag.metrics.probe_recovery` do on the
resampled list of sentences:

* NSpr / DSpr (:func:`grouped_statistic`): per-sentence score ρ_s, mean per sentence length,
  then the mean over the lengths in [5, 50] present in the resample (Hewitt's macro-average),
  or over every length present when the resample has no scored sentence in range (the metric's
  fallback for short captions); sentences whose score is undefined (NaN) are drawn like the
  others but count nowhere, as the metric skips them;
* UUAS and root accuracy (:func:`ratio_statistic`): the pooled ratio
  Σ_s c_s hits_s / Σ_s c_s totals_s (edges correct over gold edges, summed over sentences).

The per-sentence inputs come from the metrics themselves (:func:`nspr_items`,
:func:`dspr_items`, :func:`uuas_items`, :func:`root_accuracy_items`).

What these intervals do NOT cover: the variance of probe training (another seed of the probe's
initialisation or of its minibatch order gives another probe), the choice of the train/dev/test
split, and the treebank's sampling of genres: they are the variability over the draw of test
sentences for a fixed trained probe. Because the macro-average gives each length one vote, a
length with one sentence moves the score in and out of the average as the resamples include it
or not; that is part of the metric's real sampling variability and the intervals keep it.

>>> scores = [0.9, 0.8, 0.5, 0.7]; lengths = [6, 6, 12, 3]
>>> stat = grouped_statistic(scores, lengths)
>>> round(stat.point(), 6)                 # mean(0.85 [length 6], 0.5 [length 12]); 3 is out of range
0.675
>>> ci = bootstrap_grouped(scores, lengths, boot=200, seed=0)
>>> ci.low <= ci.high and ci.se > 0
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from mmdiag.metrics.probe_recovery import _kept_gold_edges, mst_edges_by_layer, root_accuracy, uuas
from mmdiag.metrics.probe_scores import (count_layers, dspr_by_sentence, dspr_details, nspr_by_sentence,
                                         nspr_details, stack_layers)
from mmdiag.metrics.probe_trees import check_heads
from mmdiag.uncertainty.bootstrap import (MEMORY_BUDGET, BatchedStatistic, bootstrap,
                                          interval_from_replicates, resample_counts, resample_indices)
from mmdiag.uncertainty.interval import Interval

__all__ = [
    "ItemScores",
    "nspr_items",
    "dspr_items",
    "uuas_items",
    "root_accuracy_items",
    "nspr_items_by_layer",
    "dspr_items_by_layer",
    "uuas_items_by_layer",
    "grouped_statistic",
    "grouped_difference_statistic",
    "ratio_statistic",
    "bootstrap_grouped",
    "bootstrap_grouped_layers",
    "bootstrap_grouped_difference",
    "bootstrap_ratio",
]


@dataclass(frozen=True)
class ItemScores:
    """Per-sentence inputs of a probe metric: ``values[s]`` (NaN = skipped) and ``groups[s]`` (length),
    or for a pooled ratio the numerator ``values[s]`` and the denominator ``totals[s]``."""

    values: np.ndarray
    groups: Optional[np.ndarray] = None
    totals: Optional[np.ndarray] = None


def nspr_items(pred_depths: Sequence[np.ndarray], gold_depths: Sequence[np.ndarray]) -> ItemScores:
    """ρ_s and the length of each sentence, from :func:`~mmdiag.metrics.probe_scores.nspr_details` of the sentence alone."""
    if len(pred_depths) != len(gold_depths):
        raise ValueError(f"nspr: {len(pred_depths)} predictions but {len(gold_depths)} gold sentences")
    values = [nspr_details([p], [g], 0, 10**9)["value"] for p, g in zip(pred_depths, gold_depths)]
    return ItemScores(np.asarray(values, dtype=np.float64),
                      np.asarray([np.asarray(g).size for g in gold_depths], dtype=np.int64))


def dspr_items(pred_dist: Sequence[np.ndarray], gold_dist: Sequence[np.ndarray]) -> ItemScores:
    """r_s (the mean row Spearman) and the length of each sentence, from ``dspr_details`` of the sentence alone."""
    if len(pred_dist) != len(gold_dist):
        raise ValueError(f"dspr: {len(pred_dist)} predictions but {len(gold_dist)} gold sentences")
    values = [dspr_details([p], [g], 0, 10**9)["value"] for p, g in zip(pred_dist, gold_dist)]
    return ItemScores(np.asarray(values, dtype=np.float64),
                      np.asarray([np.asarray(g).shape[0] for g in gold_dist], dtype=np.int64))


def uuas_items(pred_dist: Sequence[np.ndarray], heads_list: Sequence[Sequence[int]],
               upos_list: Optional[Sequence[Sequence[str]]] = None) -> ItemScores:
    """Per sentence: correct edges (``values``) and gold edges (``totals``) of :func:`~mmdiag.metrics.probe_recovery.uuas`.

    The gold edges between non-punctuation words are counted with the metric's own helper; the
    correct ones are ``uuas`` of the sentence alone times that count.
    """
    if len(pred_dist) != len(heads_list):
        raise ValueError(f"uuas: {len(pred_dist)} predictions but {len(heads_list)} gold trees")
    hits, totals = [], []
    for k, (p, heads) in enumerate(zip(pred_dist, heads_list)):
        upos = None if upos_list is None else [upos_list[k]]
        total = len(_kept_gold_edges(check_heads(heads), None if upos is None else upos[0], k)[1])
        hits.append(round(uuas([p], [heads], upos) * total) if total else 0)
        totals.append(total)
    return ItemScores(np.asarray(hits, dtype=np.float64), totals=np.asarray(totals, dtype=np.float64))


def root_accuracy_items(pred_depths: Sequence[np.ndarray], heads_list: Sequence[Sequence[int]],
                        upos_list: Optional[Sequence[Sequence[str]]] = None) -> ItemScores:
    """Per sentence: root found (0/1) and counted (0 when the sentence has no non-punctuation word)."""
    if len(pred_depths) != len(heads_list):
        raise ValueError(f"root_accuracy: {len(pred_depths)} predictions but {len(heads_list)} gold trees")
    hits, totals = [], []
    for k, (p, heads) in enumerate(zip(pred_depths, heads_list)):
        value = root_accuracy([p], [heads], None if upos_list is None else [upos_list[k]])
        counted = not math.isnan(value)
        hits.append(value if counted else 0.0)
        totals.append(1.0 if counted else 0.0)
    return ItemScores(np.asarray(hits, dtype=np.float64), totals=np.asarray(totals, dtype=np.float64))


def nspr_items_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]],
                        gold_depths: Sequence[np.ndarray]) -> ItemScores:
    """ρ_s of every layer at once: ``values`` (L, S), ``groups`` (S,) the sentence lengths.

    :func:`~mmdiag.metrics.probe_scores.nspr_by_sentence`, the values
    :func:`~mmdiag.metrics.probe_scores.nspr_details_by_layer` averages; row l is :func:`nspr_items` of layer l.
    """
    return ItemScores(*nspr_by_sentence(preds_by_layer, gold_depths))


def dspr_items_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]],
                        gold_dist: Sequence[np.ndarray]) -> ItemScores:
    """r_s of every layer at once (``values`` (L, S)), as :func:`~mmdiag.metrics.probe_scores.dspr_by_sentence`."""
    return ItemScores(*dspr_by_sentence(preds_by_layer, gold_dist))


def uuas_items_by_layer(preds_by_layer: Sequence[Sequence[np.ndarray]], heads_list: Sequence[Sequence[int]],
                        upos_list: Optional[Sequence[Sequence[str]]] = None) -> ItemScores:
    """Correct edges of every layer (``values`` (L, S)) and gold edges (``totals`` (S,)) per sentence.

    The same trees as :func:`~mmdiag.metrics.probe_recovery.uuas_by_layer` (one Prim's run for all
    layers, :func:`~mmdiag.metrics.probe_recovery.mst_edges_by_layer`), so
    ``values[l].sum() / totals.sum()`` is its value for layer l exactly, ties included (where
    :func:`uuas_items`, tree by tree with scipy, may pick another minimum spanning tree).
    """
    L = count_layers(preds_by_layer, heads_list, "uuas")
    hits, totals = np.zeros((L, len(heads_list))), np.zeros(len(heads_list))
    for s, heads in enumerate(heads_list):
        h = check_heads(heads)
        idx, gold = _kept_gold_edges(h, None if upos_list is None else upos_list[s], s)
        if not gold:
            continue
        P = stack_layers(preds_by_layer, s, (h.size, h.size), 2, "uuas")
        hits[:, s] = [len(pred & gold) for pred in mst_edges_by_layer(P[:, idx][:, :, idx])]
        totals[s] = len(gold)
    return ItemScores(hits, totals=totals)


def _grouped_columns(values: np.ndarray, groups: np.ndarray, min_group: int, max_group: int, name: str):
    """The batched macro-average of each column of ``values`` (S, C) over the same resampled items.

    Returns ``(fn, n, bytes_per_resample)`` with ``fn(idx (b, m)) -> (b, C)``: column j is the
    statistic of :func:`grouped_statistic` on ``values[:, j]``, all columns on the same resamples.
    """
    if values.ndim != 2 or values.shape[0] != groups.size:
        raise ValueError(f"{name}: {values.shape[0] if values.ndim == 2 else values.size} scores but "
                         f"{groups.size} groups")
    if values.shape[0] == 0:
        raise ValueError(f"{name} needs at least one item")
    n, cols = values.shape
    labels, inverse = np.unique(groups, return_inverse=True)
    scored = ~np.isnan(values)                                          # (S, C)
    onehot = np.zeros((n, labels.size))
    onehot[np.arange(n), inverse] = 1.0
    # member[s, g, j]: item s is in group g and scored in column j; weighted: times its score
    member = onehot[:, :, None] * scored[:, None, :]
    weighted = member * np.where(scored, values, 0.0)[:, None, :]
    member = torch.from_numpy(member.reshape(n, -1))
    weighted = torch.from_numpy(weighted.reshape(n, -1))
    in_range = torch.from_numpy((labels >= min_group) & (labels <= max_group))[None, :, None]
    shape = (labels.size, cols)

    def fn(idx: torch.Tensor) -> torch.Tensor:
        c = resample_counts(idx.cpu(), n)
        count = (c @ member).reshape(-1, *shape)
        total = (c @ weighted).reshape(-1, *shape)
        present = count > 0
        means = total / torch.where(present, count, torch.ones_like(count))
        used = present & in_range
        used = torch.where(used.any(dim=1, keepdim=True), used, present)
        k = used.sum(dim=1)
        value = (means * used).sum(dim=1) / k.clamp(min=1)
        return torch.where(k > 0, value, torch.full_like(value, math.nan))

    return fn, n, 8 * (n + 3 * labels.size * cols)


def grouped_statistic(scores_by_item: Sequence[float], groups: Sequence[int], min_group: int = 5,
                      max_group: int = 50) -> BatchedStatistic:
    """Batched "mean per group, then mean over groups in [min_group, max_group]" over resampled items.

    For counts c of a resample: m_g = Σ_{s in g, ρ_s defined} c_s ρ_s / Σ_{s in g, ρ_s defined} c_s
    for each group g with at least one drawn scored item; the value is the mean of m_g over those g
    in range, or over all of them when none is in range (the fallback of
    :func:`mmdiag.metrics.probe_scores.nspr_details`); NaN when the resample has no scored item.
    O(b·S·G) per chunk for S items in G groups.
    """
    values = np.asarray(scores_by_item, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if values.shape != g.shape:
        raise ValueError(f"bootstrap_grouped: {values.size} scores but {g.size} groups")
    fn, n, per = _grouped_columns(values[:, None], g, min_group, max_group, "bootstrap_grouped")
    return BatchedStatistic(lambda idx: fn(idx)[:, 0], n, torch.device("cpu"), per, "grouped_mean")


def grouped_difference_statistic(scores_a: Sequence[float], scores_b: Sequence[float], groups: Sequence[int],
                                 min_group: int = 5, max_group: int = 50) -> BatchedStatistic:
    """Batched difference A − B of two macro-averages (:func:`grouped_statistic`) over the SAME sentences.

    ``scores_a[s]`` and ``scores_b[s]`` are two scores of the same sentence s (of length
    ``groups[s]``), e.g. DSpr at the best layer and at layer 0, or of the probe and of its control
    task. Both averages are taken on one resample of the sentences (paired resampling), so the
    interval of the difference keeps their correlation; resampling them independently would
    overstate its spread.
    """
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if a.shape != b.shape or a.shape != g.shape:
        raise ValueError(f"bootstrap_grouped_difference: {a.size} and {b.size} scores for {g.size} groups "
                         "(the same sentences are needed on both sides)")
    fn, n, per = _grouped_columns(np.stack([a, b], axis=1), g, min_group, max_group,
                                  "bootstrap_grouped_difference")

    def diff(idx: torch.Tensor) -> torch.Tensor:
        both = fn(idx)
        return both[:, 0] - both[:, 1]

    return BatchedStatistic(diff, n, torch.device("cpu"), per, "grouped_mean_difference")


def ratio_statistic(numerators: Sequence[float], denominators: Sequence[float]) -> BatchedStatistic:
    """Batched pooled ratio Σ_s c_s num_s / Σ_s c_s den_s over resampled items (NaN when the denominator is 0)."""
    num = torch.as_tensor(np.asarray(numerators, dtype=np.float64).reshape(-1))
    den = torch.as_tensor(np.asarray(denominators, dtype=np.float64).reshape(-1))
    if num.shape != den.shape or num.numel() == 0:
        raise ValueError(f"bootstrap_ratio: need as many numerators as denominators (>= 1), got "
                         f"{num.numel()} and {den.numel()}")
    n = num.numel()

    def fn(idx: torch.Tensor) -> torch.Tensor:
        c = resample_counts(idx.cpu(), n)
        top, bottom = c @ num, c @ den
        return torch.where(bottom > 0, top / torch.where(bottom > 0, bottom, torch.ones_like(bottom)),
                           torch.full_like(top, math.nan))

    return BatchedStatistic(fn, n, torch.device("cpu"), 8 * 2 * n, "pooled_ratio")


def bootstrap_grouped(scores_by_item: Sequence[float], groups: Sequence[int], boot: int, seed: int,
                      level: float = 0.95, min_group: int = 5, max_group: int = 50,
                      method: str = "percentile",
                      memory_budget: int = MEMORY_BUDGET) -> Optional[Interval]:
    """Interval of NSpr/DSpr-style macro-averages over resampled sentences; None when ``boot == 0``.

    ``scores_by_item[s]``: sentence s's score (NaN = undefined, skipped); ``groups[s]``: its
    length. See :func:`grouped_statistic` for the statistic; the bootstrap is
    :func:`~mmdiag.uncertainty.bootstrap.bootstrap` over the sentences.
    """
    stat = grouped_statistic(scores_by_item, groups, min_group, max_group)
    return bootstrap(stat, stat.n, boot, seed, level, method=method, memory_budget=memory_budget)


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], boot: int, seed: int,
                    level: float = 0.95, method: str = "percentile",
                    memory_budget: int = MEMORY_BUDGET) -> Optional[Interval]:
    """Interval of a pooled ratio (UUAS: correct edges / gold edges) over resampled sentences; None when ``boot == 0``."""
    stat = ratio_statistic(numerators, denominators)
    return bootstrap(stat, stat.n, boot, seed, level, method=method, memory_budget=memory_budget)


def bootstrap_grouped_layers(scores_by_layer: np.ndarray, groups: Sequence[int], boot: int, seed: int,
                             level: float = 0.95, min_group: int = 5, max_group: int = 50,
                             method: str = "percentile",
                             memory_budget: int = MEMORY_BUDGET) -> Optional[list[Interval]]:
    """:func:`bootstrap_grouped` of each row of ``scores_by_layer`` (L, S) on the same resamples; None when boot == 0.

    One pass over the resamples re-averages all L layers' per-sentence scores at once (no
    metric is recomputed). Interval l equals ``bootstrap_grouped(scores_by_layer[l], groups, boot,
    seed, ...)`` (the resamples are the same seeded stream; tested). ``method="bca"`` needs each
    layer's jackknife and is done layer by layer.
    """
    values = np.asarray(scores_by_layer, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"bootstrap_grouped_layers needs scores of shape (L, S), got {values.shape}")
    if boot == 0:
        return None
    if method != "percentile":
        return [bootstrap_grouped(row, groups, boot, seed, level, min_group, max_group, method, memory_budget)
                for row in values]
    if boot < 0:
        raise ValueError(f"bootstrap needs boot >= 0, got {boot}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap needs 0 < level < 1, got {level}")
    fn, n, per = _grouped_columns(values.T, np.asarray(groups).reshape(-1), min_group, max_group,
                                  "bootstrap_grouped_layers")
    step = max(1, min(boot, int(memory_budget) // max(per, 1)))
    reps = torch.cat([fn(resample_indices(n, min(step, boot - start), seed, start=start))
                      for start in range(0, boot, step)])                      # (B, L)
    return [interval_from_replicates(reps[:, l], level) for l in range(values.shape[0])]


def bootstrap_grouped_difference(scores_a: Sequence[float], scores_b: Sequence[float], groups: Sequence[int],
                                 boot: int, seed: int, level: float = 0.95, min_group: int = 5,
                                 max_group: int = 50, method: str = "percentile",
                                 memory_budget: int = MEMORY_BUDGET) -> Optional[Interval]:
    """Interval of the difference of two macro-averages over the same sentences resampled in pairs; None when boot == 0.

    See :func:`grouped_difference_statistic`. What it does not cover: a layer chosen as the best
    on the data (``probe.selectivity``, ``probe.scene_vs_raw``) is held fixed, not re-chosen per
    resample.
    """
    stat = grouped_difference_statistic(scores_a, scores_b, groups, min_group, max_group)
    return bootstrap(stat, stat.n, boot, seed, level, method=method, memory_budget=memory_budget)
