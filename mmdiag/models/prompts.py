"""The image part of a decoder-VLM prompt: the model's own processor expands the image token.

A decoder VLM (LLaVA, Qwen2-VL, Gemma 3, ...) reads one sequence in which an
image placeholder token stands for each visual feature. How many placeholders an
image needs (tiling, dynamic resolution, crops), which tokens frame them
(``<|vision_start|>``, ``<start_of_image>``, row breaks) and which extra inputs the
forward needs (``image_grid_thw``, ``mm_token_type_ids`` for M-RoPE,
``pixel_attention_mask``, ``image_sizes``) is the model's processor's business, so
mmdiag asks it: :class:`ProcessorPrompt` renders the chat template (where there is
one) around a sentinel standing for the caption, gives the processor the part
before it with the images, and appends the caption tokens itself, so the caption
words are known tokens with known word ids.

:class:`ExpandedPrompt` is the fallback for a checkpoint with only an image
processor (LLaVA directories written without a ``LlavaProcessor``): ``BOS`` then
``<image>`` repeated by the count the config implies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

#: stands for the caption in a rendered chat template (never part of a real prompt)
SENTINEL = "\u2063MMDIAG_CAPTION\u2063"
#: processor outputs the adapter builds itself (the rest go to the model as they are)
OWN_KEYS = ("input_ids", "attention_mask")


@dataclass
class ImagePrefix:
    """Per sample the token ids before the caption, and what else the model's forward takes.

    ``per_token``: inputs aligned with the prefix ids (``token_type_ids``,
    ``mm_token_type_ids``), one list per sample; they get 0 after the prefix.
    ``extra``: the image inputs (``pixel_values``, ``image_grid_thw``, ...).
    """

    ids: list[list[int]]
    per_token: dict[str, list[list[int]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def render_template(template: Any, tokenizer: Any, processor: Any) -> tuple[str, str]:
    """(text before the caption, text after it) of a one-turn user message: an image, then the caption."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": SENTINEL}]}]
    owner = processor if getattr(processor, "chat_template", None) else tokenizer
    try:
        rendered = owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                             chat_template=template)
    except AttributeError:  # an assembled processor whose apply_chat_template reads its video processor (SmolVLM's
        # frame count): the same Jinja template rendered by the tokenizer, which gives the same text for one image
        if owner is tokenizer:
            raise
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                                 chat_template=template)
    if isinstance(rendered, list):
        rendered = rendered[0]
    if SENTINEL not in rendered:
        raise ValueError("the chat template dropped the user's text")
    before, _, after = rendered.partition(SENTINEL)
    return before, after


class ProcessorPrompt:
    """``before`` (with its image placeholder) through the model's processor; ``after`` follows the caption."""

    def __init__(self, processor: Any, tokenizer: Any, use_template: bool = True,
                 placeholder: Optional[str] = None) -> None:
        self.processor = processor
        self.tokenizer = tokenizer
        template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        self.templated = bool(template) and use_template
        if self.templated:
            self.before, self.after = render_template(template, tokenizer, processor)
        else:
            if placeholder is None:
                placeholder = (getattr(processor, "boi_token", None) or getattr(processor, "image_token", None)
                               or "<image>")
            self.before, self.after = placeholder, ""
        bos = getattr(tokenizer, "bos_token", None)
        #: a rendered template that already starts with BOS must not get a second one from the tokenizer
        self.add_special = not (self.templated and bos and self.before.startswith(bos))
        self.after_ids = tokenizer(self.after, add_special_tokens=False)["input_ids"] if self.after else []
        self._nested: Optional[bool] = None

    def describe(self) -> str:
        return "chat template" if self.templated else f"{self.before!r} then the caption"

    def _call(self, images: list, nested: bool) -> Any:
        imgs = [[im] for im in images] if nested else images
        return self.processor(text=[self.before] * len(images), images=imgs, return_tensors="pt", padding=True,
                              add_special_tokens=self.add_special)

    def build(self, images: Sequence[Any]) -> ImagePrefix:
        images = list(images)
        if self._nested is None:
            try:
                enc, self._nested = self._call(images, False), False
            except (ValueError, TypeError, IndexError):
                enc, self._nested = self._call(images, True), True
        else:
            enc = self._call(images, self._nested)
        ids = enc["input_ids"]
        mask = enc.get("attention_mask")
        keep = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        out = ImagePrefix(ids=[row[k].tolist() for row, k in zip(ids, keep)])
        for key, value in enc.items():
            if key in OWN_KEYS:
                continue
            if isinstance(value, torch.Tensor) and value.shape == ids.shape:
                out.per_token[key] = [row[k].tolist() for row, k in zip(value, keep)]
            else:
                out.extra[key] = value
        return out


class ExpandedPrompt:
    """``BOS <image> x n`` with pixel values from the image processor (no multimodal processor)."""

    templated = False
    after_ids: list[int] = []

    def __init__(self, image_processor: Any, bos: Optional[int], image_token_id: int, n_image: int) -> None:
        self.image_processor = image_processor
        self.prefix = ([bos] if bos is not None else []) + [int(image_token_id)] * int(n_image)

    def describe(self) -> str:
        return "BOS, <image> x N, then the caption (no processor: image processor and tokenizer)"

    def build(self, images: Sequence[Any]) -> ImagePrefix:
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return ImagePrefix(ids=[list(self.prefix) for _ in images], extra={"pixel_values": pixels})
