"""Representation geometry beyond the gap: alignment and uniformity (Wang & Isola 2020,
arXiv:2005.10242), effective rank (RankMe, Garrido et al. 2023, arXiv:2210.02885),
linear CKA (Kornblith et al. 2019, arXiv:1905.00414), mutual k-NN alignment
(Huh et al. 2024, arXiv:2405.07987) and isotropy (Mu & Viswanath 2018, arXiv:1702.01417)."""
import math

import pytest

from mmdiag import CheckSpec
from mmdiag.metrics import geometry as geometry_metrics
from mmdiag.metrics.geometry import (MKNN_BLOCK_ROWS, alignment, linear_cka, mutual_knn, mutual_knn_blocks, rankme,
                                     uniformity, uniformity_blocks)
from mmdiag.metrics.isotropy import isotropy
from mmdiag.uncertainty import (batched_alignment, batched_isotropy, batched_linear_cka, batched_rankme,
                                batched_uniformity, per_resample)
from mmdiag.uncertainty.interval import Interval

MKNN_K = 10
#: the CKA bootstrap works on two n×n Gram matrices (O(n²) memory, O(B·n²) time): above this many pairs it
#: resamples a seeded subsample of this size, and its standard error is scaled to the full n by √(m/n)
CKA_BOOT_ROWS = 2048

ALIGNMENT = CheckSpec(
    "geometry.alignment", title="Alignment of matched pairs", higher_is_better=False, pairs=True,
    meaning="mean ‖x̂ − ŷ‖² over matched image-caption pairs (α = 2)",
    healthy="in [0, 4]; lower = matched pairs closer", source="Wang & Isola 2020, arXiv:2005.10242")
UNIFORMITY = CheckSpec(
    "geometry.uniformity", title="Uniformity on the sphere", over=("modality",), higher_is_better=False,
    meaning="log E exp(−2‖x̂_i − x̂_j‖²) over pairs of distinct samples (t = 2)",
    healthy="in [−4, 0]; lower = more uniformly spread", source="Wang & Isola 2020, arXiv:2005.10242")
RANKME = CheckSpec(
    "geometry.rankme", title="Effective rank per layer", over=("modality", "layer"), higher_is_better=True,
    meaning="exp of the entropy of the normalised singular values of the pooled states (RankMe)",
    healthy="between 1 and min(n, d); a collapse to a few directions shows as a small rank",
    source="Garrido et al. 2023, arXiv:2210.02885")
CKA = CheckSpec(
    "geometry.cka", title="Linear CKA image vs text", higher_is_better=True, pairs=True,
    meaning="linear centred kernel alignment between matched image and text embeddings",
    healthy="in [0, 1]; higher = the modalities share their similarity structure",
    source="Kornblith et al. 2019, arXiv:1905.00414")
MKNN = CheckSpec(
    "geometry.mknn", title="Mutual k-NN alignment", higher_is_better=True, pairs=True,
    meaning=f"mean overlap of each pair's k = {MKNN_K} nearest neighbours in image and in text space",
    healthy="in [0, 1]; chance is k / (n − 1) (in details)", source="Huh et al. 2024, arXiv:2405.07987")
ISOTROPY = CheckSpec(
    "geometry.isotropy", title="Isotropy of the embeddings", over=("modality",), higher_is_better=True,
    meaning="min over max of the partition function Z(c) = Σ exp(cᵀx̂) over ± the eigenvectors of X̂ᵀX̂",
    healthy="in (0, 1]; 1 = no dominant direction; a narrow cone drives it towards 0",
    source="Mu & Viswanath 2018, All-but-the-Top, arXiv:1702.01417")


@pytest.mark.mm(ALIGNMENT)
def test_alignment(mm):
    img, txt = mm.require_embeddings("image", "text")
    mm.report(alignment(img, txt, alpha=2), details={"alpha": 2}, interval=mm.bootstrap(batched_alignment(img, txt)))


