"""A user's own mmdiag checks, as docs/writing-checks.md builds them (run by tests/examples/test_examples.py).

Three things a team typically adds: a scalar check with a threshold and its own parameter (``k``), a
per-layer check that needs the attention maps recorded, and a series for the report.
"""
import math

import pytest
import torch

from mmdiag import CheckSpec
from mmdiag.tokens import GROUP_IMAGE, GROUP_TEXT

SPREAD = CheckSpec(
    "mine.spread", title="Variance in the top-k principal directions", over=("modality",),
    threshold="<:0.99", higher_is_better=False, series=("mine.spectrum",),
    meaning="share of the final embeddings' variance that lies in their k leading principal directions",
    healthy="well below 1: the embeddings use more than k directions", source="PCA; our team's release checklist")

ATTENTION_FOCUS = CheckSpec(
    "mine.attention_focus", title="Attention focus per layer", over=("modality", "layer"), blocks=True,
    needs=("attentions",), higher_is_better=None,
    meaning="exp(−mean attention entropy): one over the effective number of keys a query attends to",
    source="our team's release checklist")


def _spectrum(mm, modality):
    """Squared singular values of the centred embeddings, computed once and shared by both k."""
    def compute():
        (emb,) = mm.require_embeddings(modality)
        x = torch.as_tensor(emb, dtype=torch.float64)
        values = torch.linalg.svdvals(x - x.mean(0)) ** 2
        return mm.publish(("mine.spectrum", modality), (values / values.sum()).tolist())
    return mm.memo(f"mine.spectrum:{modality}", compute)


@pytest.mark.mm(SPREAD)
@pytest.mark.parametrize("k", [1, 4])
def test_spread(mm, modality, k):
    spectrum = _spectrum(mm, modality)
    mm.report(sum(spectrum[:k]), details={"k": k, "directions": len(spectrum)})


@pytest.mark.mm(ATTENTION_FOCUS)
def test_attention_focus(mm, modality, layer):
    mm.require_modality(modality)
    stream = mm.acts.attention.get(modality) or mm.acts.attention.get("joint")
    if stream is None:
        mm.skip("the adapter returned no attention maps")
    entropy = stream.entropy_mean  # (blocks, token groups), in nats
    group = {"text": GROUP_TEXT, "image": GROUP_IMAGE}[modality]
    layers = [layer] if layer is not None else range(1, entropy.shape[0] + 1)
    mm.report_layers(layers, lambda k: math.exp(-float(entropy[k - 1, group])))
