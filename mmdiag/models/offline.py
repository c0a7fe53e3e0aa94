"""Offline tokenizers and image processors for ``random:`` presets.

Presets carry the published architecture configs but no hub files, so mmdiag
builds a deterministic WordPiece tokenizer over the synthetic grammar's words
plus single characters (any word still tokenises, as sub-words, which also
exercises the word pooling), with the special-token ids of the real model's
config. Image preprocessing uses the published normalisation constants.
"""
from __future__ import annotations

import string
from typing import Optional

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (CLIPImageProcessorPil, PreTrainedTokenizerFast, SiglipImageProcessorPil,
                          ViltImageProcessorPil)

from mmdiag.data.synthetic import SYNTHETIC_VOCAB

#: OpenAI CLIP's normalisation (from the CLIP repository's preprocessing).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _base_vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = [w for w in SYNTHETIC_VOCAB if w not in chars]
    return chars + ["##" + c for c in chars] + sorted(set(words))


def word_tokenizer(
    vocab_size: int,
    specials: dict[str, int],
    template: tuple[Optional[str], Optional[str]],
    pad: str,
    unk: str,
    max_length: int,
    padding_side: str = "right",
    named: Optional[dict[str, str]] = None,
) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer over the synthetic vocabulary and characters.

    ``specials`` maps special tokens to the ids the model config expects;
    ``template`` is the (prefix, suffix) special token wrapped around a caption;
    ``named`` gives special tokens an attribute name (``{"image_token": "<image>"}``
    makes ``tok.image_token`` and ``tok.image_token_id``), as multimodal processors read them.
    """
    ids = dict(specials)
    next_id = 0
    for token in _base_vocab():
        while next_id in ids.values():
            next_id += 1
        if next_id >= vocab_size:
            break
        ids.setdefault(token, next_id)
        next_id += 1
    tok = Tokenizer(models.WordPiece(ids, unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    prefix, suffix = template
    single = " ".join(t for t in (prefix, "$A", suffix) if t)
    used = [(t, ids[t]) for t in (prefix, suffix) if t]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=used)
    kwargs = {"pad_token": pad, "unk_token": unk}
    if prefix:
        kwargs["bos_token"] = prefix
    if suffix:
        kwargs["eos_token"] = suffix
    if named:
        kwargs["extra_special_tokens"] = dict(named)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **kwargs)
    fast.padding_side = padding_side
    return fast


def clip_tokenizer(vocab_size: int, bos_id: int, eos_id: int, max_length: int) -> PreTrainedTokenizerFast:
    """CLIP-style: ``<|startoftext|> words <|endoftext|>``, padded with EOS."""
    specials = {"<|startoftext|>": bos_id, "<|endoftext|>": eos_id, "[UNK]": _free_id(vocab_size, {bos_id, eos_id})}
    return word_tokenizer(vocab_size, specials, ("<|startoftext|>", "<|endoftext|>"),
                          pad="<|endoftext|>", unk="[UNK]", max_length=max_length)


def siglip_tokenizer(vocab_size: int, pad_id: int, eos_id: int, unk_id: int, max_length: int) -> PreTrainedTokenizerFast:
    """SigLIP-style: ``words </s>``; SigLIP pools the last position, so callers pad to max length."""
    specials = {"</s>": eos_id, "<unk>": unk_id}
    if pad_id != eos_id:
        specials["<pad>"] = pad_id
    pad = "<pad>" if pad_id != eos_id else "</s>"
    return word_tokenizer(vocab_size, specials, (None, "</s>"), pad=pad, unk="<unk>", max_length=max_length)


def bert_tokenizer(vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """BERT-style: ``[CLS] words [SEP]`` with bert-base-uncased's special ids."""
    specials = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    fast = word_tokenizer(vocab_size, specials, ("[CLS]", "[SEP]"), pad="[PAD]", unk="[UNK]", max_length=max_length)
    fast.cls_token, fast.sep_token, fast.mask_token = "[CLS]", "[SEP]", "[MASK]"
    return fast


def _free_id(vocab_size: int, taken: set[int]) -> int:
    for candidate in range(vocab_size - 1, -1, -1):
        if candidate not in taken:
            return candidate
    raise ValueError("vocabulary too small")


def clip_image_processor(size: int):
    """OpenAI CLIP preprocessing: bicubic resize of the short side, centre crop, CLIP mean/std."""
    return CLIPImageProcessorPil(
        do_resize=True, size={"shortest_edge": size}, resample=3,
        do_center_crop=True, crop_size={"height": size, "width": size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True,
    )


def siglip_image_processor(size: int):
    """SigLIP preprocessing: bilinear resize to a square, mean = std = 0.5."""
    return SiglipImageProcessorPil(
        do_resize=True, size={"height": size, "width": size}, resample=2,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_convert_rgb=True,
    )


def vilt_image_processor(size: int, size_divisor: int):
    """ViLT preprocessing (Kim et al. 2021): bicubic resize of the short side to ``size``
    (long side capped at 1333/800 of it, both rounded down to ``size_divisor``), mean = std
    = 0.5, padding to the batch's largest image with a ``pixel_mask``.

    The ViLT adapter squares images to ``size`` before this processor, so no padding occurs.
    """
    return ViltImageProcessorPil(
        do_resize=True, size={"shortest_edge": size}, size_divisor=size_divisor, resample=3,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_pad=True,
    )


def llama_tokenizer(vocab_size: int, bos_id: int, eos_id: int, pad_id: int, image_token_id: int,
                    max_length: int) -> PreTrainedTokenizerFast:
    """Llama/LLaVA-style: ``<s> words`` (no EOS, as Llama's tokenizer adds none), right padding,
    and an ``<image>`` special token whose id is the model's ``image_token_id``."""
    specials = {"<s>": bos_id, "</s>": eos_id, "<image>": image_token_id}
    if pad_id not in specials.values():
        specials["<pad>"] = pad_id
    specials["<unk>"] = _free_id(vocab_size, set(specials.values()))
    pad = "<pad>" if "<pad>" in specials else next(t for t, i in specials.items() if i == pad_id)
    fast = word_tokenizer(vocab_size, specials, ("<s>", None), pad=pad, unk="<unk>", max_length=max_length)
    fast.eos_token = "</s>"
    fast.add_special_tokens({"extra_special_tokens": ["<image>"]})
    return fast
