"""A dual-encoder adapter for any Hugging Face model with ``get_image_features``/``get_text_features``.

transformers 5 returns each tower's output from these methods, with the
projected embedding in ``pooler_output`` and, when asked, the tower's per-layer
``hidden_states`` (and ``attentions``); so one adapter serves SigLIP 2 (NaFlex
patches with a padding mask), ALIGN (an EfficientNet image tower), AltCLIP,
Chinese-CLIP and MetaCLIP 2. What the methods do not say, which token each
tower pools and how captions are padded, is one :class:`DualLayout` per model type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.models.base import IMAGE, TEXT, ModelInfo, Trace
from mmdiag.models.dual import DualEncoderAdapter, note_text, tokenize_captions
from mmdiag.models.special import template_special_ids

VIT, NAFLEX, CNN = "vit", "naflex", "cnn"


@dataclass(frozen=True)
class DualLayout:
    """How one model type's towers pool and read captions.

    ``text_pool``: ``"cls"`` (position 0), ``"eos"`` (the first EOS id, as CLIP's text transformer), or
    ``"last"`` (the last position of captions padded to the full context, as SigLIP). ``image_pool``: ``"cls"``
    (a class token at position 0) or ``"head"`` (an attention/average pooling head: mean of the patches).
    ``vision``: ``"vit"`` (fixed patch grid), ``"naflex"`` (variable patches with a padding mask and
    ``spatial_shapes``) or ``"cnn"`` (feature maps, each layer's state the spatial mean of its map).
    ``text_mask``: whether the text tower gets an attention mask (SigLIP was trained without one).
    ``position_offset``: positions a RoBERTa-style embedding reserves (padding index + 1).
    """

    text_pool: str
    image_pool: str
    vision: str = VIT
    pad_to_max: bool = False
    text_mask: bool = True
    text_causal: bool = False
    position_offset: int = 0


#: model types the generic dual encoder serves (transformers 5.24), and their layout
LAYOUTS: dict[str, DualLayout] = {
    "siglip2": DualLayout(text_pool="last", image_pool="head", vision=NAFLEX, pad_to_max=True, text_mask=False),
    "align": DualLayout(text_pool="cls", image_pool="head", vision=CNN),
    "altclip": DualLayout(text_pool="cls", image_pool="cls", position_offset=2),
    "chinese_clip": DualLayout(text_pool="cls", image_pool="cls"),
    "metaclip_2": DualLayout(text_pool="eos", image_pool="cls", text_causal=True),
}
MODEL_TYPES: tuple[str, ...] = tuple(LAYOUTS)


def cnn_states(maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Each ``(B, C, H, W)`` feature map as one token, its spatial mean: ``(B, 1, C)`` (the average pool the
    tower's own head applies to the last map); a ``(B, T, D)`` entry is kept as is."""
    return tuple(m.mean(dim=(2, 3)).unsqueeze(1) if m.dim() == 4 else m for m in maps)


class GenericDualAdapter(DualEncoderAdapter):
    """Two towers read through ``get_text_features``/``get_image_features`` (see :class:`DualLayout`)."""

    family = "dual"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype, layout: Optional[DualLayout] = None) -> None:
        super().__init__(model, tokenizer, image_processor, info, device, dtype)
        self.layout = layout or LAYOUTS[model.config.model_type]
        self.pad_text_to_max = self.layout.pad_to_max
        self._vision_entries: Optional[int] = None

    # -- layout --------------------------------------------------------------
    def special_ids(self) -> tuple[Optional[int], Optional[int], int]:
        """The ids the tokenizer's own template wraps a caption with (see :func:`template_special_ids`)."""
        resolved = self.__dict__.get("_special")
        if resolved is None:
            resolved = self._special = template_special_ids(self.tokenizer, self.text_config())
        return resolved.as_tuple()

    def max_text_length(self) -> int:
        cfg = self.text_config()
        length = int(cfg.max_position_embeddings) - self.layout.position_offset
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        return min(length, int(tok_max)) if isinstance(tok_max, int) and 0 < tok_max < length else length

    def layer_counts(self) -> dict[str, int]:
        return {IMAGE: self.vision_entries(), TEXT: int(self.text_config().num_hidden_layers) + 1}

    def vision_entries(self) -> int:
        """Hidden-state entries of the image tower: blocks + 1 (a CNN: its blocks, counted on the module)."""
        if self._vision_entries is None:
            if self.layout.vision == CNN:
                self._vision_entries = len(self.model.vision_model.encoder.blocks) + 1
            else:
                self._vision_entries = int(self.vision_config().num_hidden_layers) + 1
        return self._vision_entries

    def patch_grid(self, pixels: torch.Tensor) -> Optional[tuple[int, int]]:
        if self.layout.vision == CNN:
            return None
        return super().patch_grid(pixels)

    # -- protocol --------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        bos, eos, pad = self.special_ids()
        text = tokenize_captions(self.tokenizer, samples, self.max_text_length(), pad_to_max=self.pad_text_to_max,
                                 bos_id=bos, eos_id=eos, pad_id=pad)
        note_text(self, text)
        batch: dict[str, Any] = {"text": text}
        if all(s.image is not None for s in samples):
            enc = self.image_processor(images=[s.image.convert("RGB") for s in samples], return_tensors="pt")
            batch["pixel_values"] = enc["pixel_values"]
            batch["vision_extra"] = {k: v for k, v in enc.items()
                                     if k in ("pixel_attention_mask", "spatial_shapes") and v is not None}
        return batch

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        trace = self.text_trace(batch)
        if "pixel_values" in batch:
            pixels = batch["pixel_values"].to(self.device, self.dtype)
            extra = {k: v.to(self.device) for k, v in batch.get("vision_extra", {}).items()}
            self.run_vision(pixels, extra, trace)
            if self.layout.vision != NAFLEX:
                trace.image_size = tuple(pixels.shape[-2:])
        trace.logit_scale = self.logit_scale()
        return trace

    def text_pool_index(self, ids: torch.Tensor) -> Optional[torch.Tensor]:
        rows = ids.shape[0]
        if self.layout.text_pool == "cls":
            return torch.zeros(rows, dtype=torch.long, device=ids.device)
        if self.layout.text_pool == "last":
            return torch.full((rows,), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        eos = self.text_config().eos_token_id
        return (ids == eos).int().argmax(dim=-1).long()

    def run_text(self, ids: torch.Tensor, mask: torch.Tensor, trace: Trace) -> None:
        masked = self.layout.text_mask
        out = self.model.get_text_features(input_ids=ids, attention_mask=mask if masked else None,
                                           output_hidden_states=True, output_attentions=self.output_attentions,
                                           return_dict=True)
        trace.hidden[TEXT] = out.hidden_states
        # an unmasked tower (SigLIP) attends to its padding: every position is then a real token
        trace.mask[TEXT] = mask.bool() if masked else torch.ones_like(mask, dtype=torch.bool)
        pool = self.text_pool_index(ids)
        trace.pool_index[TEXT] = pool
        if self.output_attentions and out.attentions:
            special = torch.zeros_like(ids, dtype=torch.bool)
            special[torch.arange(ids.shape[0], device=ids.device), pool] = True
            bos, eos, _ = self.special_ids()
            for token in (bos, eos):
                if token is not None:
                    special |= ids == token
            self.add_tower_attention(trace, TEXT, out.attentions, special & mask.bool(), trace.mask[TEXT],
                                     causal=self.layout.text_causal)
        trace.embeds[TEXT] = out.pooler_output

    def run_vision(self, pixels: torch.Tensor, extra: dict, trace: Trace) -> None:
        attend = self.output_attentions and self.layout.vision != CNN
        kwargs = {"output_attentions": True} if attend else {}
        out = self.model.get_image_features(pixel_values=pixels, output_hidden_states=True, return_dict=True,
                                            **extra, **kwargs)
        states = cnn_states(out.hidden_states) if self.layout.vision == CNN else tuple(out.hidden_states)
        batch, tokens = states[0].shape[:2]
        device = states[0].device
        trace.hidden[IMAGE] = states
        if self.layout.vision == NAFLEX and "pixel_attention_mask" in extra:
            real = extra["pixel_attention_mask"].bool()
        else:
            real = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        trace.mask[IMAGE] = real
        content = real.clone()
        cls = self.layout.image_pool == "cls"
        if cls:
            content[:, 0] = False
        if attend and out.attentions:
            self.add_tower_attention(trace, IMAGE, out.attentions, real & ~content, real, causal=False)
        trace.content[IMAGE] = content
        trace.pool_index[IMAGE] = torch.zeros(batch, dtype=torch.long, device=device) if cls else None
        embeds = out.pooler_output
        trace.embeds[IMAGE] = embeds.flatten(1) if embeds.dim() > 2 else embeds
        trace.patch_offset = 1 if cls else 0
        if self.layout.vision == NAFLEX:
            shapes = extra.get("spatial_shapes")
            same = shapes is not None and bool((shapes == shapes[0]).all())
            trace.patch_grid = tuple(int(v) for v in shapes[0]) if same else None
        else:
            trace.patch_grid = self.patch_grid(pixels)

    def logit_scale(self) -> Optional[float]:
        temperature = getattr(self.model, "temperature", None)  # ALIGN divides by a learned temperature
        if isinstance(temperature, torch.Tensor):
            return float(1.0 / temperature.detach().float())
        return super().logit_scale()


def make_generic_dual(model: torch.nn.Module, tokenizer: Any, processor: Any, info: ModelInfo,
                      device: torch.device, dtype: torch.dtype) -> GenericDualAdapter:
    """The adapter constructor to register for :data:`MODEL_TYPES` (family ``dual``)."""
    return GenericDualAdapter(model, tokenizer, processor, info, device, dtype)
