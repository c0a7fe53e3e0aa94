"""Shared machinery of dual-encoder adapters (an image tower and a text tower).

CLIP and SigLIP differ only in how each tower pools and projects; this module
does the tokenising, preprocessing and word alignment they share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream,
                                ModelAdapter, ModelInfo, Trace)
from mmdiag.models.special import resolve_special_ids


@dataclass
class TextInputs:
    """Tokenised captions with the word each token belongs to."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_ids: torch.Tensor
    truncated: int
    #: raw token ids only (the ``noise`` control): the ids they were wrapped with, ``{"bos", "eos", "pad"}``
    special: Optional[dict] = None


def caption_words(sample: Sample) -> list[str]:
    """The words a caption is scored in: the gold words if annotated, else whitespace split."""
    if sample.words is not None:
        return list(sample.words)
    return sample.caption.split()


def tokenize_captions(tokenizer: Any, samples: Sequence[Sample], max_length: int,
                      pad_to_max: bool = False, bos_id: Optional[int] = None,
                      eos_id: Optional[int] = None, pad_id: int = 0) -> TextInputs:
    """Tokenise samples' words with word alignment; raw ``token_ids`` are used as given.

    Captions longer than the model's context are truncated (keeping the final
    special token) and counted in ``truncated``.
    """
    if all(s.token_ids is not None for s in samples):
        return _raw_ids(samples, max_length, pad_to_max, bos_id, eos_id, pad_id)
    words = [caption_words(s) or [""] for s in samples]
    full = tokenizer(words, is_split_into_words=True, add_special_tokens=True, truncation=False, verbose=False)
    truncated = sum(len(ids) > max_length for ids in full["input_ids"])
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                    padding="max_length" if pad_to_max else "longest", return_tensors="pt")
    word_ids = torch.full(enc["input_ids"].shape, -1, dtype=torch.long)
    for row in range(len(samples)):
        for col, wid in enumerate(enc.word_ids(row)):
            if wid is not None:
                word_ids[row, col] = wid
    mask = enc.get("attention_mask")
    if mask is None:
        mask = (enc["input_ids"] != pad_id).long()
    return TextInputs(enc["input_ids"], mask, word_ids, truncated)


def _raw_ids(samples: Sequence[Sample], max_length: int, pad_to_max: bool,
             bos_id: Optional[int], eos_id: Optional[int], pad_id: int) -> TextInputs:
    """Wrap given token ids (the ``noise`` control) with the model's special tokens."""
    rows, truncated = [], 0
    room = max_length - (bos_id is not None) - (eos_id is not None)
    for s in samples:
        ids = list(s.token_ids or ())
        truncated += len(ids) > room
        ids = ids[:room]
        rows.append(([bos_id] if bos_id is not None else []) + ids + ([eos_id] if eos_id is not None else []))
    width = max_length if pad_to_max else max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    word_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    offset = 1 if bos_id is not None else 0
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
        n_words = len(row) - offset - (eos_id is not None)
        word_ids[i, offset:offset + n_words] = torch.arange(n_words)
    return TextInputs(input_ids, mask, word_ids, truncated, {"bos": bos_id, "eos": eos_id, "pad": pad_id})


def note_text(adapter: Any, text: TextInputs) -> None:
    """Count ``text``'s truncated captions on ``adapter`` and keep the special ids raw token ids were wrapped
    with (``adapter.noise_special_ids``, written to results.json as ``data.special_ids``)."""
    adapter.truncated_captions += text.truncated
    if text.special is not None:
        adapter.noise_special_ids = dict(text.special)


def distinct_images(samples: Sequence[Sample]) -> tuple[list[int], list[int]]:
    """(the first sample of each distinct image, each sample's index into those) within one batch.

    Samples sharing ``meta["image_key"]`` (the captions of one COCO image) show the same image, so the image
    tower runs once for them; a sample without a key is its own image.
    """
    first: dict = {}
    rows: list[int] = []
    index: list[int] = []
    for i, sample in enumerate(samples):
        key = sample.meta.get("image_key") if sample.meta else None
        key = ("sample", i) if key is None else ("image", key)
        if key not in first:
            first[key] = len(rows)
            rows.append(i)
        index.append(first[key])
    return rows, index


def expand_image_entries(trace: Trace, index: torch.Tensor) -> None:
    """Repeat the image tower's per-image rows of ``trace`` so that row i is sample i's image (``index[i]``)."""
    take = lambda t: t if t is None else t.index_select(0, index.to(t.device))  # noqa: E731
    trace.hidden[IMAGE] = [take(h) for h in trace.hidden[IMAGE]]
    for entries in (trace.mask, trace.pool_index, trace.content, trace.embeds):
        if IMAGE in entries:
            entries[IMAGE] = take(entries[IMAGE])
    stream = trace.attention.get(IMAGE)
    if stream is not None:
        trace.attention[IMAGE] = AttentionStream([take(m) for m in stream.maps], take(stream.groups),
                                                 causal=stream.causal, grounding=stream.grounding)


