"""Adapter for Hugging Face ``VisualBertModel`` (Li et al. 2019, arXiv:1908.03557).

VisualBERT is single-stream: one BERT runs over ``[CLS] words [SEP] pad |
regions`` (text first, then one token per image region). A region token is
``visual_projection(feature) + visual token-type embedding (type 1) + visual
position embedding (id 0)``: VisualBERT reads no box coordinates, so where a
region is must be inside its feature (the default
:class:`~mmdiag.models.region_features.PooledColourFeatures` includes the box geometry;
Faster R-CNN features carry it implicitly). Regions are those of
:func:`mmdiag.models.region_features.sample_boxes` (whole image first, then the phrase
boxes: the scene-tree nodes).

Trace, as for the other single-stream model (ViLT): each modality is the slice
of the joint hidden states at its positions (``num_hidden_layers + 1`` entries,
entry 0 the embedding output), pooled text state ``[CLS]``, pooled image state
the whole-image region (first region token, the scene tree's root), content
the word pieces and every real region, ``embeds[m]`` the mean of modality
``m``'s content tokens in ``last_hidden_state`` (VisualBERT has no
per-modality embedding space), ``patch_grid`` None and ``patch_offset`` 1 (see
:meth:`~mmdiag.models.region_features.RegionModelAdapter.region_masks`).

Attention: stream ``"joint"`` (bidirectional) with groups words TEXT,
``[CLS]``/``[SEP]`` SPECIAL, regions IMAGE, text and region padding PAD; and
``trace.attention["joint"].grounding``, a PhraseMasks (each phrase's word tokens as
queries, its own region token as the in-box key).

A batch in which no sample has an image (a treebank) runs text-only, a
plain BERT pass over ``[CLS] words [SEP]`` (``hidden`` then has ``"text"`` only);
``batch["hide"]`` knocks a modality out of the attention mask (as for ViLT).

``bypass_transformer=True`` configs (text-only encoder plus one joint layer)
are refused: their hidden states cover the text only.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from transformers import VisualBertModel

from mmdiag.data.types import Sample
from mmdiag.errors import SpecError
from mmdiag.models.base import IMAGE, TEXT, AttentionStream, ModelInfo, Trace
from mmdiag.models.dual import note_text, tokenize_captions
from mmdiag.models.presets import PRESETS as ALL_PRESETS, Preset
from mmdiag.models.region_features import (RegionModelAdapter, build_region_adapter, build_region_parts,
                                            masked_token_mean)

JOINT = "joint"


PRESETS: dict[str, Preset] = {name: p for name, p in ALL_PRESETS.items() if p.family == "visualbert"}


class VisualBertAdapter(RegionModelAdapter):
    """VisualBERT: one bidirectional stream over text then region tokens (see the module doc)."""

    family = "visualbert"
    modalities = (IMAGE, TEXT)
    joint_attention = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
                 dtype: torch.dtype, extractor: Optional[Any] = None) -> None:
        if getattr(model.config, "bypass_transformer", False):
            raise SpecError("VisualBERT configs with bypass_transformer=True run the text alone through the "
                            "encoder; mmdiag supports only the joint (bypass_transformer=False) variants")
        super().__init__(model, tokenizer, info, device, dtype, extractor=extractor)

    def visual_feat_dim(self) -> int:
        return int(self.model.config.visual_embedding_dim)

    def layer_counts(self) -> dict[str, int]:
        n = int(self.model.config.num_hidden_layers) + 1
        return {IMAGE: n, TEXT: n}

    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Like :meth:`RegionModelAdapter.prepare`; a batch where no sample has an image runs text-only
        (VisualBERT's ``visual_embeds`` are optional: a plain BERT pass, e.g. over a treebank).

        The returned dict may get a ``"hide"`` entry (a tuple of modalities) before :meth:`forward`:
        those tokens are removed from the attention mask (a knock-out) while keeping their groups,
        so ``hide=("image",)`` gives a text->image attention share of 0.
        """
        if samples and all(s.image is None for s in samples):
            tok = self.tokenizer
            text = tokenize_captions(tok, samples, self.max_text_length(), bos_id=tok.cls_token_id,
                                     eos_id=tok.sep_token_id, pad_id=tok.pad_token_id or 0)
            note_text(self, text)
            return {"text": text, "regions": None, "spans": [[] for _ in samples]}
        return super().prepare(samples)

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        text = batch["text"]
        regions = batch["regions"]
        hide = tuple(batch.get("hide", ()))
        ids = text.input_ids.to(self.device)
        text_mask = text.attention_mask.to(self.device).bool()
        attend_text = torch.zeros_like(text_mask) if TEXT in hide else text_mask
        visual: dict[str, Any] = {}
        if regions is not None:
            region_mask = regions.mask.to(self.device)
            attend_image = torch.zeros_like(region_mask) if IMAGE in hide else region_mask
            visual = {"visual_embeds": regions.feats.to(self.device, self.dtype),
                      "visual_attention_mask": attend_image.long(),
                      "visual_token_type_ids": torch.ones(region_mask.shape, dtype=torch.long, device=self.device)}
        out = self.model(input_ids=ids, attention_mask=attend_text.long(), token_type_ids=torch.zeros_like(ids),
                         output_hidden_states=True, output_attentions=self.output_attentions, **visual)
        n_text = ids.shape[1]
        word_ids = text.word_ids.to(self.device)
        content_text = word_ids >= 0
        zeros = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        last = out.last_hidden_state
        trace = Trace(
            hidden={TEXT: [h[:, :n_text] for h in out.hidden_states]},
            mask={TEXT: text_mask},
            pool_index={TEXT: zeros},
            content={TEXT: content_text},
            word_ids=word_ids,
            patch_grid=None,
            patch_offset=1,
        )
        trace.embeds[TEXT] = masked_token_mean(last[:, :n_text], content_text)
        groups = [self.text_groups(text_mask, word_ids)]
        if regions is not None:
            trace.hidden[IMAGE] = [h[:, n_text:] for h in out.hidden_states]
            trace.mask[IMAGE] = region_mask
            trace.pool_index[IMAGE] = zeros.clone()
            trace.content[IMAGE] = region_mask.clone()
            trace.embeds[IMAGE] = masked_token_mean(last[:, n_text:], region_mask)
            groups.append(self.image_groups(region_mask))
        if self.output_attentions:
            grounding = self.phrase_masks(batch, n_text, ids.device) if regions is not None else None
            trace.attention[JOINT] = AttentionStream(out.attentions, torch.cat(groups, dim=1), causal=False,
                                                     grounding=grounding)
        return trace


def build_parts(preset: Preset, seed: int) -> tuple[torch.nn.Module, Any, None]:
    """``(model, tokenizer, None)`` for a preset: seeded random ``VisualBertModel`` + offline BERT tokenizer."""
    return build_region_parts(VisualBertModel, preset, seed)


def adapter_from_pretrained(model: torch.nn.Module, tokenizer: Any, info: ModelInfo, device: torch.device,
                            dtype: torch.dtype, extractor: Optional[Any] = None) -> VisualBertAdapter:
    """Wrap a loaded ``VisualBertModel`` (e.g. ``AutoModel.from_pretrained`` of uclanlp/visualbert-vqa-coco-pre)."""
    return VisualBertAdapter(model, tokenizer, info, device, dtype, extractor=extractor)


def build_adapter(preset_name: str, seed: int = 0, device: Any = "cpu", dtype: torch.dtype = torch.float32,
                  extractor: Optional[Any] = None) -> VisualBertAdapter:
    """A ready adapter for ``random:<preset_name>`` (seeded random weights, offline tokenizer)."""
    return build_region_adapter(VisualBertAdapter, VisualBertModel, PRESETS, "visual_bert", preset_name, seed, device, dtype,
                                extractor)
