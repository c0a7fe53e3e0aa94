"""Structural-probe analyses: from recorded word/region states to per-layer probe scores.

Text: word states (mean of a word's sub-word tokens) against the gold
dependency trees (Hewitt & Manning 2019). Image: scene-tree node states
(image root + phrase regions) against the scene trees of Milewski et al. 2022.
Sentences are split train/dev/test (60/20/20, by seed); every score is on the
test part. Probes of all layers are fitted together in one batched program.
With ``boot > 0`` every per-layer score also gets a 95% bootstrap interval over
the test sentences (:mod:`mmdiag.uncertainty.grouped`), from the same test-set
predictions: the per-sentence scores are computed once and only re-averaged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmdiag.metrics.probe_recovery import mst_edges, root_accuracy
from mmdiag.metrics.probe_scores import details_from_sentence_scores, dspr_by_sentence, dspr_details, nspr_by_sentence
from mmdiag.probing.control import control_distances
from mmdiag.probing.data import ProbeData
from mmdiag.probing.fit import ProbeTask, fit_probes
from mmdiag.probing.splits import split_indices
from mmdiag.probing.states import StateView
from mmdiag.record import Activations
from mmdiag.uncertainty.grouped import (ItemScores, bootstrap_grouped_layers, bootstrap_ratio, dspr_items,
                                        root_accuracy_items, uuas_items_by_layer)
from mmdiag.uncertainty.interval import Interval

#: fewer annotated sentences than this cannot be split into useful train/dev/test parts
MIN_SENTENCES = 20
#: probes trained on fewer sentences than this score unreliably low: MiniLM-L6 on UD English EWT scores NSpr 0.59 /
#: UUAS 0.47 trained on 76 sentences, 0.79 / 0.69 on all 2,446 (60% of 4,077; Hewitt-protocol reference 0.785 / 0.671)
RELIABLE_TRAIN_SENTENCES = 500


def reliability_note(n_train: int, modality: str = "text") -> Optional[str]:
    """A warning to show with probe scores trained on fewer than :data:`RELIABLE_TRAIN_SENTENCES` sentences."""
    if n_train >= RELIABLE_TRAIN_SENTENCES:
        return None
    more = ("use a larger --mm-treebank (every sentence is used unless --mm-treebank-sentences caps it) "
            "or more --mm-samples" if modality == "text" else "give more --mm-samples")
    return (f"probes trained on {n_train} sentences (fewer than {RELIABLE_TRAIN_SENTENCES}): scores are unreliable, "
            f"typically too low; {more}")


@dataclass
class ProbeScores:
    """Depth and distance probe scores of every layer on the test split (:func:`probe_scores`).

    Per-layer lists have one entry per hidden-state layer (``layers``). A field of
    a probe kind that was not fitted (``kinds``), of gold trees without heads, or
    of the control task when it was not asked for, is None.
    """

    #: the layer indices scored, ``0 .. L-1`` (entry 0 = embedding output)
    layers: list[int]
    #: sentences in the train / dev / test splits
    n_train: int
    n_dev: int
    n_test: int
    #: the fitting regimen (``"fast"`` or ``"paper"``)
    regimen: str
    #: seconds spent fitting (all probes, control included)
    fit_s: float
    #: depth probe: per-layer NSpr (Spearman of predicted vs gold depth, averaged per length)
    nspr: Optional[list[float]] = None
    #: depth probe: the sentence lengths NSpr averaged over (None when no layer was scored)
    nspr_lengths: Any = None
    #: depth probe: NSpr fell back to all lengths (no sentence of length 5-50)
    nspr_fallback: Optional[bool] = None
    #: depth probe: per-layer root accuracy (gold heads needed)
    root_acc: Optional[list[float]] = None
    #: distance probe: per-layer DSpr (per-word Spearman of predicted vs gold distances)
    dspr: Optional[list[float]] = None
    #: distance probe: DSpr fell back to all lengths
    dspr_fallback: Optional[bool] = None
    #: distance probe: per-layer UUAS of the minimum spanning tree (gold heads needed)
    uuas: Optional[list[float]] = None
    #: distance probe: the longest test sentence at the best UUAS layer, ``{"layer", "words", "gold_heads",
    #: "pred_edges"}`` (gold heads needed)
    example: Optional[dict[str, Any]] = None
    #: control task (``control=True``): the layer of the best test DSpr it was fitted at
    control_layer: Optional[int] = None
    #: control task: the control probe's test DSpr at ``control_layer``
    control_dspr: Optional[float] = None
    # -- uncertainty (``boot > 0``; None otherwise): bootstrap over the test sentences, probes held fixed --
    #: per-layer interval of ``nspr`` / ``root_acc`` / ``dspr`` / ``uuas``
    nspr_ci: Optional[list[Interval]] = None
    root_acc_ci: Optional[list[Interval]] = None
    dspr_ci: Optional[list[Interval]] = None
    uuas_ci: Optional[list[Interval]] = None
    #: the per-test-sentence scores behind them: ``values`` (L, S) and ``groups`` (S,) the lengths, for
    #: paired intervals of differences (:func:`~mmdiag.uncertainty.grouped.bootstrap_grouped_difference`)
    nspr_items: Optional[ItemScores] = None
    dspr_items: Optional[ItemScores] = None
    #: the control probe's per-test-sentence DSpr at ``control_layer`` (``values`` (S,), same sentences)
    control_items: Optional[ItemScores] = None
    #: how the gold structure was read (``punctuation`` and, per source, how many sentences read it:
    #: ``punctuation_sentences``; ``scene_regions`` for scene trees), for results.json details
    conventions: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeSet:
    """States and gold trees of one modality, ready to probe."""

    data: ProbeData
    words: list[tuple[str, ...]]
    kept: list[int] = field(default_factory=list)  # sample indices
    #: facts about how the gold structure was built, copied into :attr:`ProbeScores.conventions`
    conventions: dict[str, Any] = field(default_factory=dict)


def text_probe_set(acts: Activations, samples: Sequence[Any], punctuation: str = "ptb") -> Optional[ProbeSet]:
    """Word states of samples with a gold tree whose words all survived tokenisation.

    ``punctuation`` (``ptb`` or ``upos``): the tags root accuracy and UUAS leave punctuation out by
    (:meth:`~mmdiag.probing.data.ProbeData.from_trees`)."""
    if acts.word_states is None:
        return None
    offsets = np.concatenate([[0], np.cumsum(acts.word_counts)])
    keep, index, trees = [], [], []
    for i, s in enumerate(samples):
        if s.tree is None or i >= len(acts.word_counts):
            continue
        n = len(s.tree.heads)
        if acts.word_counts[i] != n or n < 2:
            continue  # truncated or one-word sentences cannot be scored
        keep.append(i)
        trees.append(s.tree)
        index.extend(range(int(offsets[i]), int(offsets[i]) + n))
    if not keep:
        return None
    states = _states(acts.word_states, acts.word_files, index)
    return ProbeSet(ProbeData.from_trees(states, trees, punctuation), [t.words for t in trees], keep)


def image_probe_set(acts: Activations, samples: Sequence[Any]) -> Optional[ProbeSet]:
    """Region states (image root + one per region) of samples with a scene tree, and their gold targets.

    The regions are ``Sample.phrases`` (one per box or per entity, ``--mm-scene-regions``), each on the
    scene node ``Sample.region_nodes`` names; gold depths and distances are their nodes' (0 between boxes of
    one entity) and the UUAS gold edges the spanning tree of those distances
    (:func:`~mmdiag.data.scene_tree.region_targets`, Milewski et al. 2022)."""
    from mmdiag.data.scene_tree import region_targets

    if acts.region_states is None:
        return None
    offsets = np.concatenate([[0], np.cumsum(acts.region_counts)])
    keep, index, heads, depths, dists, words = [], [], [], [], [], []
    for i, s in enumerate(samples):
        if i >= len(acts.region_counts) or acts.region_counts[i] < 3 or not s.scene_parents:
            continue  # the image plus at least two regions, or there is no structure to probe
        n = acts.region_counts[i]
        if n != 1 + len(s.phrases):
            continue  # the adapter's regions are not the sample's (cannot be matched to scene nodes)
        h, d, dist = region_targets(s.scene_parents, getattr(s, "region_nodes", ()), len(s.phrases))
        keep.append(i)
        heads.append(h)
        depths.append(d)
        dists.append(dist)
        words.append(("<image>",) + tuple(p.label or " ".join(s.words[p.start:p.end]) for p in s.phrases))
        index.extend(range(int(offsets[i]), int(offsets[i]) + n))
    if not keep:
        return None
    states = _states(acts.region_states, acts.region_files, index)
    data = ProbeData(states=states, lengths=tuple(len(h) for h in heads), heads=tuple(heads),
                     depths=torch.as_tensor(np.concatenate(depths)), distances=dists)
    # regions probed, the image roots not counted: more under --mm-scene-regions=boxes than union
    return ProbeSet(data, words, keep, {"regions_probed": int(sum(data.lengths)) - len(keep)})


#: test sentences scored at a time: the predicted (n, n) distances of every layer are held for one chunk only,
#: so scoring a 40k-sentence treebank's test split holds a chunk's matrices, not the split's
SCORE_CHUNK = 512


def _distance_items(fit: Any, test: ProbeData, chunk: int = SCORE_CHUNK) -> tuple[tuple, Optional[ItemScores]]:
    """Per-sentence DSpr of every layer with the sentence lengths, and (with gold heads) the UUAS edge counts
    (:func:`~mmdiag.uncertainty.grouped.uuas_items_by_layer`: ``values[l].sum() / totals.sum()`` is layer l's
    UUAS exactly), scored ``chunk`` test sentences at a time."""
    scores, lengths, hits, totals = [], [], [], []
    for start in range(0, test.n_sentences, chunk):
        part = test.subset(range(start, min(test.n_sentences, start + chunk)))
        preds = fit.predict_distances(part)
        found, found_lengths = dspr_by_sentence(preds, part.gold_distances())
        scores.append(found)
        lengths.append(found_lengths)
        if part.heads is not None:
            edges = uuas_items_by_layer(preds, part.heads, part.upos)
            hits.append(edges.values)
            totals.append(edges.totals)
        del preds
    if not scores:  # no test sentence
        return (np.full((test.states.shape[0], 0), np.nan), np.zeros(0, dtype=np.int64)), None
    per_sentence = (np.concatenate(scores, axis=1), np.concatenate(lengths))
    edges = ItemScores(np.concatenate(hits, axis=1), totals=np.concatenate(totals)) if hits else None
    return per_sentence, edges


def _states(layers: list[torch.Tensor], files: Any, index: list[int]) -> Any:
    """The rows ``index`` of every layer: a :class:`StateView` of the files the states were recorded to (nothing
    read), or, for states held in memory (from the activation cache), one stacked ``(L, W, D)`` tensor."""
    if files is not None:
        return StateView(files, np.asarray(index, dtype=np.int64))
    idx = torch.as_tensor(index, device=layers[0].device)
    return torch.stack([layer.index_select(0, idx) for layer in layers])


def _with_targets(data: ProbeData, depths: Optional[list] = None, distances: Optional[list] = None) -> ProbeData:
    """The same states (the same tensor) with other gold targets."""
    return ProbeData(states=data.states, lengths=data.lengths, heads=data.heads, upos=data.upos,
                     depths=None if depths is None else torch.as_tensor(np.concatenate(depths)),
                     distances=distances, punct_sources=data.punct_sources)


def probe_scores(pset: ProbeSet, seed: int, regimen: str = "fast", rank: Optional[int] = None,
                 kinds: Sequence[str] = ("depth", "distance"), control: bool = False,
                 boot: int = 0, progress: Optional[Any] = None, label: str = "probe fitting") -> ProbeScores:
    """Fit and score depth and distance probes for every layer, all in one batched program.

    Returns the :class:`ProbeScores`: per-layer lists ``nspr``, ``root_acc`` (depth)
    and ``dspr``, ``uuas`` (distance) on the test split, the split sizes, fit
    seconds, and an example of predicted vs gold edges at the best distance layer.  ``control``: also
    fit a distance probe on the control task (Hewitt & Liang 2019) at the
    layer of the best test DSpr, ``control_layer``, and return its test DSpr
    there as ``control_dspr``: selectivity is read at that layer only, and
    layers are fitted independently, so the other twelve control probes would
    be thrown away (they were a third of the probe family's time).

    ``boot > 0``: also the ``*_ci`` intervals (``boot`` resamples of the test sentences, seeded by
    ``seed``) and the per-sentence ``*_items`` behind them; nothing is refitted. The statistic of
    ``nspr_ci[l]`` / ``dspr_ci[l]`` on the test sentences themselves is ``nspr[l]`` / ``dspr[l]``.
    ``progress``/``label``: shown while fitting (see :func:`~mmdiag.probing.fit.fit_probes`).
    """
    data = pset.data
    train_idx, dev_idx, test_idx = split_indices(data.n_sentences, seed)
    train, dev, test = data.subset(train_idx), data.subset(dev_idx), data.subset(test_idx)
    if control and "distance" not in kinds:
        raise ValueError("probe_scores: the control task is read at the best distance layer; include 'distance'")
    tasks = {kind: ProbeTask(kind, train, dev) for kind in kinds}
    fits = dict(zip(tasks, fit_probes(list(tasks.values()), rank=rank, regimen=regimen, seed=seed,
                                      progress=progress, label=label)))
    out = ProbeScores(layers=list(range(data.states.shape[0])), n_train=len(train_idx), n_dev=len(dev_idx),
                      n_test=len(test_idx), regimen=regimen,
                      fit_s=next(iter(fits.values())).seconds if fits else 0.0)
    out.conventions.update(pset.conventions)
    if data.punct_sources is not None:
        out.conventions["punctuation_sentences"] = data.punctuation_counts()
    if "depth" in fits:
        preds, gold = fits["depth"].predict_depths(test), test.gold_depths()
        per_sentence = nspr_by_sentence(preds, gold)  # one Spearman pass, for the scores and their bootstrap
        details = details_from_sentence_scores(*per_sentence)
        out.nspr = [d["value"] for d in details]
        out.nspr_lengths = details[0].get("lengths_used") if details else None
        out.nspr_fallback = bool(details[0].get("fallback")) if details else False
        if test.heads is not None:
            out.root_acc = [root_accuracy(p, test.heads, test.upos) for p in preds]
        if boot:
            out.nspr_items = ItemScores(*per_sentence)
            out.nspr_ci = bootstrap_grouped_layers(out.nspr_items.values, out.nspr_items.groups, boot, seed)
            if test.heads is not None:
                out.root_acc_ci = [_ratio_ci(root_accuracy_items(p, test.heads, test.upos), boot, seed)
                                   for p in preds]
    if "distance" in fits:
        per_sentence, edges = _distance_items(fits["distance"], test)
        details = details_from_sentence_scores(*per_sentence)
        out.dspr = [d["value"] for d in details]
        out.dspr_fallback = bool(details[0].get("fallback")) if details else False
        if boot:
            out.dspr_items = ItemScores(*per_sentence)
            out.dspr_ci = bootstrap_grouped_layers(out.dspr_items.values, out.dspr_items.groups, boot, seed)
        if edges is not None:
            total = float(edges.totals.sum())
            out.uuas = [float(hits.sum()) / total if total else float("nan") for hits in edges.values]
            if boot:
                out.uuas_ci = [bootstrap_ratio(hits, edges.totals, boot, seed) for hits in edges.values]
            best = int(np.nanargmax(out.uuas)) if out.uuas and not np.all(np.isnan(out.uuas)) else 0
            example = int(np.argmax(test.lengths))
            test_words = [pset.words[i] for i in test_idx]
            shown = fits["distance"].predict_distances(test.subset([example]))[best][0]
            out.example = {"layer": best, "words": list(test_words[example]),
                           "gold_heads": list(test.heads[example]),
                           "pred_edges": sorted([list(e) for e in mst_edges(shown)])}
    if control and not np.all(np.isnan(out.dspr)):
        layer = int(np.nanargmax(out.dspr))
        words = lambda idx: [pset.words[i] for i in idx]  # noqa: E731
        parts = [_with_targets(_layer(part, layer), distances=control_distances(words(idx), seed))
                 for part, idx in ((train, train_idx), (dev, dev_idx), (test, test_idx))]
        fit = fit_probes([ProbeTask("distance", parts[0], parts[1])], rank=rank, regimen=regimen, seed=seed,
                         progress=progress, label=f"{label}: control task at layer {layer}")[0]
        out.fit_s += fit.seconds
        out.control_layer = layer
        pred, gold = fit.predict_distances(parts[2])[0], parts[2].gold_distances()
        out.control_dspr = dspr_details(pred, gold)["value"]
        if boot:
            out.control_items = dspr_items(pred, gold)
    return out


def _ratio_ci(items: ItemScores, boot: int, seed: int) -> Optional[Interval]:
    return bootstrap_ratio(items.values, items.totals, boot, seed)


def _layer(data: ProbeData, layer: int) -> ProbeData:
    """One layer's states (a view) with the same sentences."""
    return ProbeData(states=data.states[layer:layer + 1], lengths=data.lengths, heads=data.heads, upos=data.upos,
                     depths=data.depths, distances=data.distances, punct_sources=data.punct_sources)


def best(values: Sequence[float]) -> tuple[int, float]:
    """(layer, value) of the highest finite score."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return -1, float("nan")
    k = int(np.nanargmax(arr))
    return k, float(arr[k])
