"""Modality gap (Liang et al. 2022, arXiv:2203.02053, §4; Schrodi et al. 2024, arXiv:2404.07983).

Image and text embeddings of contrastive models live in separate regions of
the shared sphere; the gap vector is the difference of their centroids.
"""
import pytest

from mmdiag.analyses.geometry import embedding_2d
from mmdiag.metrics.gap import gap_l2i, gap_norm, modality_separability, relative_modality_gap
from mmdiag.metrics.shift import shift_curve

PAPER = {"clip_vit_b32_coco": 0.82, "random_init": 1.1891, "contrastive_trained": 1.2991}


def _pair(mm):
    embeds = mm.acts.embeds
    missing = [m for m in ("image", "text") if m not in embeds]
    if missing:
        mm.skip(f"{mm.check} needs final embeddings of both modalities; missing: {', '.join(missing)} "
                "(use a dual-encoder model such as CLIP or SigLIP with image-caption data)")
    mm.require_n(2)
    mm.session.memo("embedding_2d", lambda: mm.session.series.setdefault(
        "embedding_2d", embedding_2d(embeds["image"], embeds["text"])))
    return embeds["image"], embeds["text"]


def _require_pairs(mm):
    if mm.session.config.data == "noise":
        mm.skip(f"{mm.check} needs matched image-caption pairs; --mm-data=noise has none "
                "(use synthetic, a captions JSONL or COCO captions)")


@pytest.mark.mm("gap.norm")
def test_gap_norm(mm):
    img, txt = _pair(mm)
    controls = {}
    for name, acts in mm.controls().items():
        if acts is not None and {"image", "text"} <= set(acts.embeds):
            controls[name] = gap_norm(acts.embeds["image"], acts.embeds["text"])
    mm.report(gap_norm(img, txt), details={"controls": controls, "paper": PAPER})


@pytest.mark.mm("gap.l2i")
def test_gap_l2i(mm):
    _require_pairs(mm)
    img, txt = _pair(mm)
    mm.report(gap_l2i(img, txt))


@pytest.mark.mm("gap.rmg")
def test_gap_rmg(mm):
    _require_pairs(mm)
    img, txt = _pair(mm)
    mm.report(relative_modality_gap(img, txt))


@pytest.mark.mm("gap.separability")
def test_gap_separability(mm):
    img, txt = _pair(mm)
    mm.require_n(10)
    mm.report(modality_separability(img, txt, folds=5, seed=mm.session.config.seed),
              details={"classifier": "logistic regression, 5-fold stratified CV, L2-normalised embeddings"})


@pytest.mark.mm("gap.shift_optimum")
def test_gap_shift_optimum(mm):
    _require_pairs(mm)
    img, txt = _pair(mm)
    scale = mm.acts.logit_scale
    if scale is None or scale <= 0:
        mm.skip("gap.shift_optimum needs the model's learned temperature (a logit_scale parameter)")
    curve = shift_curve(img, txt, temperature=1.0 / scale)
    mm.session.series["gap.shift"] = curve
    details = {"temperature": 1.0 / scale, "loss_at_0": curve["loss_at_0"],
               "loss_at_optimum": min(curve["loss"]), "gap_norm": curve["gap_norm"],
               "loss": "symmetric InfoNCE (image->text and text->image averaged)"}
    if mm.adapter.family == "siglip":
        details["note"] = "SigLIP trains with a sigmoid loss; the InfoNCE curve is evaluated at its temperature"
    mm.report(curve["optimum"], details=details)
