"""Adapter for LLaVA-style decoders (HF ``LlavaForConditionalGeneration``; Liu et al. 2023, arXiv:2304.08485).

A vision tower's patch features are projected into the language model's
embedding space and written into the sequence at the positions of the image
placeholder token (``config.image_token_id``); one causal decoder then runs over
text and image tokens together. mmdiag builds the sequence itself::

    <s>  <image> x N  caption tokens  <pad> ...      (right padding)

with ``N`` the number of visual features: ``(image_size / patch_size)^2`` plus the
CLS token for CLIP towers, minus one under ``vision_feature_select_strategy =
"default"`` (which drops CLS). For LLaVA-1.5 (CLIP-L/14 at 336 px) that is 576.
The chat template (``USER: <image>\\n ... ASSISTANT:``) is left out on purpose:
mmdiag reads how the decoder represents a caption next to an image, and a prompt
would add the same words to every sample.

- ``hidden["image"]`` / ``hidden["text"]``: the language model's hidden states
  (entry 0 = input embeddings after the image features are merged in; the last
  entry is after the final norm, as HF returns it) sliced at the image positions
  and at the caption positions (BOS excluded: it is an identical attention sink
  for every sample). Both slices are views.
- pooled text state: the last real caption token (decoder convention: the only
  token that has seen the whole caption); pooled image state: none (mean of the
  image tokens).
- ``embeds[m]``: the mean of modality ``m``'s content tokens in the model's
  output (``last_hidden_state``): a decoder has no per-modality embedding space.
- attention stream ``"joint"``, causal, groups: BOS SPECIAL, image tokens IMAGE,
  caption tokens TEXT, padding PAD. No caption token precedes the image, so every
  text query can see the image; image queries cannot see the text.

The vision tower's own hidden states are not recorded. Everything is
deterministic (no sampling anywhere).

The adapter is a case of the generic decoder-VLM adapter
(:mod:`mmdiag.models.decoder_vlm`): with a ``LlavaProcessor`` (and its chat
template) the prompt is the processor's; with an image processor only, the
sequence above.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from mmdiag.models.decoder_vlm import DecoderVLMAdapter
from mmdiag.models.prompts import ExpandedPrompt, ProcessorPrompt


def image_token_count(config: Any) -> int:
    """Visual features per image that the projector emits (= image tokens in the sequence)."""
    vision = config.vision_config
    side = int(vision.image_size) // int(vision.patch_size)
    tokens = side * side + (0 if "siglip" in str(getattr(vision, "model_type", "")) else 1)
    if getattr(config, "vision_feature_select_strategy", "default") == "default":
        tokens -= 1
    return tokens


class LlavaAdapter(DecoderVLMAdapter):
    """LLaVA: a causal decoder over ``<s> <image>*N caption`` (see the module doc)."""

    family = "llava"

    def make_prompt(self, processor: Any) -> Any:
        if hasattr(processor, "tokenizer") and getattr(processor, "patch_size", None) is not None:
            return ProcessorPrompt(processor, self.tokenizer)
        bos = self.special_ids()[0]
        return ExpandedPrompt(getattr(processor, "image_processor", processor), bos, self.image_id,
                              self.n_image_tokens())

    def n_image_tokens(self) -> int:
        return image_token_count(self.model.config)

    def patch_grid(self, image_mask: Optional[torch.Tensor] = None) -> Optional[tuple[int, int]]:
        vision = self.model.config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        if image_mask is not None and image_mask.shape[1] != self.n_image_tokens():
            return None
        return side, side

    def patch_offset(self) -> int:
        """Image tokens before the first patch: the CLS kept by the ``full`` strategy."""
        side = self.patch_grid()[0]
        return self.n_image_tokens() - side * side
