"""Structural probes (Hewitt & Manning 2019; Milewski et al. 2022, arXiv:2203.09306).

Can a linear map read the dependency tree out of a model's word states, and the
scene tree out of its image-region states? Depth probes (NSpr, root accuracy)
and distance probes (DSpr, UUAS) per layer, with the controls that make a
probe score mean something: a control task (Hewitt & Liang 2019) and the
random-init model of the same architecture.
"""
import math

import pytest

from mmdiag import CheckSpec, PlotSpec
from mmdiag.analyses.probes import (MIN_SENTENCES, best, image_probe_set, probe_scores, reliability_note,
                                    text_probe_set)
from mmdiag.data.flickr30k import SPACY_MISSING, is_flickr30k_root
from mmdiag.uncertainty.grouped import bootstrap_grouped_difference
from mmdiag.uncertainty.interval import json_number

WHAT = {"text": "captions with gold dependency trees (--mm-data=synthetic, or --mm-treebank=FILE.conllu)",
        "image": "images with grounded phrases and scene trees (--mm-data=synthetic, or a Flickr30k Entities root "
                 "with spaCy installed)"}
HEWITT = "Hewitt & Manning 2019, NAACL"
MILEWSKI = "Milewski et al. 2022, arXiv:2203.09306"
PROBE_PLOTS = (
    PlotSpec("probe-layers", ("probe",), "probe_plot",
             "Structural-probe scores per layer: NSpr and root accuracy (depth probe), DSpr and UUAS (distance "
             "probe) (Hewitt & Manning 2019; Milewski et al. 2022)."),
    PlotSpec("probe-tree", ("probe", "example"), "tree_svg",
             "Example sentence: gold dependency tree above the words, the tree predicted by the distance probe "
             "(minimum spanning tree) below."),
)
_PROBES = {"needs": ("words", "regions"), "series": ("probe",), "plots": PROBE_PLOTS, "uncertainty": "sentences",
           "higher_is_better": True}

DEPTH = CheckSpec(
    "probe.depth", title="Depth probe NSpr per layer", over=("modality", "layer"), **_PROBES,
    meaning="Spearman of predicted vs gold tree depth per sentence, averaged per length 5–50 (root accuracy in "
            "details); text words against dependency trees, image regions against scene trees",
    healthy="BERT-base text ≈ 0.8 at its best layer on PTB; compare with probe.selectivity, not with 0",
    source=f"{HEWITT}; {MILEWSKI}")
DISTANCE = CheckSpec(
    "probe.distance", title="Distance probe DSpr per layer", over=("modality", "layer"), **_PROBES,
    meaning="per-word Spearman of predicted vs gold tree distances, averaged per length 5–50 (UUAS in details)",
    healthy="BERT-base layer 7 ≈ 0.85 (UUAS ≈ 0.80) on PTB; a random embedding scores ≈ 0.27",
    source=f"{HEWITT}; {MILEWSKI}")
SELECTIVITY = CheckSpec(
    "probe.selectivity", title="Probe selectivity over a control task", over=("modality",), **_PROBES,
    meaning="best-layer DSpr minus the same probe's DSpr on a control task of random word-type depths",
    healthy="clearly above 0: the probe reads structure, not memorised word identities",
    source="Hewitt & Liang 2019, arXiv:1909.03368")
# probe.selectivity's and probe.scene_vs_raw's intervals resample the two scores' test sentences in pairs (the
# best layer held fixed); text_retention and image_effect have none yet: a ratio of two probe runs needs a paired
# ratio bootstrap, and the image-masked run may keep other sentences than the model's own, so it is not paired
TEXT_RETENTION = CheckSpec(
    "probe.text_retention", title="Text structure kept vs a text-only encoder",
    **{**_PROBES, "needs": ("words",), "uncertainty": "none"},
    meaning="the model's best text DSpr as a fraction of a text-only reference encoder's (--mm-text-reference)",
    healthy="about 1 on in-domain captions; below 1 on out-of-domain text (Milewski RQ1)",
    source=MILEWSKI)
SCENE_VS_RAW = CheckSpec(
    "probe.scene_vs_raw", title="Scene trees vs raw region features", **{**_PROBES, "needs": ("regions",)},
    meaning="best-layer scene-tree DSpr minus the DSpr of the raw patch embeddings (layer 0)",
    healthy="Milewski RQ2 found no gain (≈ 0 or below): visual layers do not build scene trees", source=MILEWSKI)
IMAGE_EFFECT = CheckSpec(
    "probe.image_effect", title="Effect of the image on text structure",
    **{**_PROBES, "needs": ("words",), "higher_is_better": None, "uncertainty": "none"},
    meaning="best text DSpr with the image minus with the image masked out of a single-stream model",
    healthy="≈ 0 (Milewski Sub-RQ1.1: text structure does not come from the visual input)",
    source=MILEWSKI)


