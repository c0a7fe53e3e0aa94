"""Adapter for Hugging Face ``CLIPModel`` (Radford et al. 2021)."""
from __future__ import annotations

import torch

from mmdiag.models.base import IMAGE, TEXT, Trace
from mmdiag.models.dual import DualEncoderAdapter


class CLIPAdapter(DualEncoderAdapter):
    """CLIP: vision pools the CLS token, text pools the EOS token, both projected."""

    family = "clip"

    def text_pool_index(self, ids: torch.Tensor) -> torch.Tensor:
        """The EOS position, as ``CLIPTextTransformer`` pools it (legacy configs: argmax id)."""
        eos = self.text_config().eos_token_id
        if eos == 2:
            return ids.to(torch.int).argmax(dim=-1).long()
        return (ids == eos).int().argmax(dim=-1).long()

    def _text_special(self, ids: torch.Tensor) -> torch.Tensor:
        special = torch.zeros_like(ids, dtype=torch.bool)
        special[:, 0] = True
        special[torch.arange(ids.shape[0], device=ids.device), self.text_pool_index(ids)] = True
        return special

    def run_text(self, ids: torch.Tensor, mask: torch.Tensor, trace: Trace) -> None:
        out = self.model.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                                    output_attentions=self.output_attentions)
        trace.hidden[TEXT] = out.hidden_states
        if self.output_attentions:
            self.add_tower_attention(trace, TEXT, out.attentions, self._text_special(ids), mask.bool(), causal=True)
        trace.pool_index[TEXT] = self.text_pool_index(ids)
        trace.embeds[TEXT] = self.model.text_projection(out.pooler_output)

    def run_vision(self, pixels: torch.Tensor, trace: Trace) -> None:
        out = self.model.vision_model(pixel_values=pixels, output_hidden_states=True,
                                      output_attentions=self.output_attentions)
        first = out.hidden_states[0]
        batch, tokens = first.shape[:2]
        trace.hidden[IMAGE] = out.hidden_states
        trace.mask[IMAGE] = torch.ones(batch, tokens, dtype=torch.bool, device=first.device)
        content = trace.mask[IMAGE].clone()
        content[:, 0] = False
        if self.output_attentions:
            self.add_tower_attention(trace, IMAGE, out.attentions, ~content, trace.mask[IMAGE], causal=False)
        trace.content[IMAGE] = content
        trace.pool_index[IMAGE] = torch.zeros(batch, dtype=torch.long, device=first.device)
        trace.embeds[IMAGE] = self.model.visual_projection(out.pooler_output)
        trace.patch_grid = self.patch_grid(pixels)
        trace.patch_offset = 1
