"""Adapter for Mllama (Llama 3.2 Vision, ``MllamaForConditionalGeneration``): a decoder with cross-attention layers.

Mllama does not write image features into the decoder sequence: a vision tower
(``num_hidden_layers`` local layers per tile, then ``num_global_layers`` gated
layers over all tiles) encodes up to ``max_num_tiles`` tiles of ``P = (size /
patch)^2 + 1`` tokens (a CLS, then the patches); the text decoder reads them only in
its cross-attention layers (``text_config.cross_attention_layers``), which replace
self-attention at those depths (text queries, vision keys, tanh-gated).

Sequence per sample: ``<|image|> <|begin_of_text|> caption <pad>...`` (the
pre-training prompt; the published processor writes the same ids), with the
cross-attention mask of every token from the image token on set to the image's
used tiles (``aspect_ratio_mask``), as ``MllamaProcessor`` builds it.

Trace:

- ``hidden["text"]``: the decoder's hidden states over the whole sequence
  (``num_hidden_layers + 1`` entries, cross-attention layers included); content
  = caption tokens; pooled text state = the last caption token.
- ``hidden["image"]``: the vision tower's states (hooks on its local and global
  encoders): entry 0 = the embedded tiles, then each local then each global
  layer, ``num_hidden_layers + num_global_layers + 1`` entries, over
  ``max_num_tiles * P`` tokens (the tower's padding to a multiple of 8 dropped);
  mask = the used tiles, content = their patches (not the tile CLS).
- ``embeds["text"]``: the mean of the caption tokens' last decoder state;
  ``embeds["image"]``: the mean of the patches' projected features (the
  multi-modal projector's output, in the decoder's width: what the
  cross-attention layers read), so both live in one space of one width.
- attention (eager maps): ``"text"`` the decoder's self-attention layers
  (causal), ``"image"`` the vision tower's layers, and ``"cross"``: the
  cross-attention layers only, in LXMERT's square ``[text | vision]`` layout
  (:func:`mmdiag.models.lxmert.cross_square` with no image->text half): text rows
  hold the text->vision map over the vision columns; vision rows are empty (not
  queries). Vision keys are grouped IMAGE (patches), SPECIAL (each tile's CLS),
  PAD (unused tiles), so the cross stream's text->image share is the part of the
  cross-attention that lands on patches rather than on tile CLS tokens.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.models.attention_views import CrossMaps, GatheredMaps
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream,
                                ModelAdapter, ModelInfo, Trace)
from mmdiag.models.dual import caption_words
from mmdiag.models.vilt import masked_token_mean

CROSS = "cross"


def cross_layers(config: Any) -> list[int]:
    """The decoder layer indices (0-based) that cross-attend to the image."""
    return sorted(int(i) for i in config.text_config.cross_attention_layers)


def cross_stream_maps(attentions: Sequence[torch.Tensor], layers: Sequence[int], n_text: int) -> CrossMaps:
    """The cross-attention layers' maps ``(B, H, T, N)`` of a per-layer attention tuple, read in the square
    ``[text | vision]`` layout ``(B, H, T+N, T+N)`` (text rows over the vision columns, vision rows zero); the
    squares are built only where indexed (:class:`~mmdiag.models.attention_views.CrossMaps`)."""
    rects = []
    for index in layers:
        a = attentions[index]
        if a.shape[2] != n_text:
            raise ValueError(f"cross-attention layer {index} has {a.shape[2]} queries, expected {n_text} text tokens")
        rects.append(a)
    return CrossMaps(rects)


class MllamaAdapter(ModelAdapter):
    """Mllama / Llama 3.2 Vision (see the module doc)."""

    family = "mllama"
    modalities = (IMAGE, TEXT)
    joint_attention = False

    def __init__(self, model: torch.nn.Module, tokenizer: Any, processor: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype) -> None:
        image_processor = getattr(processor, "image_processor", processor)
        super().__init__(model, tokenizer, info, device, dtype, image_processor)
        self.processor = processor
        cfg = model.config
        self.image_id = int(cfg.image_token_index)
        self.cross = cross_layers(cfg)
        vc = cfg.vision_config
        self.n_tiles = int(vc.max_num_tiles)
        self.side = int(vc.image_size) // int(vc.patch_size)
        self.per_tile = self.side * self.side + 1
        if self.info is not None:
            self.info.extra.setdefault("prompt", "<|image|><|begin_of_text|> then the caption")
            self.info.extra.setdefault("cross_attention_layers", [i + 1 for i in self.cross])

    def core(self) -> torch.nn.Module:
        inner = getattr(self.model, "model", None)
        return inner if inner is not None and hasattr(self.model, "lm_head") else self.model

    def layer_counts(self) -> dict[str, int]:
        cfg = self.model.config
        vc = cfg.vision_config
        return {IMAGE: int(vc.num_hidden_layers) + int(vc.num_global_layers) + 1,
                TEXT: int(cfg.text_config.num_hidden_layers) + 1}

    def attention_layers(self) -> dict[str, list[int]]:
        """Per stream the hidden-state entry each attention map feeds (text entries for the cross stream)."""
        n_text = self.layer_counts()[TEXT] - 1
        return {TEXT: [i + 1 for i in range(n_text) if i not in self.cross],
                IMAGE: list(range(1, self.layer_counts()[IMAGE])), CROSS: [i + 1 for i in self.cross]}

    def special_ids(self) -> tuple[int, int, int]:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.model.config.text_config.pad_token_id
        pad = 0 if pad is None else int(pad)
        bos = tok.bos_token_id if tok.bos_token_id is not None else self.model.config.text_config.bos_token_id
        unk = tok.unk_token_id if tok.unk_token_id is not None else pad
        return int(bos), pad, int(unk)

    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        if any(s.image is None for s in samples):
            raise ValueError("the mllama adapter needs an image for every sample (its cross-attention layers are "
                             "skipped without one, so the text states would have fewer layers)")
        bos, pad, unk = self.special_ids()
        room = max(1, int(getattr(self.model.config.text_config, "max_position_embeddings", 4096)) - 2)
        specials = set(getattr(self.tokenizer, "all_special_ids", ()))
        rows, words = [], []
        for sample in samples:
            if sample.token_ids is not None:
                ids = [int(i) for i in sample.token_ids]
                wids = list(range(len(ids)))
            else:
                enc = self.tokenizer(caption_words(sample) or [""], is_split_into_words=True, add_special_tokens=False)
                ids, wids = list(enc["input_ids"]), [-1 if w is None else int(w) for w in enc.word_ids()]
            if len(ids) > room:
                self.truncated_captions += 1
                ids, wids = ids[:room], wids[:room]
            ids = [unk if (i == self.image_id or (sample.token_ids is None and i in specials and w < 0)) else i
                   for i, w in zip(ids, wids)]
            rows.append([self.image_id, bos] + ids)
            words.append([-1, -1] + wids)
        width = max(len(r) for r in rows) + (0 if any(len(r) > 2 for r in rows) else 1)
        batch = len(samples)
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        word_ids = torch.full((batch, width), -1, dtype=torch.long)
        for i, (r, w) in enumerate(zip(rows, words)):
            input_ids[i, :len(r)] = torch.tensor(r)
            word_ids[i, :len(w)] = torch.tensor(w)
        real = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
        pixels = self.image_processor(images=[[s.image] for s in samples], return_tensors="pt")
        tiles = pixels["aspect_ratio_mask"][:, 0, :].long()  # (B, max_tiles): the tiles each image uses
        cross_mask = (real.long()[:, :, None, None] * tiles[:, None, None, :])  # (B, T, 1, tiles)
        return {"input_ids": input_ids, "real": real, "word_ids": word_ids, "cross_attention_mask": cross_mask,
                "pixel_values": pixels["pixel_values"], "aspect_ratio_ids": pixels["aspect_ratio_ids"],
                "aspect_ratio_mask": pixels["aspect_ratio_mask"], "tiles": tiles}

    @contextmanager
    def _vision_capture(self, attentions: bool) -> Iterator[dict[str, Any]]:
        """Hooks on the vision tower: the local encoder's input, both encoders' per-layer states, their maps."""
        vision = self.core().vision_model
        store: dict[str, Any] = {"input": None, "local": None, "global": None, "attn": [], "projected": None}
        handles = [
            self.core().multi_modal_projector.register_forward_hook(
                lambda m, a, out: store.__setitem__("projected", out)),
            vision.transformer.register_forward_pre_hook(lambda m, args: store.__setitem__("input", args[0])),
            vision.transformer.register_forward_hook(lambda m, a, out: store.__setitem__("local", out.hidden_states)),
            vision.global_transformer.register_forward_hook(
                lambda m, a, out: store.__setitem__("global", out.hidden_states)),
        ]
        if attentions:
            for encoder in (vision.transformer, vision.global_transformer):
                for layer in encoder.layers:
                    handles.append(layer.self_attn.register_forward_hook(
                        lambda m, a, out: store["attn"].append(out[1])))
        try:
            yield store
        finally:
            for handle in handles:
                handle.remove()

    def _vision_tokens(self, padded: int) -> torch.Tensor:
        """Positions of the real vision tokens in the tower's padded sequence (per tile ``P`` of ``padded``)."""
        return (torch.arange(self.n_tiles)[:, None] * padded + torch.arange(self.per_tile)[None, :]).reshape(-1)

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        if batch.get("hide"):
            raise ValueError("Mllama cannot hide a modality: its text reads the image only through cross-attention "
                             "layers (a knock-out needs a joint stream)")
        ids = batch["input_ids"].to(self.device)
        real = batch["real"].to(self.device)
        word_ids = batch["word_ids"].to(self.device)
        tiles = batch["tiles"].to(self.device).bool()
        with self._vision_capture(self.output_attentions) as store:
            out = self.core()(input_ids=ids, attention_mask=real.long(),
                              pixel_values=batch["pixel_values"].to(self.device, self.dtype),
                              aspect_ratio_ids=batch["aspect_ratio_ids"].to(self.device),
                              aspect_ratio_mask=batch["aspect_ratio_mask"].to(self.device),
                              cross_attention_mask=batch["cross_attention_mask"].to(self.device),
                              output_hidden_states=True, output_attentions=self.output_attentions, use_cache=False)
        states = (store["input"], *store["local"], *store["global"])
        padded = states[0].shape[1] // self.n_tiles
        keep = self._vision_tokens(padded).to(self.device)
        image_hidden = [h[:, keep] for h in states]
        image_mask = tiles.repeat_interleave(self.per_tile, dim=1)
        is_cls = (torch.arange(keep.numel(), device=self.device) % self.per_tile) == 0
        image_content = image_mask & ~is_cls[None, :]
        caption = word_ids >= 0
        n_caption = caption.sum(dim=1)
        last = torch.where(n_caption > 0, (caption.long() * torch.arange(ids.shape[1], device=self.device)).argmax(1),
                           torch.zeros_like(n_caption))
        text_hidden = tuple(out.hidden_states)
        single_tile = self.n_tiles == 1
        trace = Trace(
            hidden={TEXT: text_hidden, IMAGE: image_hidden},
            mask={TEXT: real, IMAGE: image_mask},
            pool_index={TEXT: last, IMAGE: None},
            content={TEXT: caption, IMAGE: image_content},
            word_ids=word_ids,
            patch_grid=(self.side, self.side) if single_tile else None,
            patch_offset=1,
            image_size=tuple(batch["pixel_values"].shape[-2:]),
        )
        trace.embeds[TEXT] = masked_token_mean(text_hidden[-1], caption)
        projected = store["projected"]  # (B, 1, tiles, P, D_text): what the cross-attention layers read
        trace.embeds[IMAGE] = masked_token_mean(projected.reshape(ids.shape[0], -1, projected.shape[-1]),
                                                image_content)
        if self.output_attentions:
            self._add_attention(trace, out.attentions, store["attn"], keep, real, caption, image_mask, is_cls)
        return trace

    def _add_attention(self, trace: Trace, text_maps: Sequence[torch.Tensor], vision_maps: list, keep: torch.Tensor,
                       real: torch.Tensor, caption: torch.Tensor, image_mask: torch.Tensor, is_cls: torch.Tensor) -> None:
        text_groups = torch.full(real.shape, GROUP_SPECIAL, dtype=torch.long, device=real.device)
        text_groups[caption] = GROUP_TEXT
        text_groups[~real] = GROUP_PAD
        image_groups = torch.full(image_mask.shape, GROUP_IMAGE, dtype=torch.long, device=real.device)
        image_groups[:, is_cls] = GROUP_SPECIAL
        image_groups[~image_mask] = GROUP_PAD
        self_layers = [i for i in range(len(text_maps)) if i not in self.cross]
        trace.attention[TEXT] = AttentionStream([text_maps[i] for i in self_layers], text_groups, causal=True)
        if vision_maps:
            # the tower's maps over its padded tiles, read at the real tokens by strided slices
            padded = vision_maps[0].shape[-1] // self.n_tiles
            trace.attention[IMAGE] = AttentionStream(GatheredMaps(vision_maps, keep, (self.n_tiles, padded,
                                                                                      self.per_tile)),
                                                     image_groups, causal=False)
        if self.cross:
            trace.attention[CROSS] = AttentionStream(cross_stream_maps(text_maps, self.cross, real.shape[1]),
                                                     torch.cat([text_groups, image_groups], dim=1), causal=False)