@pytest.mark.mm(UNIFORMITY)
def test_uniformity(mm, modality):
    (emb,) = mm.require_embeddings(modality)
    n, block_rows = int(emb.shape[0]), geometry_metrics.UNIFORMITY_BLOCK_ROWS  # read at call time (tests lower it)
    if n <= block_rows:
        mm.report(uniformity(emb, t=2), details={"t": 2},
                  interval=mm.bootstrap(batched_uniformity(emb, t=2), biased=True))
        return
    # all pairs are O(n²) in time and memory: above UNIFORMITY_BLOCK_ROWS rows, pairs within disjoint random blocks
    found = uniformity_blocks(emb, t=2, block_rows=block_rows, seed=mm.config.seed)
    mm.report(found["value"], interval=Interval(found["low"], found["high"], found["se"], 0.95, "t-over-blocks"),
              details={"t": 2, "blocks": {
                  "count": found["blocks"], "rows_at_least": found["block_rows"], "of": n,
                  "method": "rows shuffled (seed --mm-seed) into disjoint blocks; value = log of the mean over "
                            "blocks of each block's mean exp(-t d²) over its pairs, interval = t interval over "
                            "the block means, mapped through log"}})


@pytest.mark.mm(RANKME)
def test_rankme(mm, modality, layer):
    mm.require_modality(modality)
    mm.require_n(2)
    pooled = mm.acts.pooled[modality]
    mm.report_layers(mm.layers(modality, layer), lambda k: rankme(pooled[k]),
                     lambda k: {"max": int(min(pooled[k].shape))},
                     interval=lambda k: mm.bootstrap(batched_rankme(pooled[k]), expensive=True,
                                                     params=mm.layer_params(k), biased=True))


@pytest.mark.mm(CKA)
def test_cka(mm):
    img, txt = mm.require_embeddings("image", "text")
    value, n = linear_cka(img, txt), int(img.shape[0])  # O(n·d²) in feature space when n >= d: linear in n
    if n <= CKA_BOOT_ROWS:
        mm.report(value, interval=mm.bootstrap(batched_linear_cka(img, txt), biased=True))
        return
    import numpy as np
    import torch

    pick = torch.as_tensor(np.sort(np.random.default_rng(mm.config.seed).choice(n, CKA_BOOT_ROWS, replace=False)),
                           device=img.device)
    sub = mm.bootstrap(batched_linear_cka(img[pick], txt[pick]), biased=True)
    interval = None if sub is None else Interval(math.nan, math.nan, sub.se * math.sqrt(CKA_BOOT_ROWS / n),
                                                 sub.level, "bootstrap-normal-subsample",
                                                 sub.resamples).centred(value)
    mm.report(value, interval=interval, details={"bootstrap_subsample": {
        "rows": CKA_BOOT_ROWS, "of": n, "method": "uniform without replacement (seed --mm-seed); bootstrap se of "
        "the subsample scaled by sqrt(rows / n), interval value ± z·se"}})


@pytest.mark.mm(MKNN)
def test_mknn(mm):
    img, txt = mm.require_embeddings("image", "text")
    mm.require_n(MKNN_K + 1)
    n = int(img.shape[0])
    if n <= MKNN_BLOCK_ROWS:
        mm.report(mutual_knn(img, txt, k=MKNN_K), details={"k": MKNN_K, "chance": MKNN_K / (n - 1)},
                  interval=mm.bootstrap(per_resample(lambda a, b: mutual_knn(a, b, k=MKNN_K), img, txt),
                                        expensive=True, biased=True))
        return
    # O(n²·d) on all rows: above MKNN_BLOCK_ROWS pairs, neighbours within disjoint random blocks (linear in n)
    found = mutual_knn_blocks(img, txt, k=MKNN_K, block_rows=MKNN_BLOCK_ROWS, seed=mm.config.seed)
    interval = (None if found["se"] is None else
                Interval(found["low"], found["high"], found["se"], 0.95, "t-over-blocks"))
    mm.report(found["value"], interval=interval,
              details={"k": MKNN_K, "chance": MKNN_K / (found["block_rows"] - 1), "blocks": {
                  "count": found["blocks"], "rows_at_least": found["block_rows"], "of": n,
                  "method": "rows shuffled (seed --mm-seed) into disjoint blocks; neighbours within a block; value "
                            "= mean over blocks, interval = t interval over the block values"}})


@pytest.mark.mm(ISOTROPY)
def test_isotropy(mm, modality):
    (emb,) = mm.require_embeddings(modality)
    mm.report(isotropy(emb), details={"normalized": True, "directions": "± eigenvectors of XᵀX"},
              interval=mm.bootstrap(batched_isotropy(emb), expensive=True, biased=True))
