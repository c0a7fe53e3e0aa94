"""Modality-gap metrics.

* Gap vector and its norm ("L2M"): Liang et al., "Mind the Gap", NeurIPS 2022,
  arXiv:2203.02053 — ‖Δ‖ = 0.82 for CLIP ViT-B/32 on MSCOCO val.
* L2I (mean distance of matched pairs) and the relative modality gap (RMG):
  Schrodi et al. 2024, "Two effects, one trigger", arXiv:2404.07983.
* Separability: how well a linear classifier tells the two modalities apart.
* Retrieval recall@1 in both directions.

Several captions per image (COCO's five): the paired metrics take ``text_to_image`` (Schrodi et al.'s
``text_to_image_map``): ``img`` then holds each image once, ``txt`` every caption, and caption j's image is
``img[text_to_image[j]]``. Without it, row i of ``img`` and of ``txt`` are a pair.

Inputs are ``(n, d)`` numpy arrays or torch tensors (rows = samples); see
:mod:`mmdiag.metrics.cone` for the conventions (device, dtype, zero rows).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mmdiag.metrics.cone import mean_pairwise_cosine, normalize_rows, to_pair

__all__ = [
    "gap_vector",
    "gap_norm",
    "gap_l2i",
    "relative_modality_gap",
    "modality_separability",
    "retrieval_recall",
    "retrieval_hits",
    "separability_subsample",
]


def _paired(img: Any, txt: Any, text_to_image: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, captions, index of each caption's image row); the identity map without ``text_to_image``."""
    if text_to_image is None:
        a, b = to_pair(img, txt, same_n=True)
        return a, b, torch.arange(a.shape[0], device=a.device)
    a, b = to_pair(img, txt)
    index = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long).reshape(-1).to(a.device)
    if index.shape[0] != b.shape[0]:
        raise ValueError(f"text_to_image must map each of the {b.shape[0]} captions, got {index.shape[0]} entries")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= a.shape[0]):
        raise ValueError(f"text_to_image holds an image index outside 0..{a.shape[0] - 1}")
    return a, b, index


def gap_vector(img: Any, txt: Any) -> torch.Tensor:
    """Δ = mean_i normalize(img_i) − mean_j normalize(txt_j)  (arXiv:2203.02053, §4).

    ``img`` and ``txt`` may have different numbers of rows but the same width d.
    Returns a 1-D tensor of length d on the input's device.
    """
    a, b = to_pair(img, txt)
    return normalize_rows(a).mean(dim=0) - normalize_rows(b).mean(dim=0)


def gap_norm(img: Any, txt: Any) -> float:
    """‖Δ‖₂, the Euclidean distance between the modality centroids ("L2M").

    Δ as in :func:`gap_vector` (Liang et al. 2022, arXiv:2203.02053); in [0, 2].
    """
    return float(torch.linalg.vector_norm(gap_vector(img, txt)))


def gap_l2i(img: Any, txt: Any, text_to_image: Any = None) -> float:
    """L2I = (1/n) Σ_j ‖normalize(img_{m(j)}) − normalize(txt_j)‖₂ over the n captions.

    Schrodi et al. 2024 (arXiv:2404.07983); m = ``text_to_image`` (caption j's image row), the identity
    without it, which then requires the same n for both modalities (``ValueError`` otherwise); in [0, 2].
    """
    a, b, index = _paired(img, txt, text_to_image)
    diff = normalize_rows(a)[index] - normalize_rows(b)
    return float(torch.linalg.vector_norm(diff, dim=1).mean())