def _probe_set(mm, modality, acts=None, samples=None):
    mm.require_modality(modality)
    if modality == "text":
        treebank = mm.treebank()
        if treebank is not None and acts is None:
            acts, samples = treebank
        pset = _text_set(mm, acts or mm.acts, samples or mm.samples)
    else:
        pset = image_probe_set(acts or mm.acts, samples or mm.samples)
    n = 0 if pset is None else pset.data.n_sentences
    if n == 0 and is_flickr30k_root(mm.config.data) and all(s.tree is None for s in mm.samples):
        mm.skip(SPACY_MISSING)
    if n < MIN_SENTENCES:
        mm.skip(f"{mm.check} needs at least {MIN_SENTENCES} {WHAT[modality]}; the run has {n}")
    return pset


def _text_set(mm, acts, samples):
    """Word states and gold trees; punctuation by --mm-probe-punctuation (ptb: Hewitt's seven XPOS tags)."""
    return text_probe_set(acts, samples, mm.config.probe_punctuation)


def _conventions(mm, modality):
    """How the gold structure was read, for every result's details (docs/fidelity.md)."""
    found = {"punctuation": mm.config.probe_punctuation}
    if modality == "image":
        found["scene_regions"] = mm.config.scene_regions  # Flickr30k roots; synthetic scenes have one box a phrase
    return found


def _scores(mm, modality):
    def compute():
        pset = _probe_set(mm, modality)
        cfg = mm.config
        # the control task's probe (for probe.selectivity) is fitted in the same program as the real ones;
        # --mm-bootstrap resamples of the test sentences, seeded by --mm-seed, give every score its interval
        scores = probe_scores(pset, cfg.seed, cfg.probe_regimen, cfg.probe_rank,
                              control=mm.selected("probe.selectivity"), boot=cfg.bootstrap,
                              progress=mm.progress(), label=f"{modality} probes")
        scores.conventions.update(_conventions(mm, modality))
        mm.publish(("probe", modality),
                   {k: getattr(scores, k) for k in ("layers", "nspr", "dspr", "uuas", "root_acc")
                    if getattr(scores, k) is not None})
        if scores.example is not None and (modality == "text" or mm.published(("probe", "example")) is None):
            mm.publish(("probe", "example"), {"modality": modality, **scores.example})
        mm.add_timing(f"probe_{modality}_fit_s", scores.fit_s)
        return scores
    return mm.memo(f"probe:{modality}", compute)


def _ci(cis, k):
    """Layer k's interval, or None without a bootstrap (``--mm-bootstrap=0``) or gold trees without heads."""
    return cis[k] if cis is not None else None


def _ci_details(ci):
    """An interval of a details entry (UUAS, root accuracy) as ``{"low", "high", "level", "method", "se"}``."""
    return None if ci is None else {**ci.to_json(), "se": json_number(ci.se)}


def _difference_ci(mm, scores, a_values, b_values):
    """Interval of (macro-average of ``a_values``) − (of ``b_values``), the test sentences resampled in pairs."""
    return bootstrap_grouped_difference(a_values, b_values, scores.dspr_items.groups, mm.config.bootstrap,
                                        mm.config.seed)


def _split(scores):
    return {"n_train": scores.n_train, "n_dev": scores.n_dev, "n_test": scores.n_test,
            "regimen": scores.regimen, **scores.conventions}


def _note(scores, modality):
    """The few-training-sentences warning as details entry and message (a note, not a failure)."""
    note = reliability_note(scores.n_train, modality)
    return ({"note": note} if note else {}), note or ""


@pytest.mark.mm(DEPTH)
def test_probe_depth(mm, modality, layer):
    scores = _scores(mm, modality)
    note, message = _note(scores, modality)

    def details(k):
        found = {**_split(scores), **note, "nspr_fallback_all_lengths": scores.nspr_fallback}
        if scores.root_acc is not None:
            found["root_accuracy"] = scores.root_acc[k]
            if scores.root_acc_ci is not None:
                found["root_accuracy_ci"] = _ci_details(scores.root_acc_ci[k])
        return found
    mm.report_layers(mm.layers(modality, layer), lambda k: scores.nspr[k], details,
                     interval=lambda k: _ci(scores.nspr_ci, k), note=message)


@pytest.mark.mm(DISTANCE)
def test_probe_distance(mm, modality, layer):
    scores = _scores(mm, modality)
    note, message = _note(scores, modality)

    def details(k):
        found = {**_split(scores), **note, "uuas": scores.uuas[k], "dspr_fallback_all_lengths": scores.dspr_fallback}
        if scores.uuas_ci is not None:
            found["uuas_ci"] = _ci_details(scores.uuas_ci[k])
        return found
    mm.report_layers(mm.layers(modality, layer), lambda k: scores.dspr[k], details,
                     interval=lambda k: _ci(scores.dspr_ci, k), note=message)


