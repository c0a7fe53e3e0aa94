"""Adapter for Hugging Face ``ViltModel`` (Kim et al. 2021, arXiv:2102.03334).

ViLT is single-stream: one transformer runs over the concatenation
``[CLS] words [SEP] pad | image-CLS patches`` (text first, then the image).
mmdiag reads each modality as the slice of the joint hidden states at that
modality's positions (views of the joint tensors, no copies), so every layer
has an image and a text state even though the model has one stack.

- pooled text state: ``[CLS]`` (position 0), what ViLT's pooler reads;
  pooled image state: the image CLS (first image position);
- content: the caption's word pieces (text) and the real patches (image; the
  image CLS and patches padded via ``pixel_mask`` are excluded);
- ``embeds``: ViLT has no per-modality embedding space, so ``embeds[m]`` is the
  mean of modality ``m``'s content tokens in the model's output
  (``last_hidden_state``, after the final LayerNorm), a "modality-pooled state";
  the cone and gap checks then measure the geometry of those states.
- attention stream ``"joint"`` (bidirectional) with groups: words TEXT,
  ``[CLS]``/``[SEP]``/image CLS SPECIAL, patches IMAGE, text and patch padding PAD.

Determinism: ``ViltEmbeddings.visual_embed`` samples patches with
``torch.multinomial`` (a random subset when there are more than
``max_image_length``, otherwise a random *permutation*, plus random fill-ins for
padded patches). The adapter calls ``visual_embed`` itself with
``max_image_length=-1`` (every patch kept) under a forked, seeded RNG, then sorts
the patches back into row-major grid order using the patch indices that
``visual_embed`` returns, and passes them to the model as ``image_embeds``. The
result is the model's own embedding in a canonical order: identical between runs,
independent of the global RNG, and with ``patch_grid`` valid. Images are squared
to the processor's ``shortest_edge`` (ViLT's processor keeps the aspect ratio and
pads) so every image gives the same full grid with no padded patches.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from mmdiag.data.types import Sample
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream,
                                ModelAdapter, ModelInfo, Trace)
from mmdiag.models.dual import TextInputs, note_text, tokenize_captions

#: seed of the RNG fork around ViLT's patch sampling (only fills padded patches once sorted)
PATCH_SEED = 0


def masked_token_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens where ``mask`` is True: ``(B, T, D), (B, T) -> (B, D)`` (0 for empty rows)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def square_images(samples: Sequence[Sample], size: int) -> list:
    """The samples' images as RGB squares of ``size`` pixels (bicubic)."""
    return [s.image.convert("RGB").resize((size, size), Image.BICUBIC) for s in samples]


def processor_short_side(processor: Any, default: int) -> int:
    """The short side a ViLT-style processor resizes to (``size["shortest_edge"]``), else ``default``."""
    size = getattr(processor, "size", None)
    value = None
    if isinstance(size, dict):
        value = size.get("shortest_edge") or size.get("height")
    elif size is not None:
        value = getattr(size, "shortest_edge", None) or getattr(size, "height", None)
    return int(value) if value else int(default)