def relative_modality_gap(img: Any, txt: Any, text_to_image: Any = None) -> float:
    """Relative modality gap (Schrodi et al. 2024, arXiv:2404.07983).

    With the cosine dissimilarity d(a, b) = 1 − (cos(a, b) + 1)/2 ∈ [0, 1]:

    * d_m  = mean_j d(img_{m(j)}, txt_j) over the captions (m = ``text_to_image``, the identity without it),
    * d_ii = mean_{i≠k} d(img_i, img_k) over the distinct images, d_tt = mean_{j≠l} d(txt_j, txt_l),

    RMG = d_m / (d_m + (d_ii + d_tt)/2) ∈ [0, 1], with 0/0 defined as 0; a
    denominator below 1e-12 (all rows identical, up to rounding) counts as 0.
    The within-modality means use the O(n·d) identity of
    :func:`mmdiag.metrics.cone.mean_pairwise_cosine` (zero rows have cosine 0).
    Requires matched pairs (same n) without ``text_to_image``, and at least 2 images and 2 captions.
    """
    a, b, index = _paired(img, txt, text_to_image)
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"relative_modality_gap needs n >= 2 pairs, got {a.shape[0]} images, {b.shape[0]} captions")
    # d(a, b) = (1 − cos)/2 = ‖â − b̂‖²/4 for unit rows: the difference form is exactly 0 for identical rows
    # (1 − cos loses it to rounding); a zero row has cosine 0, so d = 1/2
    na, nb = normalize_rows(a)[index], normalize_rows(b)
    unit = (na.norm(dim=1) > 0) & (nb.norm(dim=1) > 0)
    d_rows = torch.where(unit, ((na - nb) ** 2).sum(dim=1) / 4.0, torch.full_like(unit, 0.5, dtype=na.dtype))
    d_m = float(d_rows.mean())
    d_ii = (1.0 - mean_pairwise_cosine(a)) / 2.0
    d_tt = (1.0 - mean_pairwise_cosine(b)) / 2.0
    d_m = min(1.0, max(0.0, d_m))
    denom = d_m + (d_ii + d_tt) / 2.0
    if denom <= 1e-12:
        return 0.0
    return min(1.0, max(0.0, d_m / denom))


#: smallest number of rows per modality :func:`modality_separability` accepts
MIN_ROWS_PER_MODALITY = 2


