"""The adapter protocol: how mmdiag talks to any vision-language model.

An adapter turns a list of :class:`~mmdiag.data.types.Sample` into model inputs
(:meth:`Adapter.prepare`) and runs them (:meth:`Adapter.forward`), returning a
:class:`Trace` in mmdiag's standard form. Built-in adapters exist per model
family (``clip``, ``siglip``, ``text``); a user can pass any object that
follows this protocol by overriding the ``mm_model`` fixture.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

import torch

from mmdiag.data.types import Sample
#: token groups of an attention stream (``AttentionStream.groups``), re-exported from :mod:`mmdiag.tokens`
from mmdiag.tokens import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT

__all__ = ["Adapter", "AttentionStream", "ModelAdapter", "ModelInfo", "PhraseMasks", "Trace", "count_params",
           "optional", "OPTIONAL_MEMBERS", "REQUIRED_MEMBERS", "IMAGE", "TEXT", "MODALITIES",
           "GROUP_PAD", "GROUP_SPECIAL", "GROUP_TEXT", "GROUP_IMAGE"]

IMAGE = "image"
TEXT = "text"
MODALITIES = (IMAGE, TEXT)



@dataclass
class Trace:
    """Everything mmdiag reads from one forward pass over one batch.

    For each modality ``m`` present:

    - ``hidden[m]``: per hidden-state entry (entry 0 = embedding output, entry
      k = output of block k) a ``(B, T, D)`` tensor.
    - ``mask[m]``: ``(B, T)`` bool, True for real (non-padding) tokens.
    - ``pool_index[m]``: ``(B,)`` long, the token the model itself pools (CLS
      for CLIP vision, EOS for CLIP text, last token for SigLIP text), or
      ``None`` when the model pools by attention/mean (then the mean of
      ``content[m]`` tokens is used).
    - ``content[m]``: ``(B, T)`` bool, the content tokens (image patches, caption
      sub-words) that mean-pooling and word/region pooling use.
    - ``embeds[m]``: ``(B, P)`` final (projected) embedding, if the model has one.

    ``word_ids``: ``(B, T_text)`` long, the caption word each text token belongs
    to (-1 for special/padding tokens). ``patch_grid``: ``(rows, cols)`` of the
    image patch tokens, which start at index ``patch_offset``.

    ``attention[s]`` (only when the adapter's ``output_attentions`` is True): the
    :class:`AttentionStream` of stream ``s``: ``"joint"`` for single-stream and
    decoder models whose text and image tokens share one sequence,
    ``"image"``/``"text"`` for the towers of a dual encoder (or LXMERT's
    single-modality encoders), ``"cross"`` for LXMERT's cross-attention.
    """

    hidden: dict[str, Sequence[torch.Tensor]]
    mask: dict[str, torch.Tensor]
    pool_index: dict[str, Optional[torch.Tensor]]
    content: dict[str, torch.Tensor]
    embeds: dict[str, torch.Tensor] = field(default_factory=dict)
    word_ids: Optional[torch.Tensor] = None
    patch_grid: Optional[tuple[int, int]] = None
    patch_offset: int = 0
    image_size: Optional[tuple[int, int]] = None
    logit_scale: Optional[float] = None
    #: per attention stream (``"joint"``, ``"image"``, ``"text"``, ``"cross"``, ...): its maps and token groups
    attention: dict[str, "AttentionStream"] = field(default_factory=dict)


@dataclass
class PhraseMasks:
    """Where the phrases are in one stream's token sequence of length ``T``.

    ``queries`` ``(B, P, T)`` bool: the text tokens of phrase ``p`` (all its
    words' sub-word tokens); ``keys`` ``(B, P, T)`` bool: the image keys inside
    phrase ``p``'s box; ``image_keys`` ``(B, T)`` bool: every image key (the set
    the rows are renormalised over). Phrases beyond a sample's count have empty
    rows. ``keys`` is intersected with ``image_keys``.
    """

    queries: torch.Tensor
    keys: torch.Tensor
    image_keys: torch.Tensor

    def to(self, device: torch.device) -> "PhraseMasks":
        return PhraseMasks(self.queries.to(device), self.keys.to(device), self.image_keys.to(device))


@dataclass
class AttentionStream:
    """One attention stream of a batch: a sequence of ``T`` tokens attending to each other.

    ``maps``: one ``(B, H, T, T)`` attention map per block (rows are queries,
    each row a distribution over the keys). ``groups``: ``(B, T)`` long, the
    token group of each position (``GROUP_PAD`` -1, ``GROUP_SPECIAL`` 0,
    ``GROUP_TEXT`` 1, ``GROUP_IMAGE`` 2). ``causal``: whether a query sees only
    keys at positions ``<=`` its own (decoders). ``grounding``: where each
    phrase's words and its own box sit in this stream (adapters that know it),
    else None.
    """

    maps: Sequence[torch.Tensor]
    groups: torch.Tensor
    causal: bool = False
    grounding: Optional["PhraseMasks"] = None


class _ProtocolWithDefaults(type(Protocol)):
    """``isinstance(x, Adapter)`` asks for the required members only: the optional ones have defaults."""

    def __instancecheck__(cls, instance: Any) -> bool:
        if cls is not Adapter:  # a protocol derived from Adapter keeps the standard check
            return super().__instancecheck__(instance)
        return all(hasattr(instance, name) for name in REQUIRED_MEMBERS)


@runtime_checkable
class Adapter(Protocol, metaclass=_ProtocolWithDefaults):
    """What mmdiag needs from a model. See the README's "Bring your own model".

    ``family``, ``modalities``, :meth:`layer_counts`, :meth:`prepare` and
    :meth:`forward` are required; the members below them are optional, with the
    defaults declared here (read them with :func:`optional`).
    """

    #: family name shown in reports (``clip``, ``siglip``, ``text``, or your own)
    family: str
    #: modalities the model embeds, e.g. ``("image", "text")`` or ``("text",)``
    modalities: tuple[str, ...]

    # Optional members: an adapter may leave them out; read them with :func:`optional`, which falls
    # back to the default declared here.
    #: set by mmdiag before the forward pass when attention checks are collected
    output_attentions: bool = False
    #: text and image tokens share one attention stream ("joint"): single-stream and decoder models
    joint_attention: bool = False
    #: the Hugging Face tokenizer (its vocabulary sizes the noise control's token ids)
    tokenizer: Any = None
    #: the Hugging Face image processor (its resize/crop places phrase boxes on the patch grid)
    image_processor: Any = None
    #: where the model came from and its size (reports; its fingerprint keys the activation cache)
    info: Optional["ModelInfo"] = None
    #: a fingerprint of the weights for the activation cache when there is no ``info``
    fingerprint: Optional[str] = None
    #: the device the model runs on
    device: Optional[torch.device] = None
    #: the Hugging Face model (the random-init control rebuilds its architecture)
    model: Optional[torch.nn.Module] = None
    #: captions cut at the model's context length so far (reported in results.json)
    truncated_captions: int = 0
    #: region-feature models: the extractor that featurises each sample's boxes
    extractor: Any = None
    #: region-feature models: ``region_masks(samples, trace)``, per sample the image tokens of each scene-tree node
    region_masks: Optional[Callable[..., list]] = None

    def layer_counts(self) -> dict[str, int]:
        """Number of hidden-state entries per modality (blocks + 1)."""

    def prepare(self, samples: Sequence[Sample]) -> Any:
        """Tokenise/preprocess a batch of samples into model inputs."""

    def forward(self, batch: Any) -> Trace:
        """Run the model (no grad) and return the batch's :class:`Trace`."""


#: the optional members of :class:`Adapter` and their defaults (the annotated names given a value there)
OPTIONAL_MEMBERS: dict[str, Any] = {name: vars(Adapter)[name] for name in Adapter.__annotations__
                                    if name in vars(Adapter)}
#: the members every adapter has: the annotated names without a default, and the methods
REQUIRED_MEMBERS: tuple[str, ...] = (
    *(name for name in Adapter.__annotations__ if name not in OPTIONAL_MEMBERS),
    *(name for name, value in vars(Adapter).items() if callable(value) and not name.startswith("_")))


def optional(adapter: Any, name: str) -> Any:
    """``adapter``'s optional member ``name``, or the default the :class:`Adapter` protocol declares for it."""
    try:
        default = OPTIONAL_MEMBERS[name]
    except KeyError:
        raise AttributeError(f"{name!r} is not an optional member of the Adapter protocol (those are "
                             f"{', '.join(OPTIONAL_MEMBERS)}); read a required member directly") from None
    return getattr(adapter, name, default)


class ModelAdapter:
    """State shared by the built-in adapters: the model in eval mode on its device and dtype,
    its tokenizer and image processor, and the counters mmdiag reads after a pass."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, info: "ModelInfo", device: torch.device,
                 dtype: torch.dtype, image_processor: Any = None) -> None:
        if getattr(model, "hf_device_map", None):  # spread over devices by accelerate: leave it where it is
            self.model = model.eval()
            device = next(model.parameters()).device
        else:
            self.model = model.eval().to(device=device, dtype=dtype)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.info = info
        self.device = device
        self.dtype = dtype
        #: captions cut at the model's context length (reported in results.json)
        self.truncated_captions = 0
        #: set by mmdiag before the forward pass when attention checks are collected
        self.output_attentions = False


@dataclass
class ModelInfo:
    """Descriptive facts for reports: where the model came from and its size."""

    spec: str
    family: str
    n_params: int = 0
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))