class ViltAdapter(ModelAdapter):
    """ViLT: one bidirectional stream over text then image tokens (see the module doc)."""

    family = "vilt"
    modalities = (IMAGE, TEXT)
    joint_attention = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, tokenizer, info, device, dtype, image_processor)

    def layer_counts(self) -> dict[str, int]:
        n = self.model.config.num_hidden_layers + 1
        return {IMAGE: n, TEXT: n}

    def image_side(self) -> int:
        return processor_short_side(self.image_processor, self.model.config.image_size)

    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Tokenise (``[CLS] words [SEP]``, longest padding) and square + preprocess the images.

        The returned dict may get a ``"hide"`` entry (a tuple of modalities) before
        :meth:`forward`: those tokens are removed from the attention mask (a
        knock-out) while keeping their token groups, so e.g. ``hide=("image",)``
        must give a text->image attention share of 0.
        """
        if any(s.image is None for s in samples):
            raise ValueError("ViLT needs an image for every sample (it has no text-only mode)")
        tok = self.tokenizer
        max_len = int(self.model.config.max_position_embeddings)
        text = tokenize_captions(tok, samples, max_len, bos_id=tok.cls_token_id, eos_id=tok.sep_token_id,
                                 pad_id=tok.pad_token_id or 0)
        note_text(self, text)
        enc = self.image_processor(images=square_images(samples, self.image_side()), return_tensors="pt")
        pixel_mask = enc.get("pixel_mask")
        if pixel_mask is None:
            pixel_mask = torch.ones(enc["pixel_values"].shape[0], *enc["pixel_values"].shape[-2:], dtype=torch.long)
        return {"text": text, "pixel_values": enc["pixel_values"], "pixel_mask": pixel_mask}

    def embed_patches(self, pixels: torch.Tensor, pixel_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """ViLT's own patch embedding with every patch kept, in row-major grid order.

        Returns ``(embeds (B, 1+P, D), token_mask (B, 1+P) long, (rows, cols))``;
        position 0 is the image CLS, real patches come first in grid order,
        patches padded via ``pixel_mask`` last.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PATCH_SEED)
            embeds, token_mask, (patch_index, (rows, cols)) = self.model.embeddings.visual_embed(
                pixels, pixel_mask, max_image_length=-1)
        valid = token_mask[:, 1:].long()
        key = (1 - valid) * (rows * cols) + patch_index[..., 0].long() * cols + patch_index[..., 1].long()
        order = torch.argsort(key, dim=1, stable=True)
        patches = torch.gather(embeds[:, 1:], 1, order.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
        mask = torch.gather(token_mask[:, 1:], 1, order)
        return (torch.cat([embeds[:, :1], patches], dim=1), torch.cat([token_mask[:, :1], mask], dim=1).long(),
                (int(rows), int(cols)))

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        text: TextInputs = batch["text"]
        hide = tuple(batch.get("hide", ()))
        ids = text.input_ids.to(self.device)
        text_mask = text.attention_mask.to(self.device).bool()
        pixels = batch["pixel_values"].to(self.device, self.dtype)
        image_embeds, image_mask, grid = self.embed_patches(pixels, batch["pixel_mask"].to(self.device))
        image_mask = image_mask.bool()
        attend_text = torch.zeros_like(text_mask) if TEXT in hide else text_mask
        attend_image = torch.zeros_like(image_mask) if IMAGE in hide else image_mask
        out = self.model(input_ids=ids, attention_mask=attend_text.long(), image_embeds=image_embeds,
                         pixel_mask=attend_image.long(), output_hidden_states=True,
                         output_attentions=self.output_attentions)
        n_text = ids.shape[1]
        word_ids = text.word_ids.to(self.device)
        content_text = word_ids >= 0
        content_image = image_mask.clone()
        content_image[:, 0] = False
        batch_size = ids.shape[0]
        trace = Trace(
            hidden={TEXT: [h[:, :n_text] for h in out.hidden_states],
                    IMAGE: [h[:, n_text:] for h in out.hidden_states]},
            mask={TEXT: text_mask, IMAGE: image_mask},
            pool_index={TEXT: torch.zeros(batch_size, dtype=torch.long, device=ids.device),
                        IMAGE: torch.zeros(batch_size, dtype=torch.long, device=ids.device)},
            content={TEXT: content_text, IMAGE: content_image},
            word_ids=word_ids,
            patch_grid=grid,
            patch_offset=1,
            image_size=tuple(pixels.shape[-2:]),
            logit_scale=None,
        )
        last = out.last_hidden_state
        trace.embeds[TEXT] = masked_token_mean(last[:, :n_text], content_text)
        trace.embeds[IMAGE] = masked_token_mean(last[:, n_text:], content_image)
        if self.output_attentions:
            trace.attention["joint"] = AttentionStream(out.attentions,
                                                       self.joint_groups(text_mask, content_text, image_mask),
                                                       causal=False)
        return trace

    @staticmethod
    def joint_groups(text_mask: torch.Tensor, words: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """Token groups of the joint sequence (the ``GROUP_*`` ids of :mod:`mmdiag.models.base`)."""
        text = torch.full(text_mask.shape, GROUP_SPECIAL, dtype=torch.long, device=text_mask.device)
        text[words] = GROUP_TEXT
        text[~text_mask] = GROUP_PAD
        image = torch.full(image_mask.shape, GROUP_IMAGE, dtype=torch.long, device=image_mask.device)
        image[:, 0] = GROUP_SPECIAL
        image[~image_mask] = GROUP_PAD
        return torch.cat([text, image], dim=1)

