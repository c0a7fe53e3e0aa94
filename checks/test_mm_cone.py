"""Cone effect (Liang et al. 2022, "Mind the Gap", arXiv:2203.02053, §3).

Embeddings of a model occupy a narrow cone: their mean pairwise cosine
similarity is far above 0, and each layer narrows it further.
"""
import pytest

from mmdiag.analyses.geometry import cone_series, final_cone_controls
from mmdiag.metrics.cone import cone_narrowing, mean_pairwise_cosine


def _series(mm, modality):
    def compute():
        controls = mm.controls()
        series = cone_series(mm.acts, modality, controls)
        mm.session.series.setdefault("cone.layer", {})[modality] = series
        return series
    return mm.session.memo(f"cone.layer:{modality}", compute)


@pytest.mark.mm("cone.final", over=("modality",))
def test_cone_final(mm, modality):
    emb = mm.acts.embeds.get(modality)
    if emb is None:
        mm.skip(f"the model has no final {modality} embedding (cone.final needs a {modality} tower)")
    mm.require_n(2)
    controls = final_cone_controls(mm.controls(), modality)
    mm.report(mean_pairwise_cosine(emb), details={"n": int(emb.shape[0]), "dim": int(emb.shape[1]),
                                                  "controls": controls,
                                                  "paper": {"clip_pretrained": {"image": 0.47, "text": 0.51},
                                                            "random_init_noise": {"image": 0.94, "text": 0.41}}})


@pytest.mark.mm("cone.layer", over=("modality", "layer"))
def test_cone_layer(mm, modality, layer):
    mm.require_modality(modality)
    mm.require_n(2)
    series = _series(mm, modality)
    for k in mm.layers(modality, layer):
        details = {"mean_tokens": series["mean_tokens"][k], "pooling": series["pooling"][k],
                   "controls": {name: curve[k] for name, curve in series["controls"].items() if k < len(curve)}}
        mm.report(series["values"][k], details=details, params={"modality": modality, "layer": k}, final=False)
    mm.finish()


@pytest.mark.mm("cone.narrowing", over=("modality",))
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
