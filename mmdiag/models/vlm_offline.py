"""Offline parts of tiny decoder VLMs: a tokenizer with the model's special tokens, its processor, a chat template.

Every decoder VLM's processor reads named special tokens from its tokenizer
(``tok.image_token``, ``tok.boi_token``, ``<|vision_start|>``...). :func:`vlm_tokenizer`
builds mmdiag's offline WordPiece tokenizer (:mod:`mmdiag.models.offline`) with those
tokens at the top of the vocabulary, so a tiny config can name their ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from mmdiag.models import offline

#: a minimal chat template in the shape of the published ones: turns framed by role markers, image placeholders
#: where the message has an image; {image} and the markers are filled per family
CHAT_TEMPLATE = ("{{ bos }}{% for m in messages %}{{ start }}{{ m['role'] }}\n{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}{{ image }}{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                 "{{ end }}\n{% endfor %}")


def chat_template(image: str, start: str = "<|im_start|>", end: str = "<|im_end|>", bos: str = "") -> str:
    """:data:`CHAT_TEMPLATE` with its placeholders written in (a plain Jinja template the processor renders)."""
    out = CHAT_TEMPLATE
    for key, value in (("bos", bos), ("start", start), ("end", end), ("image", image)):
        out = out.replace("{{ " + key + " }}", value.replace("'", "\\'"))
    return out


@dataclass(frozen=True)
class TokenSpec:
    """The special tokens of a tiny VLM tokenizer: ``named`` (attribute -> token) and ``plain`` extra tokens;
    ``bos``/``eos``/``pad`` are token strings (``bos`` None: the tokenizer adds no BOS)."""

    named: tuple[tuple[str, str], ...] = ()
    plain: tuple[str, ...] = ()
    bos: Optional[str] = "<s>"
    eos: str = "</s>"
    pad: str = "<pad>"


def vlm_tokenizer(vocab_size: int, spec: TokenSpec, max_length: int) -> Any:
    """The offline tokenizer with ``spec``'s tokens at the top of the vocabulary (ids ``vocab_size - 1`` down)."""
    tokens = [t for t in (spec.bos, spec.eos, spec.pad, "<unk>") if t]
    tokens += [t for _, t in spec.named] + list(spec.plain)
    ordered = list(dict.fromkeys(tokens))
    specials = {token: vocab_size - 1 - i for i, token in enumerate(ordered)}
    tok = offline.word_tokenizer(vocab_size, specials, (spec.bos, None), pad=spec.pad, unk="<unk>",
                                 max_length=max_length, named=dict(spec.named))
    tok.eos_token = spec.eos
    # every token registered as an added special token of the backend too, so that tokenizer.json keeps it whole
    extra = [t for t in ordered if t not in (spec.bos, spec.eos, spec.pad, "<unk>")]
    if extra:
        tok.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)
    return tok


def token_id(tok: Any, token: str) -> int:
    return int(tok.convert_tokens_to_ids(token))
