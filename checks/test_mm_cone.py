"""Cone effect (Liang et al. 2022, "Mind the Gap", arXiv:2203.02053, §3).

Embeddings of a model occupy a narrow cone: their mean pairwise cosine
similarity is far above 0, and each layer narrows it further.
"""
import pytest

from mmdiag import CheckSpec, PlotSpec, Threshold
from mmdiag.analyses.geometry import cone_series, final_cone_controls
from mmdiag.metrics.cone import cone_narrowing, mean_pairwise_cosine
from mmdiag.uncertainty import batched_cone

SOURCE = "Liang et al. 2022, Mind the Gap, arXiv:2203.02053"
CONE_PLOT = PlotSpec("cone-layer", ("cone.layer",), "cone_plot",
                     "Mean pairwise cosine similarity of the pooled representations per layer (solid), the mean over "
                     "tokens (dash-dotted) and the control runs (dashed). Higher = narrower cone (Liang et al. 2022).")

CONE_FINAL = CheckSpec(
    "cone.final", title="Cone of the final embeddings", over=("modality",), higher_is_better=False,
    threshold=Threshold("<", 0.95, "fail", "mean pairwise cosine >= 0.95 means the embeddings have collapsed to a "
                        "line; trained CLIP sits near 0.5 (Liang et al. 2022, Fig. 2)"),
    meaning="mean off-diagonal cosine similarity of the final (projected) embeddings",
    healthy="trained CLIP on COCO: image 0.47, text 0.51; random init on noise: 0.94 / 0.41", source=SOURCE)
CONE_LAYER = CheckSpec(
    "cone.layer", title="Cone per layer", over=("modality", "layer"), higher_is_better=False,
    threshold=Threshold("<", 0.99, "warn", "a layer whose pooled states are all but identical carries no "
                        "information"),
    series=("cone.layer",), plots=(CONE_PLOT,),
    meaning="mean off-diagonal cosine similarity of the pooled state of each layer (entry 0 = embedding output)",
    healthy="well below 1; the paper's cone narrows with depth", source=SOURCE)
CONE_NARROWING = CheckSpec(
    "cone.narrowing", title="Cone narrowing with depth", over=("modality",), higher_is_better=None,
    series=("cone.layer",), plots=(CONE_PLOT,),
    meaning="Spearman correlation of the per-layer cone with depth (positive: the cone narrows deeper in)",
    healthy="positive in the paper's models (each non-linear layer narrows the cone)", source=SOURCE,
    uncertainty="none")


def _series(mm, modality):
    def compute():
        return mm.publish(("cone.layer", modality), cone_series(mm.acts, modality, mm.controls()))
    return mm.memo(f"cone.layer:{modality}", compute)


@pytest.mark.mm(CONE_FINAL)
def test_cone_final(mm, modality):
    emb = mm.acts.embeds.get(modality)
    if emb is None:
        mm.skip(f"the model has no final {modality} embedding (cone.final needs a {modality} tower)")
    mm.require_n(2)
    controls = final_cone_controls(mm.controls(), modality)
    mm.report(mean_pairwise_cosine(emb), details={"n": int(emb.shape[0]), "dim": int(emb.shape[1]),
                                                  "controls": controls,
                                                  "paper": {"clip_pretrained": {"image": 0.47, "text": 0.51},
                                                            "random_init_noise": {"image": 0.94, "text": 0.41}}},
              interval=mm.bootstrap(batched_cone(emb)))


@pytest.mark.mm(CONE_LAYER)
def test_cone_layer(mm, modality, layer):
    mm.require_modality(modality)
    mm.require_n(2)
    series = _series(mm, modality)
    def interval(k):  # the cone of the states the value was measured on (the patch mean where CLS is constant)
        pooling = series["pooling"][k]
        states = mm.acts.pooled if pooling == "pooled token" else mm.acts.mean_tokens
        return mm.bootstrap(batched_cone(states[modality][k])) if not pooling.startswith("not computed") else None
    mm.report_layers(mm.layers(modality, layer), lambda k: series["values"][k], lambda k: {
        "mean_tokens": series["mean_tokens"][k], "pooling": series["pooling"][k],
        "controls": {name: curve[k] for name, curve in series["controls"].items() if k < len(curve)}},
        interval=interval)


@pytest.mark.mm(CONE_NARROWING)
def test_cone_narrowing(mm, modality):
    mm.require_modality(modality)
    mm.require_n(2)
    series = _series(mm, modality)
    values = series["values"]
    if len(values) < 3:
        mm.skip(f"cone.narrowing needs at least 3 layers, the {modality} tower has {len(values)}")
    details = {"cone_per_layer": values}
    emb = mm.acts.embeds.get(modality)
    if emb is not None:
        details["cone_final"] = mean_pairwise_cosine(emb)
    mm.report(cone_narrowing(values), details=details)
