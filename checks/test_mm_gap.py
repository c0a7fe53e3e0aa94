"""Modality gap (Liang et al. 2022, arXiv:2203.02053, §4; Schrodi et al. 2024, arXiv:2404.07983).

Image and text embeddings of contrastive models live in separate regions of
the shared sphere; the gap vector is the difference of their centroids.
"""
import pytest

from mmdiag import CheckSpec, PlotSpec, Threshold
from mmdiag.analyses.geometry import embedding_2d
from mmdiag.metrics.gap import (SEPARABILITY_ROWS, gap_l2i, gap_norm, modality_separability, relative_modality_gap,
                               separability_subsample)
from mmdiag.metrics.shift import shift_curve
from mmdiag.uncertainty import batched_gap_l2i, batched_gap_norm, per_resample

PAPER = {"clip_vit_b32_coco": 0.82, "random_init": 1.1891, "contrastive_trained": 1.2991}
LIANG = "Liang et al. 2022, Mind the Gap, arXiv:2203.02053"
SCHRODI = "Schrodi et al. 2024, arXiv:2404.07983"
EMBEDDING_PLOT = PlotSpec("embedding-2d", ("embedding_2d",), "embedding_plot",
                          "2-D projection of the final image and text embeddings; × marks each centroid and the "
                          "arrow is the gap vector Δ = mean(image) − mean(text).")
SHIFT_PLOT = PlotSpec("gap-shift", ("gap.shift",), "shift_plot",
                      "Symmetric contrastive loss and recall@1 when the embeddings are shifted along the gap: "
                      "x' = normalize(x − λΔ), y' = normalize(y + λΔ). Dotted: λ = 0 (the model as trained); "
                      "dashed red: the optimum.")
_MAP = {"series": ("embedding_2d",), "plots": (EMBEDDING_PLOT,)}

GAP_NORM = CheckSpec(
    "gap.norm", title="Modality gap ‖Δ‖", higher_is_better=False, **_MAP,
    threshold=Threshold("<=", 1.19, "warn", "above the random-init gap of Liang et al. 2022 (1.1891 +- 0.0017): "
                        "training widened the gap beyond initialisation"),
    meaning="‖mean(x̂) − mean(ŷ)‖ of the L2-normalised final image and text embeddings",
    healthy="CLIP ViT-B/32 on COCO 0.82; random init 1.19; higher training temperature shrinks it", source=LIANG)
GAP_L2I = CheckSpec(
    "gap.l2i", title="Matched-pair distance", higher_is_better=False, pairs=True, **_MAP,
    meaning="mean Euclidean distance between each image's and its caption's normalised embeddings",
    healthy="0 for identical pairs, at most 2; lower = matched pairs closer", source=SCHRODI)
GAP_RMG = CheckSpec(
    "gap.rmg", title="Relative modality gap", higher_is_better=False, pairs=True, **_MAP,
    meaning="matched-pair cosine dissimilarity d_m over d_m plus the mean within-modality dissimilarity (RMG)",
    healthy="in [0, 1]; lower = the modalities overlap", source=SCHRODI)
GAP_SEPARABILITY = CheckSpec(
    "gap.separability", title="Linear separability of the modalities", higher_is_better=False, **_MAP,
    meaning="5-fold cross-validated accuracy of a logistic regression telling image from text embeddings",
    healthy="1.0 for every CLIP-style model with a gap; 0.5 = indistinguishable modalities", source=LIANG,
    uncertainty="none")
GAP_SHIFT_OPTIMUM = CheckSpec(
    "gap.shift_optimum", title="Loss-minimising gap shift λ", higher_is_better=None, pairs=True,
    series=("embedding_2d", "gap.shift"), plots=(EMBEDDING_PLOT, SHIFT_PLOT),
    meaning="the shift λ along the gap that minimises the symmetric InfoNCE loss at the model's temperature",
    healthy="near 0: the model's own gap is where its contrastive loss is lowest (Liang et al. §4.2)",
    source=LIANG, uncertainty="none")


def _pair(mm):
    img, txt = mm.require_embeddings("image", "text")
    mm.memo("embedding_2d", lambda: mm.published("embedding_2d") or mm.publish("embedding_2d", embedding_2d(img, txt)))
    return img, txt


@pytest.mark.mm(GAP_NORM)
def test_gap_norm(mm):
    img, txt = _pair(mm)
    controls = {}
    for name, acts in mm.controls().items():
        if acts is not None and {"image", "text"} <= set(acts.embeds):
            controls[name] = gap_norm(acts.embeds["image"], acts.embeds["text"])
    mm.report(gap_norm(img, txt), details={"controls": controls, "paper": PAPER},
              interval=mm.bootstrap(batched_gap_norm(img, txt)))


@pytest.mark.mm(GAP_L2I)
def test_gap_l2i(mm):
    img, txt = _pair(mm)
    mm.report(gap_l2i(img, txt), interval=mm.bootstrap(batched_gap_l2i(img, txt)))


@pytest.mark.mm(GAP_RMG)
def test_gap_rmg(mm):
    img, txt = _pair(mm)
    mm.report(relative_modality_gap(img, txt),
              interval=mm.bootstrap(per_resample(relative_modality_gap, img, txt), expensive=True))


@pytest.mark.mm(GAP_SEPARABILITY)
def test_gap_separability(mm):
    img, txt = _pair(mm)
    mm.require_n(10)
    classifier = "logistic regression, 5-fold stratified CV, L2-normalised embeddings"
    if max(img.shape[0], txt.shape[0]) <= SEPARABILITY_ROWS:
        mm.report(modality_separability(img, txt, folds=5, seed=mm.config.seed), details={"classifier": classifier})
        return
    # the fit grows faster than linearly in n: a seeded subsample of SEPARABILITY_ROWS rows a side, with the
    # Wilson interval of its held-out accuracy in details (the check's spec has no gated interval)
    found = separability_subsample(img, txt, SEPARABILITY_ROWS, folds=5, seed=mm.config.seed)
    mm.report(found["value"], details={"classifier": classifier, "subsample": {
        **{k: found[k] for k in ("rows_image", "rows_text", "of_image", "of_text")},
        "method": "uniform without replacement per modality (seed --mm-seed)",
        "accuracy_ci95": [found["low"], found["high"]], "ci_method": "Wilson score over the held-out predictions"}})


@pytest.mark.mm(GAP_SHIFT_OPTIMUM)
def test_gap_shift_optimum(mm):
    img, txt = _pair(mm)
    scale = mm.acts.logit_scale
    if scale is None or scale <= 0:
        mm.skip("gap.shift_optimum needs the model's learned temperature (a logit_scale parameter)")
    curve = mm.publish("gap.shift", shift_curve(img, txt, temperature=1.0 / scale))
    details = {"temperature": 1.0 / scale, "loss_at_0": curve["loss_at_0"],
               "loss_at_optimum": min(curve["loss"]), "gap_norm": curve["gap_norm"],
               "loss": "symmetric InfoNCE (image->text and text->image averaged)"}
    if mm.adapter.family == "siglip":
        details["note"] = "SigLIP trains with a sigmoid loss; the InfoNCE curve is evaluated at its temperature"
    mm.report(curve["optimum"], details=details)
