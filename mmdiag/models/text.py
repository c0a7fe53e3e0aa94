"""Adapter for text-only encoders (BERT-style), the reference for text probes.

Any ``AutoModel`` encoder whose output has ``hidden_states`` works; the pooled
state is the first token (``[CLS]``), as BERT's pooler reads it. Image checks
skip on these models.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.models.base import (GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, TEXT, AttentionStream, ModelAdapter, ModelInfo,
                                Trace)
from mmdiag.models.dual import note_text, tokenize_captions


class TextEncoderAdapter(ModelAdapter):
    """A text-only encoder: one modality, CLS pooling, no final embedding space."""

    family = "text"
    modalities = (TEXT,)

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, tokenizer, info, device, dtype)

    def layer_counts(self) -> dict[str, int]:
        return {TEXT: self.model.config.num_hidden_layers + 1}

    def prepare(self, samples: Sequence[Sample]) -> Any:
        tok = self.tokenizer
        max_len = int(getattr(self.model.config, "max_position_embeddings", 512))
        text = tokenize_captions(tok, samples, max_len, bos_id=tok.cls_token_id,
                                 eos_id=tok.sep_token_id, pad_id=tok.pad_token_id or 0)
        note_text(self, text)
        return text

    @torch.inference_mode()
    def forward(self, batch: Any) -> Trace:
        ids = batch.input_ids.to(self.device)
        mask = batch.attention_mask.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                         output_attentions=self.output_attentions)
        word_ids = batch.word_ids.to(self.device)
        trace = Trace(
            hidden={TEXT: out.hidden_states},
            mask={TEXT: mask.bool()},
            pool_index={TEXT: torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)},
            content={TEXT: word_ids >= 0},
            word_ids=word_ids,
        )
        if self.output_attentions:
            groups = torch.full(ids.shape, GROUP_TEXT, dtype=torch.long, device=ids.device)
            groups[(word_ids < 0)] = GROUP_SPECIAL
            groups[~mask.bool()] = GROUP_PAD
            trace.attention[TEXT] = AttentionStream(out.attentions, groups, causal=False)
        return trace