def pixel_values(processor: Any, samples: Sequence[Sample]) -> torch.Tensor:
    """Preprocess the samples' images into a ``(B, 3, H, W)`` tensor."""
    images = [s.image.convert("RGB") for s in samples]
    return processor(images=images, return_tensors="pt")["pixel_values"]


class DualEncoderAdapter(ModelAdapter):
    """Base adapter for two-tower models; subclasses define pooling and projection."""

    family = "dual"
    modalities = (IMAGE, TEXT)
    pad_text_to_max = False

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any,
                 info: ModelInfo, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, tokenizer, info, device, dtype, image_processor)

    # -- per-family hooks ---------------------------------------------------
    def text_config(self) -> Any:
        return self.model.config.text_config

    def vision_config(self) -> Any:
        return self.model.config.vision_config

    def layer_counts(self) -> dict[str, int]:
        return {IMAGE: self.vision_config().num_hidden_layers + 1,
                TEXT: self.text_config().num_hidden_layers + 1}

    def max_text_length(self) -> int:
        return int(self.text_config().max_position_embeddings)

    def special_ids(self) -> tuple[Optional[int], Optional[int], int]:
        """(bos, eos, pad) ids used to wrap raw token ids: the tokenizer's, the text config's only where the
        tokenizer has none (see :mod:`mmdiag.models.special`; resolved once, so the fallback warns once)."""
        resolved = self.__dict__.get("_special")
        if resolved is None:
            resolved = self._special = resolve_special_ids(self.tokenizer, self.text_config())
        return resolved.as_tuple()

    # -- protocol -----------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        bos, eos, pad = self.special_ids()
        text = tokenize_captions(self.tokenizer, samples, self.max_text_length(),
                                 pad_to_max=self.pad_text_to_max, bos_id=bos, eos_id=eos, pad_id=pad)
        note_text(self, text)
        batch: dict[str, Any] = {"text": text}
        if all(s.image is not None for s in samples):
            rows, index = distinct_images(samples)
            batch["pixel_values"] = pixel_values(self.image_processor, [samples[r] for r in rows])
            if len(rows) < len(samples):
                batch["image_index"] = torch.tensor(index, dtype=torch.long)
        return batch

    def text_trace(self, batch: dict[str, Any]) -> Trace:
        """A new trace with the text tower run on ``batch["text"]``: its states, mask, word ids and content
        (``run_text`` may narrow the mask, e.g. a tower trained without one)."""
        trace = Trace(hidden={}, mask={}, pool_index={}, content={})
        text: TextInputs = batch["text"]
        ids = text.input_ids.to(self.device)
        mask = text.attention_mask.to(self.device)
        trace.mask[TEXT] = mask.bool()
        self.run_text(ids, mask, trace)
        trace.word_ids = text.word_ids.to(self.device)
        trace.content[TEXT] = trace.word_ids >= 0
        return trace

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        trace = self.text_trace(batch)
        if "pixel_values" in batch:
            pixels = batch["pixel_values"].to(self.device, self.dtype)
            self.run_vision(pixels, trace)
            if "image_index" in batch:  # several captions of one image: its tower ran once, rows repeated
                expand_image_entries(trace, batch["image_index"])
            trace.image_size = tuple(pixels.shape[-2:])
        trace.logit_scale = self.logit_scale()
        return trace

    def add_tower_attention(self, trace: Trace, modality: str, attentions, special: torch.Tensor,
                            mask: torch.Tensor, causal: bool) -> None:
        """Record a tower's attention maps with its token groups (for attention.entropy)."""
        groups = torch.full(mask.shape, GROUP_IMAGE if modality == IMAGE else GROUP_TEXT, dtype=torch.long,
                            device=mask.device)
        groups[special] = GROUP_SPECIAL
        groups[~mask] = GROUP_PAD
        trace.attention[modality] = AttentionStream(attentions, groups, causal=causal)

    def run_text(self, ids: torch.Tensor, mask: torch.Tensor, trace: Trace) -> None:
        raise NotImplementedError

    def run_vision(self, pixels: torch.Tensor, trace: Trace) -> None:
        raise NotImplementedError

    def logit_scale(self) -> Optional[float]:
        scale = getattr(self.model, "logit_scale", None)
        return None if scale is None else float(scale.detach().float().exp())

    def patch_grid(self, pixels: torch.Tensor) -> tuple[int, int]:
        patch = self.vision_config().patch_size
        return pixels.shape[-2] // patch, pixels.shape[-1] // patch
