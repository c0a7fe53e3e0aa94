"""Attention-modality share (VL-InterpreT, Aflalo et al. 2022, arXiv:2203.17247; DESIGN.md §1.3).

For each query token of one modality, the share of its attention mass that
lands on key tokens of another, averaged over valid queries, per layer and
head. Causal decoders count a text query toward text->image only once it can
see an image token. Attention maps are reduced per batch, never stored.
"""
import math

import numpy as np
import pytest

from mmdiag.metrics.attention import direction_index

JOINT = "joint"
GROUP = {"image": 2, "text": 1}


def _joint(mm):
    attention = mm.acts.attention
    if JOINT not in attention:
        family = getattr(mm.adapter, "family", "this")
        mm.skip(f"{mm.check} applies to models whose text and image tokens share one transformer "
                f"(single-stream such as ViLT, or LLaVA-style decoders); the {family} model keeps them in "
                "separate towers (attention.entropy still runs per tower)")
    return attention[JOINT]


def _share_series(mm, stats):
    def compute():
        from mmdiag.metrics.attention import DIRECTIONS

        series = {"layers": list(range(1, stats["share"].shape[0] + 1)), "heads": int(stats["share"].shape[1]),
                  "causal": bool(mm.acts.causal.get(JOINT, False)), "directions": {}, "directions_nosink": {}}
        for name in DIRECTIONS:
            a, b = direction_index(name)
            series["directions"][name] = stats["share"][:, :, a, b].tolist()
            series["directions_nosink"][name] = stats["share_nosink"][:, :, a, b].tolist()
        mm.session.series["attention.share"] = series
        return series
    return mm.session.memo("attention.share", compute)


@pytest.mark.mm("attention.share", over=("direction", "layer"), blocks=True, needs_joint=True)
def test_attention_share(mm, direction, layer):
    stats = _joint(mm)
    _share_series(mm, stats)
    a, b = direction_index(direction)
    layers = [layer] if layer is not None else list(range(1, stats["share"].shape[0] + 1))
    for k in layers:
        per_head = stats["share"][k - 1, :, a, b]
        value = float(stats["share_mean"][k - 1, a, b])
        if math.isnan(value):
            mm.skip(f"no {direction.split('->')[0]} query could attend to {direction.split('->')[1]} tokens "
                    "(the data or the model has none of them)")
        controls = {}
        for name, acts in mm.controls().items():
            if acts is not None and JOINT in acts.attention:
                controls[name] = float(acts.attention[JOINT]["share_mean"][k - 1, a, b])
        details = {"per_head": per_head.tolist(), "controls": controls,
                   "without_sinks": float(stats["share_mean_nosink"][k - 1, a, b]),
                   "all_queries": float(np.nanmean(stats["share_total"][k - 1, :, a, b])),
                   "sinks_per_sample": float(np.mean(stats["sinks_per_sample"][k - 1]))}
        mm.report(value, details=details, params={"direction": direction, "layer": k}, final=False)
    mm.finish()


@pytest.mark.mm("attention.image_use")
def test_attention_image_use(mm):
    """The largest text->image share over layers: near 0 means the text ignores the image."""
    stats = _joint(mm)
    a, b = direction_index("text->image")
    shares = stats["share_mean"][:, a, b]
    if np.all(np.isnan(shares)):
        mm.skip("no text query could see an image token")
    best = int(np.nanargmax(shares))
    controls = {}
    for name, acts in mm.controls().items():
        if acts is not None and JOINT in acts.attention:
            controls[name] = float(np.nanmax(acts.attention[JOINT]["share_mean"][:, a, b]))
    mm.report(float(shares[best]), details={"layer": best + 1, "per_layer": shares.tolist(), "controls": controls})


@pytest.mark.mm("attention.entropy", over=("modality", "layer"), blocks=True)
def test_attention_entropy(mm, modality, layer):
    mm.require_modality(modality)
    attention = mm.acts.attention
    stream = JOINT if JOINT in attention else modality
    if stream not in attention:
        mm.skip(f"the adapter returned no attention maps for {modality} (it needs an output_attentions switch)")
    stats = attention[stream]
    group = GROUP[modality]
    layers = [layer] if layer is not None else list(range(1, stats["entropy_mean"].shape[0] + 1))
    for k in layers:
        if k - 1 >= stats["entropy_mean"].shape[0]:
            mm.skip(f"the {modality} stream has {stats['entropy_mean'].shape[0]} attention layers")
        value = float(stats["entropy_mean"][k - 1, group])
        mm.report(value, details={"per_head": stats["entropy"][k - 1, :, group].tolist(), "stream": stream,
                                  "unit": "nats"}, params={"modality": modality, "layer": k}, final=False)
    mm.finish()


@pytest.mark.mm("attention.grounding", over=("layer",), blocks=True, needs_joint=True, cross_ok=True)
def test_attention_grounding(mm, layer):
    """Share of a phrase's attention (from its words) that lands inside its own box, vs the box's area as chance."""
    grounding = mm.acts.grounding
    stream = next((s for s in (JOINT, "cross") if s in grounding), None)
    if stream is None:
        mm.skip("attention.grounding needs a model whose text attends to image regions or patches with phrase boxes "
                "in the data (VisualBERT/LXMERT-style adapters with --mm-data=synthetic)")
    stats = grounding[stream]
    n_layers = len(stats["share_mean"])
    layers = [layer] if layer is not None else list(range(1, n_layers + 1))
    for k in layers:
        if k > n_layers:
            mm.skip(f"the {stream} attention stream has {n_layers} layers")
        value = float(stats["share_mean"][k - 1])
        if math.isnan(value):
            mm.skip("no grounded phrase could be scored (no phrase words or boxes in the data)")
        mm.report(value, details={"chance": float(stats["chance_mean"][k - 1]), "lift": float(stats["lift_mean"][k - 1]),
                                  "above_chance": float(stats["above_chance_mean"][k - 1]),
                                  "per_head": stats["share"][k - 1].tolist(), "stream": stream},
                  params={"layer": k}, final=False)
    mm.finish()