def modality_separability(img: Any, txt: Any, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear classifier telling image rows from text rows.

    Features are the L2-normalised rows; labels 1 (image) / 0 (text).  A
    scikit-learn ``LogisticRegression`` (default L2 penalty, C = 1) is scored
    with ``StratifiedKFold(k, shuffle=True, random_state=seed)``, k =
    min(folds, n_img, n_txt); the mean fold accuracy is returned (1.0 = the
    modalities occupy linearly separable regions, ≈ 0.5 = indistinguishable for
    balanced sets).  Needs at least ``MIN_ROWS_PER_MODALITY`` = 2 rows per
    modality and ``folds >= 2`` (``ValueError`` otherwise).  The data are
    copied to the CPU for scikit-learn.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    if folds < 2:
        raise ValueError(f"modality_separability needs folds >= 2, got {folds}")
    a, b = to_pair(img, txt)
    n_a, n_b = a.shape[0], b.shape[0]
    if min(n_a, n_b) < MIN_ROWS_PER_MODALITY:
        raise ValueError("modality_separability needs at least "
                         f"{MIN_ROWS_PER_MODALITY} rows per modality, got "
                         f"n_img={n_a}, n_txt={n_b}")
    feats = torch.cat([normalize_rows(a), normalize_rows(b)]).to("cpu", torch.float64).numpy()
    labels = np.concatenate([np.ones(n_a, dtype=np.int64), np.zeros(n_b, dtype=np.int64)])
    k = min(folds, n_a, n_b)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    clf = LogisticRegression(max_iter=1000)
    scores = cross_val_score(clf, feats, labels, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


#: above this many captions the gap.retrieval check bootstraps the captions against the fixed gallery: ranking
#: afresh per resample costs O(n_img·n_txt·d) each (12 s at 16k x 16k, d = 512, on 2 CPU cores)
RETRIEVAL_RERANK_ROWS = 4096
#: similarities held at a time by :func:`retrieval_recall` (float32: 64 MB): image rows are scored in blocks of
#: ``RETRIEVAL_BLOCK // n_txt`` so memory stays O(n_txt) per block, not O(n_img·n_txt)
RETRIEVAL_BLOCK = 1 << 24


def retrieval_recall(img: Any, txt: Any, text_to_image: Any = None,
                     block: int = RETRIEVAL_BLOCK) -> tuple[float, float]:
    """Recall@1 by cosine similarity: (image→text, text→image).

    image→text: the share of images whose most similar caption is one of their own (m(j) = i);
    text→image: the share of captions whose most similar image is their own (m(j)), with m =
    ``text_to_image`` as in Schrodi et al.'s evaluation (arXiv:2404.07983), the identity without it
    (then matched pairs, same n). A tie counts as a hit only when the first maximum is right
    (``argmax``). Chance is about 1/n_txt·(captions per image) and 1/n_img. The means of
    :func:`retrieval_hits`.

    >>> import torch
    >>> retrieval_recall(torch.eye(3), torch.eye(3))
    (1.0, 1.0)
    >>> retrieval_recall(torch.eye(3), torch.eye(3)[[1, 0, 2]])  # captions 0 and 1 swapped
    (0.3333333333333333, 0.3333333333333333)
    """
    i2t, t2i = retrieval_hits(img, txt, text_to_image, block)
    return (float(i2t.double().mean()) if i2t.numel() else float("nan"),
            float(t2i.double().mean()) if t2i.numel() else float("nan"))


def retrieval_hits(img: Any, txt: Any, text_to_image: Any = None,
                   block: int = RETRIEVAL_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, whether its most similar item is its own: (images (n_img,), captions (n_txt,)) bool tensors.

    What :func:`retrieval_recall` averages. The n_img × n_txt similarities are computed ``block`` at a
    time (whole image rows): time O(n_img·n_txt·d), memory O(block + n_txt). Blocks keep the first
    maximum of each caption's column (a later block wins only when strictly more similar), so the
    result equals one full matrix's.
    """
    a, b, index = _paired(img, txt, text_to_image)
    na, nb = normalize_rows(a), normalize_rows(b)
    n_img, n_txt = na.shape[0], nb.shape[0]
    rows = max(1, int(block) // max(1, n_txt))
    best = torch.full((n_txt,), -torch.inf, dtype=na.dtype, device=na.device)
    best_row = torch.zeros(n_txt, dtype=torch.long, device=na.device)
    i2t = torch.zeros(n_img, dtype=torch.bool, device=na.device)
    for start in range(0, n_img, rows):
        sim = na[start:start + rows] @ nb.T  # (rows, n_txt)
        row = sim.argmax(dim=0)  # the first maximum in this block
        value = sim.gather(0, row[None, :])[0]
        better = value > best
        best = torch.where(better, value, best)
        best_row = torch.where(better, row + start, best_row)
        own = torch.arange(start, start + sim.shape[0], device=na.device)
        i2t[start:start + sim.shape[0]] = index[sim.argmax(dim=1)] == own
    return i2t, best_row == index


#: rows per modality :func:`separability_subsample` fits on (a logistic regression's cost grows with n·d per
#: iteration and its iterations with n; 4,096 rows a side leave the accuracy's 95% interval under ±0.011)
SEPARABILITY_ROWS = 4096


def separability_subsample(img: Any, txt: Any, max_rows: int = SEPARABILITY_ROWS, folds: int = 5,
                           seed: int = 0) -> dict[str, Any]:
    """:func:`modality_separability` on at most ``max_rows`` rows per modality, with a Wilson interval.

    A modality with more rows is subsampled uniformly without replacement
    (``numpy.random.default_rng(seed)``). Returns ``{"value", "rows_image", "rows_text", "of_image",
    "of_text", "low", "high"}``: [low, high] is the 95% Wilson score interval of the accuracy over the
    ``rows_image + rows_text`` held-out predictions (each row is predicted once by the cross-validation;
    the folds' fits are treated as one classifier, so it is approximate).
    """
    a, b = to_pair(img, txt)
    rng = np.random.default_rng(seed)

    def pick(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= max_rows:
            return x
        return x[torch.as_tensor(np.sort(rng.choice(x.shape[0], max_rows, replace=False)), device=x.device)]

    sa, sb = pick(a), pick(b)
    value = modality_separability(sa, sb, folds=folds, seed=seed)
    m = sa.shape[0] + sb.shape[0]
    z = 1.959963984540054
    centre = (value + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(value * (1 - value) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return {"value": value, "rows_image": int(sa.shape[0]), "rows_text": int(sb.shape[0]),
            "of_image": int(a.shape[0]), "of_text": int(b.shape[0]), "low": centre - half, "high": centre + half}