@pytest.mark.mm(SELECTIVITY)
def test_probe_selectivity(mm, modality):
    """Best-layer DSpr minus the same probe's DSpr on the control task (Hewitt & Liang 2019)."""
    scores = _scores(mm, modality)
    layer, value = best(scores.dspr)
    cfg = mm.config
    # the control task's probe, fitted at the best layer
    control_dspr = scores.control_dspr if scores.control_dspr is not None else float("nan")
    note, message = _note(scores, modality)
    details = {"best_layer": layer, "best_dspr": value, "control_task_dspr": control_dspr, **_split(scores), **note}
    ctrl = mm.control("random-init")
    if ctrl is not None:
        cset = _text_set(mm, ctrl, mm.samples) if modality == "text" else image_probe_set(ctrl, mm.samples)
        if cset is not None and cset.data.n_sentences >= MIN_SENTENCES:
            random_scores = probe_scores(cset, cfg.seed, cfg.probe_regimen, cfg.probe_rank, kinds=("distance",),
                                         progress=mm.progress(), label=f"{modality} probes of the random-init model")
            details["random_init_best_dspr"] = best(random_scores.dspr)[1]
            details["selectivity_vs_random_init"] = value - details["random_init_best_dspr"]
    interval = None
    if layer >= 0 and scores.dspr_items is not None and scores.control_items is not None:
        interval = _difference_ci(mm, scores, scores.dspr_items.values[layer], scores.control_items.values)
    mm.report(value - control_dspr, details=details, interval=interval, note=message)


@pytest.mark.mm(TEXT_RETENTION)
def test_probe_text_retention(mm):
    """RQ1 of Milewski et al.: the model's best text DSpr as a fraction of a text-only reference's."""
    reference = mm.text_reference()
    cfg = mm.config
    scores = _scores(mm, "text")
    pset = _probe_set(mm, "text")
    treebank = mm.treebank()
    samples = treebank[1] if treebank is not None else mm.samples
    ref_set = _text_set(mm, mm.record(reference, samples, words=True), samples)
    if ref_set is None or ref_set.data.n_sentences != pset.data.n_sentences:
        mm.skip("the reference encoder's tokenizer lost words of some sentences; no like-for-like comparison")
    ref = probe_scores(ref_set, cfg.seed, cfg.probe_regimen, cfg.probe_rank, kinds=("distance",),
                       progress=mm.progress(), label="text probes of the reference encoder")
    (_, model_dspr), (_, ref_dspr) = best(scores.dspr), best(ref.dspr)
    (_, model_uuas), (_, ref_uuas) = best(scores.uuas), best(ref.uuas)
    value = model_dspr / ref_dspr if ref_dspr and not math.isnan(ref_dspr) else float("nan")
    mm.report(value, details={"model_best_dspr": model_dspr, "reference_best_dspr": ref_dspr,
                              "model_best_uuas": model_uuas, "reference_best_uuas": ref_uuas,
                              "uuas_ratio": model_uuas / ref_uuas if ref_uuas else None,
                              "reference": cfg.text_reference})


@pytest.mark.mm(SCENE_VS_RAW)
def test_probe_scene_vs_raw(mm):
    """RQ2 of Milewski et al.: best-layer scene-tree DSpr minus the DSpr on raw patch embeddings (layer 0)."""
    scores = _scores(mm, "image")
    layer, value = best(scores.dspr[1:])
    raw = scores.dspr[0]
    items = scores.dspr_items
    interval = (_difference_ci(mm, scores, items.values[layer + 1], items.values[0])
                if items is not None and layer >= 0 else None)
    mm.report(value - raw, interval=interval, details={"best_layer": layer + 1, "best_dspr": value, "raw_dspr": raw,
                                    "best_uuas": scores.uuas[layer + 1], "raw_uuas": scores.uuas[0],
                                    **scores.conventions})


@pytest.mark.mm(IMAGE_EFFECT)
def test_probe_image_effect(mm):
    """Sub-RQ1.1 of Milewski et al.: text DSpr with the image minus with the image masked out."""
    if not mm.adapter_member("joint_attention"):
        mm.skip("probe.image_effect applies to single-stream and decoder models, whose text states can see the "
                f"image; the text tower of this {mm.adapter.family} model never sees it")
    scores = _scores(mm, "text")
    cfg = mm.config
    pset = _text_set(mm, mm.without_image(), mm.samples)
    if pset is None or pset.data.n_sentences < MIN_SENTENCES:
        mm.skip(f"probe.image_effect needs at least {MIN_SENTENCES} {WHAT['text']}")
    without = mm.memo("probe:text-without-image", lambda: probe_scores(
        pset, cfg.seed, cfg.probe_regimen, cfg.probe_rank, kinds=("distance",), progress=mm.progress(),
        label="text probes without the image"))
    (layer, with_image), (layer_wo, without_image) = best(scores.dspr), best(without.dspr)
    mm.report(with_image - without_image,
              details={"with_image_dspr": scores.dspr, "without_image_dspr": without.dspr,
                       "best_layer_with_image": layer, "best_layer_without_image": layer_wo})
