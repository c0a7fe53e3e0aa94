"""Attention-modality share (VL-InterpreT, Aflalo et al. 2022, arXiv:2203.17247; DESIGN.md §1.3).

For each query token of one modality, the share of its attention mass that
lands on key tokens of a group (image, text, or special: [CLS], [SEP], the
image CLS, BOS), averaged over valid queries, per layer and head; a query
modality's shares over the three key groups add up to 1. Causal decoders count
a text query toward text->image only once it can see an image token. Attention
maps are reduced per batch, never stored.
"""
import math

import numpy as np
import pytest

from mmdiag import CheckSpec, PlotSpec, Threshold
from mmdiag.metrics.attention import DIRECTIONS, direction_index, query_share_sums
from mmdiag.tokens import GROUP_IMAGE, GROUP_TEXT

JOINT = "joint"
GROUP = {"image": GROUP_IMAGE, "text": GROUP_TEXT}  # rows of the per-group statistics
VL_INTERPRET = "Aflalo et al. 2022, VL-InterpreT, arXiv:2203.17247"
SHARE_PLOT = PlotSpec("attention-share", ("attention.share",), "attention_plot",
                      "Attention mass share per layer and head: for queries of the first modality, the row-normalised "
                      "attention weight on keys of the second group (special: [CLS], [SEP], image CLS, BOS), averaged "
                      "over queries. A row of panels is one query modality: its shares add up to 1.")
IMAGE_PLOT = PlotSpec("attention-image", ("attention_image",), "attention_image_svg",
                      "Attention drawn over the image for a few example pairs: per caption word (columns) and layer "
                      "(rows), where the word's attention lands among the image patches (mean over heads; a row per "
                      "selected head when the run kept one). For dual encoders: the vision tower's CLS attention. "
                      "Colour marks attention relative to the uniform share, one scale for every panel (uniform "
                      "attention shows none; full colour at 4× the uniform share); Σ is the total attention weight "
                      "on the image.")
HIDDEN_PLOT = PlotSpec("hidden-2d", ("hidden_2d",), "hidden_plot",
                       "Hidden states per layer projected to 2-D, coloured by modality.")

SHARE = CheckSpec(
    "attention.share", title="Attention-modality share per layer", over=("direction", "layer"), blocks=True,
    needs_joint=True, needs=("attentions",), higher_is_better=None, series=("attention.share",),
    plots=(SHARE_PLOT, IMAGE_PLOT),
    meaning="for queries of one modality, the row-normalised attention mass on keys of a group (image, text or "
            "special tokens), averaged over valid queries (per head and without attention sinks in details)",
    healthy="a query modality's shares over image, text and special keys sum to 1 (details: query_sum); a "
            "text->image share near 0 at every layer means a blind model",
    source=VL_INTERPRET)
IMAGE_USE = CheckSpec(
    "attention.image_use", title="Largest text→image share over layers", needs=("attentions",),
    higher_is_better=True,
    threshold=Threshold(">", 0.01, "fail", "if no layer sends even 1% of the text tokens' attention to the image, "
                        "the model answers from the text alone (VL-InterpreT's cross-modal view)"),
    meaning="the largest text->image attention share over the layers of a joint model",
    healthy="well above 0.01 (trained LLaVA-style models send a large share of text attention to the image)",
    source=VL_INTERPRET)
ENTROPY = CheckSpec(
    "attention.entropy", title="Attention entropy per layer", over=("modality", "layer"), blocks=True,
    needs=("attentions",), higher_is_better=None, plots=(IMAGE_PLOT, HIDDEN_PLOT),
    meaning="mean entropy (nats) of the attention rows of a modality's queries, per layer (per head in details)",
    healthy="between 0 (each query attends to one key) and log(number of keys) (uniform attention)",
    source=VL_INTERPRET)
GROUNDING = CheckSpec(
    "attention.grounding", title="Attention inside the phrase's own box", over=("layer",), blocks=True,
    needs_joint=True, cross_ok=True, needs=("attentions",), higher_is_better=True,
    meaning="the share of a phrase's words' image attention that falls inside the phrase's own box",
    healthy="above chance, the box's share of the image keys (in details)", source=VL_INTERPRET)


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
        series = {"layers": list(range(1, stats.share.shape[0] + 1)), "heads": int(stats.share.shape[1]),
                  "causal": bool(mm.acts.causal.get(JOINT, False)), "directions": {}, "directions_nosink": {}}
        for name in DIRECTIONS:
            a, b = direction_index(name)
            series["directions"][name] = stats.share[:, :, a, b].tolist()
            series["directions_nosink"][name] = stats.share_nosink[:, :, a, b].tolist()
        return mm.publish("attention.share", series)
    return mm.memo("attention.share", compute)


