"""Adapter for Hugging Face ``SiglipModel`` (Zhai et al. 2023, arXiv:2303.15343)."""
from __future__ import annotations

import torch

from mmdiag.models.base import IMAGE, TEXT, Trace
from mmdiag.models.dual import DualEncoderAdapter


class SiglipAdapter(DualEncoderAdapter):
    """SigLIP: no CLS (attention-pooling head over patches); text pools the last position.

    SigLIP was trained on captions padded to the full 64 positions without an
    attention mask, so captions are padded to max length and run unmasked, as
    the reference processor does.
    """

    family = "siglip"
    pad_text_to_max = True

    def special_ids(self):
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 1
        return None, tok.eos_token_id, pad

    def run_text(self, ids: torch.Tensor, mask: torch.Tensor, trace: Trace) -> None:
        out = self.model.text_model(input_ids=ids, output_hidden_states=True,
                                    output_attentions=self.output_attentions)
        trace.hidden[TEXT] = out.hidden_states
        if self.output_attentions:
            # SigLIP runs unmasked over the padding, so every position is a valid key
            everything = torch.ones_like(ids, dtype=torch.bool)
            special = mask.bool() & (ids == self.special_ids()[1])
            self.add_tower_attention(trace, TEXT, out.attentions, special, everything, causal=False)
        trace.pool_index[TEXT] = torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        trace.embeds[TEXT] = out.pooler_output

    def run_vision(self, pixels: torch.Tensor, trace: Trace) -> None:
        out = self.model.vision_model(pixel_values=pixels, output_hidden_states=True,
                                      output_attentions=self.output_attentions)
        first = out.hidden_states[0]
        batch, tokens = first.shape[:2]
        trace.hidden[IMAGE] = out.hidden_states
        trace.mask[IMAGE] = torch.ones(batch, tokens, dtype=torch.bool, device=first.device)
        trace.content[IMAGE] = trace.mask[IMAGE]
        if self.output_attentions:
            nothing = torch.zeros_like(trace.mask[IMAGE])
            self.add_tower_attention(trace, IMAGE, out.attentions, nothing, trace.mask[IMAGE], causal=False)
        trace.pool_index[IMAGE] = None
        trace.embeds[IMAGE] = out.pooler_output
        trace.patch_grid = self.patch_grid(pixels)
        trace.patch_offset = 0
