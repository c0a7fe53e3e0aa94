"""Modality gap (Liang et al. 2022, arXiv:2203.02053, §4; Schrodi et al. 2024, arXiv:2404.07983).

Image and text embeddings of contrastive models live in separate regions of
the shared sphere; the gap vector is the difference of their centroids.

With several captions per image (COCO's five; ``Sample.meta["image_key"]``), each image counts once in the image
centroid, the within-image dissimilarity and separability, and L2I, RMG and retrieval match every caption to its
own image (Schrodi et al.'s ``text_to_image_map``), instead of dropping captions or counting an image once per
caption.
"""
import numpy as np
import pytest
import torch

from mmdiag import CheckSpec, PlotSpec, Threshold
from mmdiag.analyses.geometry import embedding_2d
from mmdiag.metrics import gap as gap_metrics
from mmdiag.data.groups import text_to_image_map
from mmdiag.metrics.gap import (SEPARABILITY_ROWS, gap_l2i, gap_norm, modality_separability, relative_modality_gap,
                               retrieval_hits, retrieval_recall, separability_subsample)
from mmdiag.metrics.shift import shift_curve
from mmdiag.uncertainty import batched_gap_l2i, batched_gap_norm, batched_item_mean, per_resample

PAPER = {"clip_vit_b32_coco": 0.82, "random_init": 1.1891, "contrastive_trained": 1.2991}
LIANG = "Liang et al. 2022, Mind the Gap, arXiv:2203.02053"
SCHRODI = "Schrodi et al. 2024, arXiv:2404.07983"
EMBEDDING_PLOT = PlotSpec("embedding-2d", ("embedding_2d",), "embedding_plot",
                          "2-D projection of the final image and text embeddings; × marks each centroid and the "
                          "arrow is the gap vector Δ = mean(image) − mean(text).")
SHIFT_PLOT = PlotSpec("gap-shift", ("gap.shift",), "shift_plot",
                      "Symmetric contrastive loss and recall@1 (both averaged over batches of --mm-shift-batch pairs) when "
                      "the embeddings are shifted along the gap: x' = normalize(x − λΔ), y' = normalize(y + λΔ). "
                      "Dotted: λ = 0 (the model as trained); dashed red: the optimum.")
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
GAP_RETRIEVAL = CheckSpec(
    "gap.retrieval", title="Text→image recall@1", higher_is_better=True, pairs=True, **_MAP,
    meaning="share of captions whose most cosine-similar image is their own (image→text recall@1 in the details)",
    healthy="chance = 1/(number of images); higher = captions find their own image",
    source="Radford et al. 2021, arXiv:2103.00020 (retrieval); text_to_image_map as in " + SCHRODI)
GAP_SHIFT_OPTIMUM = CheckSpec(
    "gap.shift_optimum", title="Loss-minimising gap shift λ", higher_is_better=None, pairs=True,
    series=("embedding_2d", "gap.shift"), plots=(EMBEDDING_PLOT, SHIFT_PLOT),
    meaning="the shift λ along the gap that minimises the symmetric InfoNCE loss at the model's temperature, "
            "averaged over batches of --mm-shift-batch pairs (default 50, as Liang et al.)",
    healthy="near 0: the model's own gap is where its contrastive loss is lowest (Liang et al. §4.2); "
            "details say when the optimum is at the edge of the λ grid",
    source=LIANG)


def _pair(mm):
    img, txt = mm.require_embeddings("image", "text")
    mm.memo("embedding_2d", lambda: mm.published("embedding_2d") or mm.publish("embedding_2d", embedding_2d(img, txt)))
    return img, txt


def _rows(x, rows):
    return x[list(rows)] if isinstance(x, np.ndarray) else x[torch.as_tensor(rows, device=x.device)]


def _groups(mm, n):
    """The run's caption groups when some image has several captions (and the samples are in step), else None."""
    groups = mm.memo("caption_groups", lambda: text_to_image_map(mm.samples or []))
    return groups if groups.shared and len(groups.text_to_image) == n else None


def _grouped(mm):
    """(each image once, every caption, caption -> image row or None, details saying so)."""
    img, txt = _pair(mm)
    groups = _groups(mm, len(txt))
    if groups is None:
        return img, txt, None, {}
    details = {"images": len(groups.image_rows), "captions": len(groups.text_to_image),
               "captions_per_image": "text_to_image_map (Schrodi et al. 2024): each image counted once"}
    return _rows(img, groups.image_rows), txt, np.asarray(groups.text_to_image), details


def _by_caption(fn, img, txt, mapping, name):
    """``fn(images, captions, map)`` per bootstrap resample of the captions (each resampled image counted once)."""
    def on_resample(captions, index):
        kept, inverse = np.unique(np.asarray(index), return_inverse=True)
        return fn(_rows(img, kept), captions, inverse)

    return per_resample(on_resample, txt, mapping, name=name)


@pytest.mark.mm(GAP_NORM)
def test_gap_norm(mm):
    img, txt, mapping, details = _grouped(mm)
    controls = {}
    for name, acts in mm.controls().items():
        if acts is not None and {"image", "text"} <= set(acts.embeds):
            c_img, c_txt = acts.embeds["image"], acts.embeds["text"]
            groups = _groups(mm, len(c_txt))
            controls[name] = gap_norm(c_img if groups is None else _rows(c_img, groups.image_rows), c_txt)
    statistic = (batched_gap_norm(img, txt) if mapping is None else
                 _by_caption(lambda a, b, m: gap_norm(a, b), img, txt, mapping, "gap_norm"))
    mm.report(gap_norm(img, txt), details={"controls": controls, "paper": PAPER, **details},
              interval=mm.bootstrap(statistic))


