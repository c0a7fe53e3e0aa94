"""Adapter for Hugging Face ``LxmertModel`` (Tan & Bansal 2019, arXiv:1908.07490).

LXMERT is two-stream: a language encoder (``l_layers`` BERT layers over
``[CLS] words [SEP]``), an object-relationship encoder (``r_layers`` layers over
the image regions, each embedded from its feature and its box) and a
cross-modality encoder (``x_layers`` layers, each: text->image and image->text
cross-attention with *shared* weights, then a self-attention per stream, then
the feed-forward blocks). Regions are those of
:func:`mmdiag.models.region_features.sample_boxes` (whole image first, then the phrase
boxes, i.e. the scene-tree nodes), featurised by the adapter's extractor
(default :class:`~mmdiag.models.region_features.PooledColourFeatures`).

Trace (entry 0 = embedding output, as for every mmdiag adapter):

- ``hidden["text"]``: the language embedding output (captured by a forward hook
  on ``model.embeddings``; HF's ``language_hidden_states`` omits it), then the
  ``l_layers`` language layers, then the ``x_layers`` cross layers:
  ``l + x + 1`` entries. ``hidden["image"]``: the visual feature encoder's output
  (hook on ``encoder.visn_fc``), then ``r_layers``, then ``x_layers``:
  ``r + x + 1`` entries.
- pooled text state: ``[CLS]`` (position 0, what LXMERT's pooler reads); pooled
  image state: the whole-image region (token 0, the scene tree's root).
- content: the caption's word pieces; every real region (whole image included,
  so samples without phrases still have image content).
- ``embeds[m]``: LXMERT has no per-modality embedding space (its
  ``pooled_output`` is a text-CLS head), so ``embeds[m]`` is the mean of modality
  ``m``'s content tokens in the last layer's output.
- no patches: ``patch_grid`` is None; ``patch_offset`` is 1 so that
  :meth:`region_masks` + ``Recorder.add_regions`` give the scene-tree node states
  straight from the image tokens.

Attention (``output_attentions``): HF returns only the language/vision
self-attention of the single-modality layers and the text->image
cross-attention. The adapter captures *every* attention map instead, by forward
hooks on each ``LxmertAttention`` module that switch its ``output_attentions`` on
and keep the probabilities (the computation is unchanged: callers only read the
first output). Streams:

- ``"text"``: language self-attention, ``l + x`` layers (the single-modality
  layers, then each cross layer's language self-attention), groups [CLS]/[SEP]
  SPECIAL, words TEXT, padding PAD; bidirectional.
- ``"image"``: region self-attention, ``r + x`` layers; every region IMAGE.
- ``"cross"``: the ``x`` cross-attention layers, written into the square layout
  ``[text tokens | region tokens]`` so that the standard
  :class:`~mmdiag.recording.attention.ShareAccumulator` applies: text query rows
  hold the text->image map in the region columns (zeros over text), region query
  rows hold the image->text map in the text columns. Its shares are 1 by
  construction (``joint_attention`` is False: text->image share is not a
  finding here); its ``entropy[:, :, TEXT]`` is the entropy of text queries over
  the regions and ``entropy[:, :, IMAGE]`` that of regions over the words.

``trace.attention["cross"].grounding``, a PhraseMasks: each phrase's word tokens as
queries and its own region token as the in-box key, for
:mod:`mmdiag.metrics.grounding`. :meth:`attention_layers` maps each stream's
attention layers to the hidden-state entries they feed.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from transformers import LxmertModel

from mmdiag.models.base import IMAGE, TEXT, AttentionStream, ModelInfo, Trace
from mmdiag.models.presets import PRESETS as ALL_PRESETS, Preset
from mmdiag.models.region_features import (RegionModelAdapter, build_region_adapter, build_region_parts,
                                            masked_token_mean)

CROSS = "cross"


PRESETS: dict[str, Preset] = {name: p for name, p in ALL_PRESETS.items() if p.family == "lxmert"}


class LxmertAdapter(RegionModelAdapter):
    """LXMERT: language, region and cross-modality encoders (see the module doc)."""

    family = "lxmert"
    modalities = (IMAGE, TEXT)
    joint_attention = False

    def visual_feat_dim(self) -> int:
        return int(self.model.config.visual_feat_dim)

    def _layers(self) -> tuple[int, int, int]:
        cfg = self.model.config
        return int(cfg.l_layers), int(cfg.r_layers), int(cfg.x_layers)

    def layer_counts(self) -> dict[str, int]:
        l_layers, r_layers, x_layers = self._layers()
        return {IMAGE: r_layers + x_layers + 1, TEXT: l_layers + x_layers + 1}

    def attention_layers(self) -> dict[str, list[int]]:
        """Per attention stream, the hidden-state entry (of its query modality) each layer's map feeds:
        text ``1 .. l+x``, image ``1 .. r+x``, cross ``l+1 .. l+x`` (text entries)."""
        l_layers, r_layers, x_layers = self._layers()
        return {TEXT: list(range(1, l_layers + x_layers + 1)), IMAGE: list(range(1, r_layers + x_layers + 1)),
                CROSS: list(range(l_layers + 1, l_layers + x_layers + 1))}

    def _attention_modules(self) -> Iterator[tuple[torch.nn.Module, str, int]]:
        enc = self.model.encoder
        l_layers, r_layers, _ = self._layers()
        for i, layer in enumerate(enc.layer):
            yield layer.attention.self, TEXT, i
        for i, layer in enumerate(enc.r_layers):
            yield layer.attention.self, IMAGE, i
        for i, layer in enumerate(enc.x_layers):
            yield layer.visual_attention.att, CROSS, i
            yield layer.lang_self_att.self, TEXT, l_layers + i
            yield layer.visn_self_att.self, IMAGE, r_layers + i

    @contextmanager
    def _capture(self, attentions: bool) -> Iterator[dict[str, Any]]:
        """Forward hooks: embedding outputs always, every attention map when asked."""
        store: dict[str, Any] = {"text_emb": None, "image_emb": None, "attn": {}}
        handles = [
            self.model.embeddings.register_forward_hook(lambda m, a, out: store.__setitem__("text_emb", out)),
            self.model.encoder.visn_fc.register_forward_hook(lambda m, a, out: store.__setitem__("image_emb", out)),
        ]

        def force(module, args, kwargs):
            return args, {**kwargs, "output_attentions": True}

        def keep(key):
            def hook(module, args, out):
                store["attn"].setdefault(key, []).append(out[1])
            return hook

        if attentions:
            for module, stream, index in self._attention_modules():
                handles.append(module.register_forward_pre_hook(force, with_kwargs=True))
                handles.append(module.register_forward_hook(keep((stream, index))))
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        if batch.get("hide"):
            raise ValueError("LXMERT cannot hide a modality: with every key of one stream masked, its "
                             "cross-attention softmax still spreads over them (a knock-out needs a joint "
                             "stream, e.g. VisualBERT)")
        text = batch["text"]
        regions = batch["regions"]
        ids = text.input_ids.to(self.device)
        text_mask = text.attention_mask.to(self.device).bool()
        region_mask = regions.mask.to(self.device)
        with self._capture(self.output_attentions) as store:
            out = self.model(input_ids=ids, attention_mask=text_mask.long(),
                             token_type_ids=torch.zeros_like(ids),
                             visual_feats=regions.feats.to(self.device, self.dtype),
                             visual_pos=regions.pos.to(self.device, self.dtype),
                             visual_attention_mask=region_mask.long(), output_hidden_states=True)
        word_ids = text.word_ids.to(self.device)
        content_text = word_ids >= 0
        batch_size = ids.shape[0]
        zeros = torch.zeros(batch_size, dtype=torch.long, device=ids.device)
        trace = Trace(
            hidden={TEXT: (store["text_emb"], *out.language_hidden_states),
                    IMAGE: (store["image_emb"], *out.vision_hidden_states)},
            mask={TEXT: text_mask, IMAGE: region_mask},
            pool_index={TEXT: zeros, IMAGE: zeros.clone()},
            content={TEXT: content_text, IMAGE: region_mask.clone()},
            word_ids=word_ids,
            patch_grid=None,
            patch_offset=1,
        )
        trace.embeds[TEXT] = masked_token_mean(out.language_output, content_text)
        trace.embeds[IMAGE] = masked_token_mean(out.vision_output, region_mask)
        if self.output_attentions:
            self._add_attention(trace, store["attn"], batch, text_mask, word_ids, region_mask)
        return trace

    def _add_attention(self, trace: Trace, maps: dict, batch: dict, text_mask: torch.Tensor,
                       word_ids: torch.Tensor, region_mask: torch.Tensor) -> None:
        l_layers, r_layers, x_layers = self._layers()
        text_groups = self.text_groups(text_mask, word_ids)
        image_groups = self.image_groups(region_mask)
        trace.attention[TEXT] = AttentionStream([maps[(TEXT, i)][0] for i in range(l_layers + x_layers)],
                                                text_groups, causal=False)
        trace.attention[IMAGE] = AttentionStream([maps[(IMAGE, i)][0] for i in range(r_layers + x_layers)],
                                                 image_groups, causal=False)
        if x_layers:
            n_text = text_mask.shape[1]
            trace.attention[CROSS] = AttentionStream(
                [cross_square(*maps[(CROSS, i)], n_text) for i in range(x_layers)],
                torch.cat([text_groups, image_groups], dim=1), causal=False,
                grounding=self.phrase_masks(batch, n_text, text_mask.device))


def cross_square(text_to_image: torch.Tensor, image_to_text: torch.Tensor, n_text: int) -> torch.Tensor:
    """The two cross-attention maps of one layer in the square ``[text | regions]`` layout.

    ``text_to_image`` ``(B, H, T, R)``, ``image_to_text`` ``(B, H, R, T)`` ->
    ``(B, H, T+R, T+R)`` with the text rows' mass in the region columns and the
    region rows' mass in the text columns (every row still sums to 1).
    """
    batch, heads, t, r = text_to_image.shape
    if t != n_text or tuple(image_to_text.shape) != (batch, heads, r, t):
        raise ValueError(f"cross maps {tuple(text_to_image.shape)} / {tuple(image_to_text.shape)} do not "
                         f"match {n_text} text tokens")
    out = text_to_image.new_zeros((batch, heads, t + r, t + r))
    out[:, :, :t, t:] = text_to_image
    out[:, :, t:, :t] = image_to_text
    return out


def build_parts(preset: Preset, seed: int) -> tuple[torch.nn.Module, Any, None]:
    """``(model, tokenizer, None)`` for a preset: seeded random ``LxmertModel`` + offline BERT tokenizer."""
    return build_region_parts(LxmertModel, preset, seed)


def adapter_from_pretrained(model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
                            dtype: torch.dtype, extractor: Optional[Any] = None) -> LxmertAdapter:
    """Wrap a loaded ``LxmertModel`` (e.g. ``AutoModel.from_pretrained`` of unc-nlp/lxmert-base-uncased)."""
    return LxmertAdapter(model, tokenizer, info, device, dtype, extractor=extractor)


def build_adapter(preset_name: str, seed: int = 0, device: Any = "cpu", dtype: torch.dtype = torch.float32,
                  extractor: Optional[Any] = None) -> LxmertAdapter:
    """A ready adapter for ``random:<preset_name>`` (seeded random weights, offline tokenizer)."""
    return build_region_adapter(LxmertAdapter, LxmertModel, PRESETS, "lxmert", preset_name, seed, device, dtype,
                                extractor)
