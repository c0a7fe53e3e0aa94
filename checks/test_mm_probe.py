"""Structural probes (Hewitt & Manning 2019; Milewski et al. 2022, arXiv:2203.09306).

Can a linear map read the dependency tree out of a model's word states, and the
scene tree out of its image-region states? Depth probes (NSpr, root accuracy)
and distance probes (DSpr, UUAS) per layer, with the controls that make a
probe score mean something: a control task (Hewitt & Liang 2019) and the
random-init model of the same architecture.
"""
import math

import pytest

from mmdiag.data.flickr30k import SPACY_MISSING, is_flickr30k_root
from mmdiag.analyses.probes import MIN_SENTENCES, best, image_probe_set, probe_scores, text_probe_set

WHAT = {"text": "captions with gold dependency trees (--mm-data=synthetic, or --mm-treebank=FILE.conllu)",
        "image": "images with grounded phrases and scene trees (--mm-data=synthetic, or a Flickr30k Entities root "
                 "with spaCy installed)"}


def _probe_set(mm, modality, acts=None, samples=None):
    mm.require_modality(modality)
    if modality == "text":
        treebank = mm.session.treebank_activations(mm.adapter)
        if treebank is not None and acts is None:
            acts, samples = treebank
        pset = text_probe_set(acts or mm.acts, samples or mm.samples)
    else:
        pset = image_probe_set(acts or mm.acts, samples or mm.samples)
    n = 0 if pset is None else pset.data.n_sentences
    if n == 0 and is_flickr30k_root(mm.session.config.data) and all(s.tree is None for s in mm.samples):
        mm.skip(SPACY_MISSING)
    if n < MIN_SENTENCES:
        mm.skip(f"{mm.check} needs at least {MIN_SENTENCES} {WHAT[modality]}; the run has {n}")
    return pset


def _scores(mm, modality):
    def compute():
        pset = _probe_set(mm, modality)
        cfg = mm.session.config
        # the control task's probe (for probe.selectivity) is fitted in the same program as the real ones
        scores = probe_scores(pset, cfg.seed, cfg.probe_regimen, cfg.probe_rank,
                              control=mm.session.wants("probe.selectivity"))
        series = mm.session.series.setdefault("probe", {})
        series[modality] = {k: scores[k] for k in ("layers", "nspr", "dspr", "uuas", "root_acc") if k in scores}
        if "example" in scores and (modality == "text" or "example" not in series):
            series["example"] = {"modality": modality, **scores["example"]}
        mm.session.timings[f"probe_{modality}_fit_s"] = scores["fit_s"]
        return scores
    return mm.session.memo(f"probe:{modality}", compute)


def _split(scores):
    return {"n_train": scores["n_train"], "n_dev": scores["n_dev"], "n_test": scores["n_test"],
            "regimen": scores["regimen"]}


@pytest.mark.mm("probe.depth", over=("modality", "layer"))
def test_probe_depth(mm, modality, layer):
    scores = _scores(mm, modality)
    for k in mm.layers(modality, layer):
        details = {**_split(scores), "nspr_fallback_all_lengths": scores["nspr_fallback"]}
        if "root_acc" in scores:
            details["root_accuracy"] = scores["root_acc"][k]
        mm.report(scores["nspr"][k], details=details, params={"modality": modality, "layer": k}, final=False)
    mm.finish()


@pytest.mark.mm("probe.distance", over=("modality", "layer"))
def test_probe_distance(mm, modality, layer):
    scores = _scores(mm, modality)
    for k in mm.layers(modality, layer):
        details = {**_split(scores), "uuas": scores["uuas"][k], "dspr_fallback_all_lengths": scores["dspr_fallback"]}
        mm.report(scores["dspr"][k], details=details, params={"modality": modality, "layer": k}, final=False)
    mm.finish()