@pytest.mark.mm(GAP_L2I)
def test_gap_l2i(mm):
    img, txt, mapping, details = _grouped(mm)
    # each caption with its own image: the per-caption rows of the forward pass are exactly those pairs
    paired = img if mapping is None else _rows(img, mapping)
    mm.report(gap_l2i(img, txt, mapping), details=details, interval=mm.bootstrap(batched_gap_l2i(paired, txt)))


@pytest.mark.mm(GAP_RMG)
def test_gap_rmg(mm):
    img, txt, mapping, details = _grouped(mm)
    statistic = (per_resample(relative_modality_gap, img, txt) if mapping is None else
                 _by_caption(relative_modality_gap, img, txt, mapping, "relative_modality_gap"))
    mm.report(relative_modality_gap(img, txt, mapping), details=details,
              interval=mm.bootstrap(statistic, expensive=True))


@pytest.mark.mm(GAP_RETRIEVAL)
def test_gap_retrieval(mm):
    img, txt, mapping, details = _grouped(mm)
    i2t_hits, t2i_hits = retrieval_hits(img, txt, mapping)
    i2t, t2i = float(i2t_hits.double().mean()), float(t2i_hits.double().mean())
    details = {"recall_i2t": i2t, "chance_t2i": 1.0 / len(img), **details}
    rerank_rows = gap_metrics.RETRIEVAL_RERANK_ROWS  # read at call time (tests lower it)
    if len(txt) > rerank_rows:
        details["bootstrap"] = ("over the captions, the image gallery held fixed (each caption's hit computed once; "
                                f"above {rerank_rows:,} captions re-ranking per resample is quadratic)")
        statistic = batched_item_mean(t2i_hits, "recall_t2i")
    else:
        statistic = (per_resample(lambda a, b: retrieval_recall(a, b)[1], img, txt) if mapping is None else
                     _by_caption(lambda a, b, m: retrieval_recall(a, b, m)[1], img, txt, mapping, "recall_t2i"))
    mm.report(t2i, details=details, interval=mm.bootstrap(statistic, expensive=len(txt) <= rerank_rows))


@pytest.mark.mm(GAP_SEPARABILITY)
def test_gap_separability(mm):
    img, txt, _, details = _grouped(mm)
    mm.require_n(10)
    classifier = "logistic regression, 5-fold stratified CV, L2-normalised embeddings"
    if max(img.shape[0], txt.shape[0]) <= SEPARABILITY_ROWS:
        mm.report(modality_separability(img, txt, folds=5, seed=mm.config.seed),
                  details={"classifier": classifier, **details})
        return
    # the fit grows faster than linearly in n: a seeded subsample of SEPARABILITY_ROWS rows a side, with the
    # Wilson interval of its held-out accuracy in details (the check's spec has no gated interval)
    found = separability_subsample(img, txt, SEPARABILITY_ROWS, folds=5, seed=mm.config.seed)
    mm.report(found["value"], details={"classifier": classifier, **details, "subsample": {
        **{k: found[k] for k in ("rows_image", "rows_text", "of_image", "of_text")},
        "method": "uniform without replacement per modality (seed --mm-seed)",
        "accuracy_ci95": [found["low"], found["high"]], "ci_method": "Wilson score over the held-out predictions"}})


@pytest.mark.mm(GAP_SHIFT_OPTIMUM)
def test_gap_shift_optimum(mm):
    img, txt = _pair(mm)
    scale = mm.acts.logit_scale
    if scale is None or scale <= 0:
        mm.skip("gap.shift_optimum needs the model's learned temperature (a logit_scale parameter)")
    batch, seed, tau = mm.config.shift_batch, mm.config.seed, 1.0 / scale
    groups = _groups(mm, len(txt))
    mapping = None if groups is None else np.asarray(groups.text_to_image)
    curve = mm.publish("gap.shift", shift_curve(img, txt, temperature=tau, batch_size=batch, seed=seed,
                                                text_to_image=mapping))
    grid = (min(curve["lambda"]), max(curve["lambda"]))
    details = {"temperature": tau, "loss_at_0": curve["loss_at_0"],
               "loss_at_optimum": min(curve["loss"]), "gap_norm": curve["gap_norm"],
               "loss": "symmetric InfoNCE (image->text and text->image averaged)",
               "batching": {"option": batch, "batch_size": curve["batch_size"], "batches": curve["batches"],
                            "pairs_left_out": curve["pairs_left_out"], "seed": seed},
               "at_grid_edge": curve["at_grid_edge"], "lambda_grid": list(grid)}
    if mapping is not None:
        details["captions_per_image"] = ("each caption with its image; no batch holds two captions of one image "
                                         "(batched per caption round), and Δ counts each image once")
    if mm.adapter.family == "siglip":
        details["note"] = "SigLIP trains with a sigmoid loss; the InfoNCE curve is evaluated at its temperature"
    message = ""
    if curve["at_grid_edge"]:
        message = (f"the loss is lowest at the edge of the λ grid [{grid[0]:g}, {grid[1]:g}] (λ = "
                   f"{curve['optimum']:g}): the true optimum may lie beyond it")

    def optimum(a, b, m=None):  # a bootstrap resample of the pairs, batched afresh (Δ, batches and curve recomputed)
        return shift_curve(a, b, temperature=tau, batch_size=batch, seed=seed, text_to_image=m)["optimum"]

    arrays = (img, txt) if mapping is None else (img, txt, mapping)
    mm.report(curve["optimum"], details=details, message=message,
              interval=mm.bootstrap(per_resample(optimum, *arrays, name="shift_optimum"), expensive=True))
