"""The special token ids a model wraps raw token ids with (the ``noise`` control's captions).

The tokenizer is what produced the model's training captions, so its ids are
the truth; a model config's ``bos/eos/pad_token_id`` can be stale. The
published ``openai/clip-vit-base-patch32`` config.json says 0/2/1 while its
tokenizer uses 49406/49407: taking the config's ids made every noise caption
start with id 0 and pool (CLIP pools the largest id when the config's EOS is 2)
on whichever random id was largest. The config is read only for an id the
tokenizer lacks, and that is said in a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

#: the keys of ``data.special_ids`` in results.json (DESIGN.md §8, pinned)
SPECIAL_KEYS = ("bos", "eos", "pad")


@dataclass(frozen=True)
class SpecialIds:
    """``bos``/``eos`` (None: the model adds none) and ``pad``; ``from_config``: the names read from the config."""

    bos: Optional[int]
    eos: Optional[int]
    pad: int
    from_config: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The pinned ``data.special_ids`` block: ``{"bos", "eos", "pad"}``."""
        return {"bos": self.bos, "eos": self.eos, "pad": self.pad}

    def as_tuple(self) -> tuple[Optional[int], Optional[int], int]:
        return self.bos, self.eos, self.pad


def _as_id(value: Any) -> Optional[int]:
    if isinstance(value, (list, tuple)):  # some configs list several EOS ids; the first is the one appended
        value = value[0] if value else None
    return None if value is None else int(value)


def resolve_special_ids(tokenizer: Any, config: Any = None, default_pad: int = 0,
                        use: tuple[str, ...] = SPECIAL_KEYS, warn: bool = True) -> SpecialIds:
    """The (bos, eos, pad) ids: each from ``tokenizer`` (``<name>_token_id``), else from ``config``
    (``<name>_token_id``, with a :class:`~mmdiag.api.MMDiagWarning` naming it), else None (pad: ``default_pad``).

    ``use`` names the ids the model wraps a caption with; the others are None (SigLIP adds no BOS).
    """
    found: dict[str, Optional[int]] = {}
    from_config = []
    for name in SPECIAL_KEYS:
        if name not in use:
            found[name] = None
            continue
        value = _as_id(getattr(tokenizer, f"{name}_token_id", None)) if tokenizer is not None else None
        if value is None and config is not None:
            value = _as_id(getattr(config, f"{name}_token_id", None))
            if value is not None:
                from_config.append(name)
        found[name] = value
    if found["pad"] is None:
        found["pad"] = default_pad
    if from_config and warn:
        from mmdiag.api import MMDiagWarning

        names = ", ".join(f"{n}={found[n]}" for n in from_config)
        warnings.warn(MMDiagWarning(f"the tokenizer has no {'/'.join(from_config)} token; the noise control "
                                    f"takes {names} from the model config"), stacklevel=2)
    return SpecialIds(found["bos"], found["eos"], int(found["pad"]), tuple(from_config))


def template_special_ids(tokenizer: Any, config: Any = None, default_pad: int = 0) -> SpecialIds:
    """The ids the tokenizer's own template wraps a caption with (its output for an empty text: ``[BOS] [EOS]``,
    ``[CLS] [SEP]``, ``</s>`` alone...), so raw ids are wrapped the way real captions are; pad as
    :func:`resolve_special_ids` finds it. Falls back to :func:`resolve_special_ids` when the tokenizer
    cannot encode an empty text."""
    try:
        ids = [int(i) for i in tokenizer("", add_special_tokens=True)["input_ids"]]
    except Exception:  # noqa: BLE001  (a tokenizer that cannot encode "": read the named ids instead)
        return resolve_special_ids(tokenizer, config, default_pad)
    starts = {_as_id(getattr(tokenizer, name, None)) for name in ("bos_token_id", "cls_token_id")} - {None}
    bos = eos = None
    if len(ids) >= 2:
        bos, eos = ids[0], ids[-1]
    elif len(ids) == 1:
        bos, eos = (ids[0], None) if ids[0] in starts else (None, ids[0])
    pad = resolve_special_ids(tokenizer, config, default_pad, use=("pad",)).pad
    return SpecialIds(bos, eos, pad)