@pytest.mark.mm(SHARE)
def test_attention_share(mm, direction, layer):
    stats = _joint(mm)
    _share_series(mm, stats)
    a, b = direction_index(direction)
    layers = [layer] if layer is not None else list(range(1, stats.share.shape[0] + 1))
    source, target = direction.split("->")

    def value(k):
        share = float(stats.share_mean[k - 1, a, b])
        if math.isnan(share):
            mm.skip(f"no {source} query could attend to {target} tokens (the data or the model has none of them)")
        return share

    def details(k):
        controls = {name: float(acts.attention[JOINT].share_mean[k - 1, a, b])
                    for name, acts in mm.controls().items() if acts is not None and JOINT in acts.attention}
        return {"per_head": stats.share[k - 1, :, a, b].tolist(), "controls": controls,
                "without_sinks": float(stats.share_mean_nosink[k - 1, a, b]),
                "all_queries": float(np.nanmean(stats.share_total[k - 1, :, a, b])),
                "query_sum": float(query_share_sums(stats.share_mean[k - 1, a])),
                "sinks_per_sample": float(np.mean(stats.sinks_per_sample[k - 1]))}
    mm.report_layers(layers, value, details)


@pytest.mark.mm(IMAGE_USE)
def test_attention_image_use(mm):
    """The largest text->image share over layers: near 0 means the text ignores the image."""
    stats = _joint(mm)
    a, b = direction_index("text->image")
    shares = stats.share_mean[:, a, b]
    if np.all(np.isnan(shares)):
        mm.skip("no text query could see an image token")
    best = int(np.nanargmax(shares))
    controls = {}
    for name, acts in mm.controls().items():
        if acts is not None and JOINT in acts.attention:
            controls[name] = float(np.nanmax(acts.attention[JOINT].share_mean[:, a, b]))
    mm.report(float(shares[best]), details={"layer": best + 1, "per_layer": shares.tolist(), "controls": controls})


@pytest.mark.mm(ENTROPY)
def test_attention_entropy(mm, modality, layer):
    mm.require_modality(modality)
    attention = mm.acts.attention
    stream = JOINT if JOINT in attention else modality
    if stream not in attention:
        mm.skip(f"the adapter returned no attention maps for {modality} (it needs an output_attentions switch)")
    stats = attention[stream]
    group = GROUP[modality]
    n_layers = stats.entropy_mean.shape[0]
    layers = [layer] if layer is not None else list(range(1, n_layers + 1))

    def value(k):
        if k - 1 >= n_layers:
            mm.skip(f"the {modality} stream has {n_layers} attention layers")
        return float(stats.entropy_mean[k - 1, group])
    mm.report_layers(layers, value, lambda k: {"per_head": stats.entropy[k - 1, :, group].tolist(),
                                               "stream": stream, "unit": "nats"})


@pytest.mark.mm(GROUNDING)
def test_attention_grounding(mm, layer):
    """Share of a phrase's attention (from its words) that lands inside its own box, vs the box's area as chance."""
    grounding = mm.acts.grounding
    stream = next((s for s in (JOINT, "cross") if s in grounding), None)
    if stream is None:
        mm.skip("attention.grounding needs a model whose text attends to image regions or patches with phrase boxes "
                "in the data (VisualBERT/LXMERT-style adapters with --mm-data=synthetic)")
    stats = grounding[stream]
    n_layers = len(stats.share_mean)
    layers = [layer] if layer is not None else list(range(1, n_layers + 1))

    def value(k):
        if k > n_layers:
            mm.skip(f"the {stream} attention stream has {n_layers} layers")
        share = float(stats.share_mean[k - 1])
        if math.isnan(share):
            mm.skip("no grounded phrase could be scored (no phrase words or boxes in the data)")
        return share
    mm.report_layers(layers, value, lambda k: {
        "chance": float(stats.chance_mean[k - 1]), "lift": float(stats.lift_mean[k - 1]),
        "above_chance": float(stats.above_chance_mean[k - 1]), "per_head": stats.share[k - 1].tolist(),
        "stream": stream})
