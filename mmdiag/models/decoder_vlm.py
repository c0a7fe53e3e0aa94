"""A generic adapter for decoder VLMs (``AutoModelForImageTextToText`` models with an image token).

LLaVA (Liu et al. 2023, arXiv:2304.08485) and its successors (LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL's M-RoPE, Gemma 3, PaliGemma, Idefics3/SmolVLM,
InternVL, ...) write projected visual features into one causal decoder sequence
at the positions of an image placeholder token (``config.image_token_id`` or
``image_token_index``). mmdiag builds the sequence per sample as::

    [prompt before the caption, with the image placeholders the processor expanded]
    caption tokens  [rest of the chat turn]  <pad> ...      (right padding)

(:mod:`mmdiag.models.prompts`). Then:

- ``hidden["image"]``: the decoder's hidden states at the image-token positions
  (found from the input ids; their number may differ per sample: tiling, dynamic
  resolution); ``hidden["text"]``: from the caption's first token to the row's
  last real token. Views of the joint states when every row has the same layout,
  gathered copies otherwise. Entry 0 = input embeddings after the merge.
- pooled text state: the last caption token; pooled image state: none (mean of
  the image tokens). ``embeds[m]``: the mean of ``m``'s content tokens in the
  model's last hidden state.
- attention stream ``"joint"``, causal, groups: image tokens IMAGE, caption
  tokens TEXT, padding PAD, every other prompt token SPECIAL. A caption token
  placed before the first image token cannot see the image in a causal model, so
  it counts as SPECIAL in the attention groups (not towards text->image).
- extra inputs the forward needs (``image_grid_thw`` and ``mm_token_type_ids``
  for 3-D rotary positions, ``pixel_attention_mask``, ``image_sizes``,
  ``token_type_ids``) come from the processor and are passed through.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.errors import SpecError
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream,
                                ModelAdapter, ModelInfo, Trace)
from mmdiag.models.dual import caption_words
from mmdiag.models.vilt import masked_token_mean


def image_token_id(config: Any) -> Optional[int]:
    """The config's image placeholder id (``image_token_id`` or ``image_token_index``), or None."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def is_generic_decoder(config: Any) -> bool:
    """An image-text-to-text architecture with an image token (the generic adapter can run it)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as NAMES

    return config.model_type in NAMES and image_token_id(config) is not None and hasattr(config, "text_config")


def generic_family(model_type: str):
    """An ad-hoc family for an image-text-to-text ``model_type`` no declared family covers."""
    from transformers import AutoModelForImageTextToText

    from mmdiag.models.family import Family

    def factory(model, tokenizer, processor, info, device, dtype):
        return DecoderVLMAdapter(model, tokenizer, processor, info, device, dtype, family=f"generic:{model_type}")

    return Family(f"generic:{model_type}", (model_type,), factory, model_class=AutoModelForImageTextToText,
                  needs="processor", origin="generic decoder adapter (no declared family)")


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else getattr(config, "text_config", config)


class DecoderVLMAdapter(ModelAdapter):
    """Any decoder VLM with an image token (see the module doc)."""

    family = "decoder-vlm"
    modalities = (IMAGE, TEXT)
    joint_attention = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, processor: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype, family: Optional[str] = None,
                 placeholder: Optional[str] = None, causal: bool = True) -> None:
        #: the image placeholder written before the caption when there is no chat template (None: the
        #: processor's ``boi_token`` or ``image_token``; "" for processors that prepend the image themselves)
        self.placeholder = placeholder
        #: whether a query sees only the keys before it (False for prefix-LM prompts: PaliGemma's whole prompt is
        #: one bidirectional prefix)
        self.causal = causal
        image_processor = getattr(processor, "image_processor", processor)
        super().__init__(model, tokenizer, info, device, dtype, image_processor)
        if family:
            self.family = family
        self.processor = processor
        self.image_id = image_token_id(model.config)
        if self.image_id is None:
            raise ValueError(f"{type(model).__name__}'s config has no image_token_id / image_token_index")
        self.prompt = self.make_prompt(processor)
        if self.info is not None:
            self.info.extra.setdefault("prompt", self.prompt.describe())
            note = getattr(processor, "assembled_note", None)
            if note:
                self.info.extra["processor_note"] = note

    # -- configuration -------------------------------------------------------
    def make_prompt(self, processor: Any) -> Any:
        from mmdiag.models.prompts import ProcessorPrompt

        if not hasattr(processor, "tokenizer") or not callable(processor):
            raise SpecError(f"the {self.family} adapter needs the model's multimodal processor (image processor + "
                            f"tokenizer + chat template), got {type(processor).__name__}; write it with "
                            "processor.save_pretrained(dir)")
        return ProcessorPrompt(processor, self.tokenizer, placeholder=self.placeholder)

    def text_config(self) -> Any:
        return _text_config(self.model.config)

    def layer_counts(self) -> dict[str, int]:
        n = int(self.text_config().num_hidden_layers) + 1
        return {IMAGE: n, TEXT: n}

    def max_length(self) -> int:
        return int(getattr(self.text_config(), "max_position_embeddings", 4096) or 4096)

    def special_ids(self) -> tuple[Optional[int], int, int]:
        """(bos, pad, unk) ids; pad and unk fall back on the config's pad id, then 0."""
        tok, cfg = self.tokenizer, self.text_config()
        bos = tok.bos_token_id if tok.bos_token_id is not None else getattr(cfg, "bos_token_id", None)
        pad = tok.pad_token_id
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        if pad is None:
            pad = tok.eos_token_id
        pad = 0 if pad is None else int(pad)
        unk = tok.unk_token_id if tok.unk_token_id is not None else pad
        return bos, pad, unk

    def core(self) -> torch.nn.Module:
        """The multimodal model without the LM head (its logits are not needed)."""
        inner = getattr(self.model, "model", None)
        return inner if inner is not None and hasattr(self.model, "lm_head") else self.model

    # -- protocol --------------------------------------------------------------
    def caption_ids(self, samples: Sequence[Sample], room: int) -> tuple[list[list[int]], list[list[int]]]:
        """Per sample the caption's token ids (no special tokens) and their word ids, cut at ``room``."""
        unk = self.special_ids()[2]
        specials = set(getattr(self.tokenizer, "all_special_ids", ()))
        rows, words = [], []
        for sample in samples:
            if sample.token_ids is not None:  # the noise control's raw ids, one "word" each
                ids = [int(i) for i in sample.token_ids]
                wids = list(range(len(ids)))
            else:
                enc = self.tokenizer(caption_words(sample) or [""], is_split_into_words=True,
                                     add_special_tokens=False)
                ids = list(enc["input_ids"])
                wids = [-1 if w is None else int(w) for w in enc.word_ids()]
            if len(ids) > room:
                self.truncated_captions += 1
                ids, wids = ids[:room], wids[:room]
            # an id that would place an image feature (a literal "<image>", a raw noise id) becomes <unk>
            ids = [unk if (i == self.image_id or (sample.token_ids is None and i in specials and w < 0)) else i
                   for i, w in zip(ids, wids)]
            rows.append(ids)
            words.append(wids)
        return rows, words

    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Token ids, word ids and image inputs of ``samples`` (see the module doc).

        The returned dict may get a ``"hide"`` entry (a tuple of modalities) before
        :meth:`forward`: those tokens are removed from the attention mask (a
        knock-out) while keeping their token groups.
        """
        if any(s.image is None for s in samples):
            raise ValueError(f"the {self.family} adapter needs an image for every sample")
        prefix = self.prompt.build([s.image for s in samples])
        after = list(self.prompt.after_ids)
        longest = max(len(p) for p in prefix.ids)
        room = max(1, self.max_length() - longest - len(after))
        captions, caption_words_ = self.caption_ids(samples, room)
        _, pad, _ = self.special_ids()
        lengths = [len(p) + len(c) + len(after) for p, c in zip(prefix.ids, captions)]
        width = max(max(lengths), longest + 1)  # >= 1 text position, even if every caption is empty
        batch = len(samples)
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        word_ids = torch.full((batch, width), -1, dtype=torch.long)
        real = torch.zeros((batch, width), dtype=torch.bool)
        text_start = torch.zeros(batch, dtype=torch.long)
        per_token = {k: torch.zeros((batch, width), dtype=torch.long) for k in prefix.per_token}
        for i, (p, c, w) in enumerate(zip(prefix.ids, captions, caption_words_)):
            row = p + c + after
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            word_ids[i, len(p):len(p) + len(c)] = torch.tensor(w, dtype=torch.long)
            real[i, :len(row)] = True
            text_start[i] = len(p)
            for key, values in prefix.per_token.items():
                per_token[key][i, :len(p)] = torch.tensor(values[i], dtype=torch.long)
        image = (input_ids == self.image_id) & real
        extra = {**prefix.extra, **per_token}
        return {"input_ids": input_ids, "real": real, "word_ids": word_ids, "image": image,
                "text_start_rows": text_start, "extra": extra, "pixel_values": extra.get("pixel_values"),
                **self._uniform_layout(image, text_start)}

    @staticmethod
    def _uniform_layout(image: torch.Tensor, text_start: torch.Tensor) -> dict[str, Optional[int]]:
        """``image_start``/``text_start`` when every row has one contiguous image run at the same place and the
        caption at the same position (then the modality states are views), else None."""
        counts = image.sum(dim=1)
        first = image.int().argmax(dim=1)
        same = bool((counts == counts[0]).all() and (first == first[0]).all() and (text_start == text_start[0]).all())
        if same:
            start, n = int(first[0]), int(counts[0])
            same = bool(image[:, start:start + n].all())
        if not same:
            return {"image_start": None, "text_start": None}
        return {"image_start": int(first[0]), "text_start": int(text_start[0])}

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in batch["extra"].items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, self.dtype if value.is_floating_point() else None)
            out[key] = value
        return out

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        ids = batch["input_ids"].to(self.device)
        real = batch["real"].to(self.device)
        word_ids = batch["word_ids"].to(self.device)
        image = batch["image"].to(self.device)
        caption = word_ids >= 0
        attend = real.clone()
        hide = tuple(batch.get("hide", ()))
        if IMAGE in hide:
            attend &= ~image
        if TEXT in hide:
            attend &= ~caption
        extra = self._inputs(batch)
        if hide:
            extra.update(self._positions(ids, real, extra))
        out = self.core()(input_ids=ids, attention_mask=attend.long(), output_hidden_states=True,
                          output_attentions=self.output_attentions, **extra)
        states = out.hidden_states
        text_start = batch["text_start_rows"].to(self.device)
        text_index, text_mask = self._text_slots(real, text_start)
        image_index, image_mask = self._slots(image)
        hidden = {TEXT: self._take(states, text_index, batch["text_start"], text_mask.shape[1]),
                  IMAGE: self._take(states, image_index, batch["image_start"], image_mask.shape[1])}
        text_words = torch.gather(word_ids, 1, text_index).masked_fill(~text_mask, -1)
        n_caption = (text_words >= 0).sum(dim=1)
        trace = Trace(
            hidden=hidden,
            mask={TEXT: text_mask, IMAGE: image_mask},
            pool_index={TEXT: (n_caption - 1).clamp_min(0), IMAGE: None},
            content={TEXT: text_words >= 0, IMAGE: image_mask},
            word_ids=text_words,
            patch_grid=self.patch_grid(image_mask),
            patch_offset=self.patch_offset(),
            image_size=self.image_size(batch),
            logit_scale=None,
        )
        trace.embeds[TEXT] = masked_token_mean(hidden[TEXT][-1], text_words >= 0)
        trace.embeds[IMAGE] = masked_token_mean(hidden[IMAGE][-1], image_mask)
        if self.output_attentions:
            trace.attention["joint"] = AttentionStream(out.attentions, self.joint_groups(real, caption, image),
                                                       causal=self.causal)
        return trace

    def _positions(self, ids: torch.Tensor, real: torch.Tensor, extra: dict) -> dict:
        """Rotary positions computed over the whole prompt, so a knock-out (``hide``) changes the attention mask
        only, not where the tokens sit (models with multimodal rotary positions compute them from the mask)."""
        core = self.core()
        compute = getattr(core, "compute_3d_position_ids", None)
        if compute is None or "position_ids" in extra:
            return {}
        keys = ("image_grid_thw", "video_grid_thw", "mm_token_type_ids")
        try:
            positions = compute(input_ids=ids, inputs_embeds=None, attention_mask=real.long(),
                                **{k: extra[k] for k in keys if k in extra})
        except (TypeError, ValueError):
            return {}
        if hasattr(core, "rope_deltas"):
            core.rope_deltas = None
        return {} if positions is None else {"position_ids": positions}

    @staticmethod
    def _slots(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row the positions where ``flags`` holds, left-aligned: ``(index, valid)`` of width max count."""
        counts = flags.sum(dim=1)
        width = max(1, int(counts.max()))
        order = torch.argsort((~flags).int(), dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=flags.device)[None, :] < counts[:, None]
        return order, valid

    @staticmethod
    def _text_slots(real: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From each row's caption start to its last real token (index clamped, valid mask)."""
        lengths = real.sum(dim=1) - start
        width = max(1, int(lengths.max()))
        steps = torch.arange(width, device=real.device)[None, :]
        index = (start[:, None] + steps).clamp_max(real.shape[1] - 1)
        return index, steps < lengths[:, None]

    @staticmethod
    def _take(states: Sequence[torch.Tensor], index: torch.Tensor, start: Optional[int], width: int) -> list:
        if start is not None:  # the same layout in every row: views
            return [h[:, start:start + width] for h in states]
        expand = index[:, :, None]
        return [torch.gather(h, 1, expand.expand(-1, -1, h.shape[-1])) for h in states]

    @staticmethod
    def joint_groups(real: torch.Tensor, caption: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Token groups of the decoder sequence; a caption token before the row's first image token is SPECIAL."""
        groups = torch.full(real.shape, GROUP_SPECIAL, dtype=torch.long, device=real.device)
        groups[image] = GROUP_IMAGE
        positions = torch.arange(real.shape[1], device=real.device)[None, :]
        first_image = torch.where(image.any(dim=1), image.int().argmax(dim=1), real.shape[1])
        groups[caption & (positions > first_image[:, None])] = GROUP_TEXT
        groups[~real] = GROUP_PAD
        return groups

    def patch_grid(self, image_mask: torch.Tensor) -> Optional[tuple[int, int]]:
        """The image tokens' grid when they are one square grid of patches (else None: no region checks)."""
        return None

    def patch_offset(self) -> int:
        return 0

    @staticmethod
    def image_size(batch: dict[str, Any]) -> Optional[tuple[int, int]]:
        pixels = batch["extra"].get("pixel_values")
        if isinstance(pixels, torch.Tensor) and pixels.dim() == 4:
            return tuple(pixels.shape[-2:])
        return None