@pytest.mark.mm("probe.selectivity", over=("modality",))
def test_probe_selectivity(mm, modality):
    """Best-layer DSpr minus the same probe's DSpr on the control task (Hewitt & Liang 2019)."""
    scores = _scores(mm, modality)
    layer, value = best(scores["dspr"])
    cfg = mm.session.config
    control_dspr = scores.get("control_dspr", float("nan"))  # the control task's probe, fitted at the best layer
    details = {"best_layer": layer, "best_dspr": value, "control_task_dspr": control_dspr}
    ctrl = mm.session.control("random-init", mm.adapter) if "random-init" in cfg.controls else None
    if ctrl is not None:
        cset = text_probe_set(ctrl, mm.samples) if modality == "text" else image_probe_set(ctrl, mm.samples)
        if cset is not None and cset.data.n_sentences >= MIN_SENTENCES:
            random_scores = probe_scores(cset, cfg.seed, cfg.probe_regimen, cfg.probe_rank, kinds=("distance",))
            details["random_init_best_dspr"] = best(random_scores["dspr"])[1]
            details["selectivity_vs_random_init"] = value - details["random_init_best_dspr"]
    mm.report(value - control_dspr, details=details)


@pytest.mark.mm("probe.text_retention")
def test_probe_text_retention(mm):
    """RQ1 of Milewski et al.: the model's best text DSpr as a fraction of a text-only reference's."""
    cfg = mm.session.config
    if not cfg.text_reference:
        mm.skip("probe.text_retention needs a text-only reference encoder: pass --mm-text-reference=SPEC "
                "(a BERT-style hub id, a save_pretrained dir, or random:bert-base-uncased)")
    scores = _scores(mm, "text")
    reference = mm.session.reference_adapter()
    pset = _probe_set(mm, "text")
    treebank = mm.session.treebank_activations(mm.adapter)
    samples = treebank[1] if treebank is not None else mm.samples
    from mmdiag.record import record

    ref_acts = record(reference, samples, cfg.batch_size, words=True)
    ref_set = text_probe_set(ref_acts, samples)
    if ref_set is None or ref_set.data.n_sentences != pset.data.n_sentences:
        mm.skip("the reference encoder's tokenizer lost words of some sentences; no like-for-like comparison")
    ref = probe_scores(ref_set, cfg.seed, cfg.probe_regimen, cfg.probe_rank, kinds=("distance",))
    (_, model_dspr), (_, ref_dspr) = best(scores["dspr"]), best(ref["dspr"])
    (_, model_uuas), (_, ref_uuas) = best(scores["uuas"]), best(ref["uuas"])
    value = model_dspr / ref_dspr if ref_dspr and not math.isnan(ref_dspr) else float("nan")
    mm.report(value, details={"model_best_dspr": model_dspr, "reference_best_dspr": ref_dspr,
                              "model_best_uuas": model_uuas, "reference_best_uuas": ref_uuas,
                              "uuas_ratio": model_uuas / ref_uuas if ref_uuas else None,
                              "reference": cfg.text_reference})


@pytest.mark.mm("probe.scene_vs_raw")
def test_probe_scene_vs_raw(mm):
    """RQ2 of Milewski et al.: best-layer scene-tree DSpr minus the DSpr on raw patch embeddings (layer 0)."""
    scores = _scores(mm, "image")
    layer, value = best(scores["dspr"][1:])
    raw = scores["dspr"][0]
    mm.report(value - raw, details={"best_layer": layer + 1, "best_dspr": value, "raw_dspr": raw,
                                    "best_uuas": scores["uuas"][layer + 1], "raw_uuas": scores["uuas"][0]})


@pytest.mark.mm("probe.image_effect")
def test_probe_image_effect(mm):
    """Sub-RQ1.1 of Milewski et al.: text DSpr with the image minus with the image masked out."""
    if not getattr(mm.adapter, "joint_attention", False):
        mm.skip("probe.image_effect applies to single-stream and decoder models, whose text states can see the "
                f"image; the text tower of this {mm.adapter.family} model never sees it")
    scores = _scores(mm, "text")
    cfg = mm.session.config
    blind = mm.session.without_image(mm.adapter)
    pset = text_probe_set(blind, mm.samples)
    if pset is None or pset.data.n_sentences < MIN_SENTENCES:
        mm.skip(f"probe.image_effect needs at least {MIN_SENTENCES} {WHAT['text']}")
    without = mm.session.memo("probe:text-without-image", lambda: probe_scores(
        pset, cfg.seed, cfg.probe_regimen, cfg.probe_rank, kinds=("distance",)))
    (layer, with_image), (layer_wo, without_image) = best(scores["dspr"]), best(without["dspr"])
    mm.report(with_image - without_image,
              details={"with_image_dspr": scores["dspr"], "without_image_dspr": without["dspr"],
                       "best_layer_with_image": layer, "best_layer_without_image": layer_wo})
