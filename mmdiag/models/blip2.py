"""Adapter for BLIP-2 (Li et al. 2023, arXiv:2301.12597; ``Blip2ForConditionalGeneration``).

BLIP-2 bridges a frozen image encoder and a frozen language model with the
Q-Former: ``num_query_tokens`` learned queries self-attend and, every
``cross_attention_frequency``-th Q-Former layer, cross-attend to the vision
tower's tokens (CLS + patches); the projected query outputs are written into the
language model's sequence at the ``<image>`` placeholder positions (``image_token_id``),
which the processor puts in front of the prompt. The run is the generic decoder
adapter's (:class:`~mmdiag.models.decoder_vlm.DecoderVLMAdapter`: sequence
``<image> x Q, BOS, caption``, the causal ``"joint"`` stream of the language model)
with two changes:

- ``hidden["image"]``: the vision tower's states (embedding output, then each
  layer: ``vision num_hidden_layers + 1`` entries) over CLS + patches (pooled:
  CLS, content: the patches, ``patch_grid`` the square grid after CLS);
  ``hidden["text"]``: the language model's states from the caption on, as the
  generic adapter gives them. ``embeds["image"]``: the mean of the projected
  query outputs (what the language model reads, in its width); ``embeds["text"]``:
  the mean of the caption's last states.
- InstructBLIP (``InstructBlipForConditionalGeneration``, same layout): its Q-Former
  also reads the instruction (``qformer_input_ids`` from the processor's Q-Former
  tokenizer: here the prompt before the caption, i.e. no instruction); the cross
  stream is still the queries' cross-attention.
- attention stream ``"cross"``: the Q-Former's cross-attention layers only (forward
  hooks on them), in LXMERT's square layout ``[queries | vision tokens]``: the
  query rows hold the query->vision map over the vision columns, vision rows are
  empty. The queries count as the TEXT group (they are the language side of the
  bridge), vision keys IMAGE (patches) or SPECIAL (CLS), so the stream's
  text->image share is the share of the queries' cross-attention on patches.
  ``"joint"`` stays the language model's self-attention over ``[queries' outputs |
  BOS caption]`` (attention.share reads it).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

import torch

from mmdiag.errors import SpecError
from mmdiag.models.attention_views import CrossMaps
from mmdiag.models.base import GROUP_IMAGE, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream, Trace
from mmdiag.models.decoder_vlm import DecoderVLMAdapter

CROSS = "cross"
#: the processor outputs InstructBLIP's Q-Former reads (the instruction, tokenised by its own tokenizer)
QFORMER_INPUTS = ("qformer_input_ids", "qformer_attention_mask")


def qformer_cross_layers(qformer: torch.nn.Module) -> list[int]:
    """Indices of the Q-Former layers that cross-attend to the image."""
    return [i for i, layer in enumerate(qformer.encoder.layer) if getattr(layer, "has_cross_attention", False)]


def square_cross(maps: list[torch.Tensor]) -> CrossMaps:
    """The ``(B, H, Q, N)`` query->vision maps, read in the square ``[queries | vision]`` layout ``(B, H, Q+N,
    Q+N)``; the squares are built only where indexed (:class:`~mmdiag.models.attention_views.CrossMaps`)."""
    return CrossMaps(maps)


class _Blip2Core:
    """Calls the model like the generic adapter's ``core()``, keeping the vision tower's and Q-Former's outputs."""

    def __init__(self, adapter: "Blip2Adapter") -> None:
        self.adapter = adapter

    def __call__(self, input_ids, attention_mask, output_hidden_states, output_attentions, pixel_values, **extra):
        model = self.adapter.model
        store: dict[str, Any] = {"cross": []}
        handles = []
        if output_attentions:
            for index in qformer_cross_layers(model.qformer):
                module = model.qformer.encoder.layer[index].crossattention.attention
                handles.append(module.register_forward_hook(lambda m, a, out: store["cross"].append(out[1])))
        # InstructBLIP: the Q-Former also reads the instruction (its own tokenizer's ids)
        qformer = {k: extra.pop(k) for k in QFORMER_INPUTS if k in extra}
        try:
            features = model.get_image_features(pixel_values, return_dict=True, output_hidden_states=True, **qformer)
            out = model(pixel_values=None, input_ids=input_ids, attention_mask=attention_mask,
                        mm_encoder_outputs={"image": features}, output_hidden_states=True,
                        output_attentions=output_attentions, **qformer, **extra)
        finally:
            for handle in handles:
                handle.remove()
        self.adapter._last = SimpleNamespace(vision=features.hidden_states, projected=features.pooler_output,
                                             cross=store["cross"])
        lm = out.language_model_outputs
        return SimpleNamespace(hidden_states=lm.hidden_states, attentions=getattr(lm, "attentions", None))


class Blip2Adapter(DecoderVLMAdapter):
    """BLIP-2: vision tower, Q-Former cross-attention, language model (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("family", "blip-2")
        kwargs.setdefault("placeholder", "")  # the processor writes the <image> tokens in front itself
        model = args[0] if args else kwargs["model"]
        if not model.config.use_decoder_only_language_model:
            raise SpecError("mmdiag's BLIP-2 adapter reads decoder-only language models (OPT, Vicuna); this "
                            "checkpoint's is an encoder-decoder (Flan-T5), whose decoder is a second stack that does "
                            "not map onto one text stream")
        super().__init__(*args, **kwargs)
        vc = self.model.config.vision_config
        self.side = int(vc.image_size) // int(vc.patch_size)
        self._last: Optional[SimpleNamespace] = None

    def core(self) -> Any:
        return _Blip2Core(self)

    def layer_counts(self) -> dict[str, int]:
        return {IMAGE: int(self.model.config.vision_config.num_hidden_layers) + 1,
                TEXT: int(self.text_config().num_hidden_layers) + 1}

    def patch_grid(self, image_mask: torch.Tensor) -> Optional[tuple[int, int]]:
        return (self.side, self.side)

    def patch_offset(self) -> int:
        return 1

    def forward(self, batch: dict[str, Any]) -> Trace:
        trace = super().forward(batch)
        last = self._last
        vision = list(last.vision)
        batch_size, n_vision = vision[0].shape[:2]
        device = vision[0].device
        mask = torch.ones((batch_size, n_vision), dtype=torch.bool, device=device)
        content = mask.clone()
        content[:, 0] = False
        trace.hidden[IMAGE] = vision
        trace.mask[IMAGE] = mask
        trace.content[IMAGE] = content
        trace.pool_index[IMAGE] = torch.zeros(batch_size, dtype=torch.long, device=device)
        trace.patch_grid = (self.side, self.side)
        trace.patch_offset = 1
        trace.embeds[IMAGE] = last.projected.float().mean(dim=1).to(trace.embeds[TEXT].dtype)
        if self.output_attentions and last.cross:
            n_query = last.cross[0].shape[2]
            groups = torch.cat([torch.full((batch_size, n_query), GROUP_TEXT, dtype=torch.long, device=device),
                                torch.full((batch_size, n_vision), GROUP_IMAGE, dtype=torch.long, device=device)],
                               dim=1)
            groups[:, n_query] = GROUP_SPECIAL  # the vision CLS
            trace.attention[CROSS] = AttentionStream(square_cross(last.cross), groups, causal=False)
        self._last = None
        return trace

