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
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream,
                                ModelAdapter, ModelInfo, Trace)
from mmdiag.models.dual import note_text, pixel_values, tokenize_captions
from mmdiag.models.vilt import masked_token_mean


def image_token_count(config: Any) -> int:
    """Visual features per image that the projector emits (= image tokens in the sequence)."""
    vision = config.vision_config
    side = int(vision.image_size) // int(vision.patch_size)
    tokens = side * side + (0 if "siglip" in str(getattr(vision, "model_type", "")) else 1)
    if getattr(config, "vision_feature_select_strategy", "default") == "default":
        tokens -= 1
    return tokens


class LlavaAdapter(ModelAdapter):
    """LLaVA: a causal decoder over ``<s> <image>*N caption`` (see the module doc)."""

    family = "llava"
    modalities = (IMAGE, TEXT)
    joint_attention = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, tokenizer, info, device, dtype, image_processor)

    # -- configuration -------------------------------------------------------
    def text_config(self) -> Any:
        return self.model.config.text_config

    def layer_counts(self) -> dict[str, int]:
        n = self.text_config().num_hidden_layers + 1
        return {IMAGE: n, TEXT: n}

    def n_image_tokens(self) -> int:
        return image_token_count(self.model.config)

    def special_ids(self) -> tuple[Optional[int], int, int]:
        """(bos, pad, unk) ids; pad and unk fall back on the config's pad id, then 0."""
        tok, cfg = self.tokenizer, self.text_config()
        bos = tok.bos_token_id if tok.bos_token_id is not None else getattr(cfg, "bos_token_id", None)
        pad = tok.pad_token_id
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        pad = 0 if pad is None else int(pad)
        unk = tok.unk_token_id if tok.unk_token_id is not None else pad
        return bos, pad, unk

    def core(self) -> torch.nn.Module:
        """The multimodal model without the LM head (its logits are not needed)."""
        inner = getattr(self.model, "model", None)
        return inner if inner is not None and hasattr(inner, "language_model") else self.model

    # -- protocol --------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Build ``<s> <image>*N caption <pad>...`` ids, word ids and pixel values.

        The returned dict may get a ``"hide"`` entry (a tuple of modalities) before
        :meth:`forward`: those tokens are removed from the attention mask (a
        knock-out) while keeping their token groups.
        """
        if any(s.image is None for s in samples):
            raise ValueError("the LLaVA adapter needs an image for every sample")
        bos, pad, unk = self.special_ids()
        image_id = int(self.model.config.image_token_id)
        n_image = self.n_image_tokens()
        room = int(self.text_config().max_position_embeddings) - n_image
        text = tokenize_captions(self.tokenizer, samples, room, bos_id=bos, eos_id=None, pad_id=pad)
        note_text(self, text)
        prefix = ([bos] if bos is not None else []) + [image_id] * n_image
        rows, word_rows = [], []
        for ids, mask, wids in zip(text.input_ids, text.attention_mask.bool(), text.word_ids):
            ids, wids = ids[mask], wids[mask]
            if bos is not None and len(ids) and int(ids[0]) == bos and int(wids[0]) < 0:
                ids, wids = ids[1:], wids[1:]
            ids = torch.where(ids == image_id, torch.full_like(ids, unk), ids)  # a literal "<image>" in a caption
            rows.append(torch.cat([torch.tensor(prefix, dtype=torch.long), ids.long()]))
            word_rows.append(torch.cat([torch.full((len(prefix),), -1, dtype=torch.long), wids.long()]))
        width = max(len(prefix) + 1, max(len(r) for r in rows))  # >= 1 text position, even if all are empty
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        word_ids = torch.full((len(rows), width), -1, dtype=torch.long)
        real = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (row, wrow) in enumerate(zip(rows, word_rows)):
            input_ids[i, :len(row)], word_ids[i, :len(row)], real[i, :len(row)] = row, wrow, True
        return {"input_ids": input_ids, "real": real, "word_ids": word_ids,
                "image_start": len(prefix) - n_image, "text_start": len(prefix),
                "pixel_values": pixel_values(self.image_processor, samples)}

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        ids = batch["input_ids"].to(self.device)
        real = batch["real"].to(self.device)
        word_ids = batch["word_ids"].to(self.device)
        start, end = int(batch["image_start"]), int(batch["text_start"])
        attend = real.clone()
        hide = tuple(batch.get("hide", ()))
        if IMAGE in hide:
            attend[:, start:end] = False
        if TEXT in hide:
            attend[:, end:] = False
        pixels = batch["pixel_values"].to(self.device, self.dtype)
        out = self.core()(input_ids=ids, pixel_values=pixels, attention_mask=attend.long(),
                          output_hidden_states=True, output_attentions=self.output_attentions)
        states = out.hidden_states
        text_real = real[:, end:]
        text_words = word_ids[:, end:]
        batch_size = ids.shape[0]
        image_mask = torch.ones(batch_size, end - start, dtype=torch.bool, device=ids.device)
        trace = Trace(
            hidden={TEXT: [h[:, end:] for h in states], IMAGE: [h[:, start:end] for h in states]},
            mask={TEXT: text_real, IMAGE: image_mask},
            pool_index={TEXT: (text_real.sum(dim=1) - 1).clamp_min(0), IMAGE: None},
            content={TEXT: text_words >= 0, IMAGE: image_mask},
            word_ids=text_words,
            patch_grid=self.patch_grid(),
            patch_offset=self.patch_offset(),
            image_size=tuple(pixels.shape[-2:]),
            logit_scale=None,
        )
        last = out.last_hidden_state
        trace.embeds[TEXT] = masked_token_mean(last[:, end:], text_words >= 0)
        trace.embeds[IMAGE] = last[:, start:end].mean(dim=1)
        if self.output_attentions:
            trace.attention["joint"] = AttentionStream(out.attentions, self.joint_groups(real, word_ids, start, end),
                                                       causal=True)
        return trace

    @staticmethod
    def joint_groups(real: torch.Tensor, word_ids: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Token groups of the decoder sequence (the ``GROUP_*`` ids of :mod:`mmdiag.models.base`)."""
        groups = torch.full(real.shape, GROUP_SPECIAL, dtype=torch.long, device=real.device)
        groups[:, start:end] = GROUP_IMAGE
        groups[word_ids >= 0] = GROUP_TEXT
        groups[~real] = GROUP_PAD
        return groups

    def patch_grid(self) -> Optional[tuple[int, int]]:
        vision = self.model.config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        return side, side

    def patch_offset(self) -> int:
        """Image tokens before the first patch: the CLS kept by the ``full`` strategy."""
        return self.n_image_tokens() - self.patch_grid()[0] * self.patch_grid()[1]
