"""Captions as an open_clip model's tokenizer makes them, with the word ids mmdiag's probes need.

:class:`OpenClipTokens` wraps open_clip's own BPE ``SimpleTokenizer`` (CLIP, LAION, DataComp, DFN, MetaCLIP, EVA,
PE); :class:`OpenClipHFTokens` wraps its ``HFTokenizer`` / ``SigLipTokenizer`` (a Hugging Face tokenizer padded
to the context length: SigLIP, SigLIP 2). :func:`make_tokens` picks one for ``open_clip.get_tokenizer``'s result.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.errors import SpecError
from mmdiag.models.dual import TextInputs, caption_words, tokenize_captions


class OpenClipTokens:
    """open_clip's BPE tokenizer (``SimpleTokenizer``) with the word ids mmdiag's probes need.

    A caption is ``[sot] words [eot]`` zero-padded to the context length, as open_clip's tokenizer makes
    it: each word is encoded alone, which gives the same ids since its BPE never crosses whitespace.
    """

    def __init__(self, inner: Any, context_length: int) -> None:
        self.inner = inner
        self.context_length = int(context_length)
        self.bos_token_id = int(inner.sot_token_id)
        self.eos_token_id = int(inner.eot_token_id)
        self.pad_token_id = 0
        self.all_special_ids = [int(i) for i in getattr(inner, "all_special_ids", [self.bos_token_id,
                                                                                 self.eos_token_id])]

    def __len__(self) -> int:
        return int(self.inner.vocab_size)

    def encode(self, samples: Sequence[Sample]) -> TextInputs:
        """Ids, mask and word ids of ``samples`` (raw ``token_ids``, the noise control, wrapped with sot/eot)."""
        if all(s.token_ids is not None for s in samples):
            return tokenize_captions(None, samples, self.context_length, pad_to_max=True, bos_id=self.bos_token_id,
                                     eos_id=self.eos_token_id, pad_id=self.pad_token_id)
        room = self.context_length - 2
        ids = torch.zeros(len(samples), self.context_length, dtype=torch.long)
        word_ids = torch.full_like(ids, -1)
        mask = torch.zeros_like(ids)
        truncated = 0
        for row, sample in enumerate(samples):
            tokens, words = [], []
            for w, word in enumerate(caption_words(sample)):
                pieces = [int(t) for t in self.inner.encode(word)]
                tokens += pieces
                words += [w] * len(pieces)
            truncated += len(tokens) > room
            tokens, words = tokens[:room], words[:room]
            full = [self.bos_token_id, *tokens, self.eos_token_id]
            ids[row, :len(full)] = torch.tensor(full)
            word_ids[row, 1:1 + len(words)] = torch.tensor(words, dtype=torch.long)
            mask[row, :len(full)] = 1
        return TextInputs(ids, mask, word_ids, truncated)


class OpenClipHFTokens:
    """open_clip's ``HFTokenizer`` (or ``SigLipTokenizer``): the Hugging Face tokenizer inside, each word cleaned
    as open_clip cleans the caption (``clean``: ``whitespace``, ``lower``, ``canonicalize``), padded to the
    context length with truncation, the SEP id zeroed where ``strip_sep_token`` says so, as its ``__call__``."""

    def __init__(self, wrapper: Any, context_length: int) -> None:
        self.wrapper = wrapper
        self.inner = wrapper.tokenizer
        self.context_length = int(context_length)
        self.clean = getattr(wrapper, "clean_fn", None) or (lambda text: text)
        self.strip_sep = bool(getattr(wrapper, "strip_sep_token", False))
        self.bos_token_id = self.inner.bos_token_id
        self.eos_token_id = self.inner.eos_token_id if self.inner.eos_token_id is not None else self.inner.sep_token_id
        self.pad_token_id = int(self.inner.pad_token_id or 0)
        self.all_special_ids = [int(i) for i in self.inner.all_special_ids]

    def __len__(self) -> int:
        return len(self.inner)

    def encode(self, samples: Sequence[Sample]) -> TextInputs:
        if all(s.token_ids is not None for s in samples):
            return tokenize_captions(None, samples, self.context_length, pad_to_max=True, bos_id=self.bos_token_id,
                                     eos_id=self.eos_token_id, pad_id=self.pad_token_id)
        cleaned = [[self.clean(w) for w in caption_words(s)] for s in samples]
        # a word the cleaning empties (canonicalize drops punctuation) has no tokens, as in the cleaned caption
        words = [[w for w in row if w] or [""] for row in cleaned]
        keep = [[i for i, w in enumerate(row) if w] for row in cleaned]
        text = tokenize_captions(self.inner, [Sample(uid=s.uid, image=None, caption="", words=tuple(w))
                                              for s, w in zip(samples, words)],
                                 self.context_length, pad_to_max=True)
        for row, kept in enumerate(keep):  # word ids back in the caption's own word numbering
            if kept:
                ids = text.word_ids[row]
                ids[ids >= 0] = torch.tensor(kept)[ids[ids >= 0]]
        if self.strip_sep and self.inner.sep_token_id is not None:
            sep = text.input_ids == self.inner.sep_token_id
            text.input_ids[sep] = 0
        return text


def make_tokens(tokenizer: Any, context: int, spec: str) -> OpenClipTokens | OpenClipHFTokens:
    """The caption encoder for ``open_clip.get_tokenizer``'s result (a usage error for modes mmdiag cannot mirror)."""
    if getattr(tokenizer, "tokenizer", None) is not None:
        if getattr(tokenizer, "tokenizer_mode", "") == "clips":
            raise SpecError(f"--mm-model={spec!r}: this model's tokenizer runs in open_clip's 'clips' mode, whose "
                            "special-token layout mmdiag does not mirror")
        return OpenClipHFTokens(tokenizer, context)
    if not hasattr(tokenizer, "sot_token_id"):
        raise SpecError(f"--mm-model={spec!r}: this model uses a {type(tokenizer).__name__} tokenizer, which mmdiag "
                        "does not read (it reads open_clip's SimpleTokenizer, HFTokenizer and SigLipTokenizer)")
    return OpenClipTokens(tokenizer, context)
