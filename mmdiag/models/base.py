"""The adapter protocol: how mmdiag talks to any vision-language model.

An adapter turns a list of :class:`~mmdiag.data.types.Sample` into model inputs
(:meth:`Adapter.prepare`) and runs them (:meth:`Adapter.forward`), returning a
:class:`Trace` in mmdiag's standard form. Built-in adapters exist per model
family (``clip``, ``siglip``, ``text``); a user can pass any object that
follows this protocol by overriding the ``mm_model`` fixture.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import torch

from mmdiag.data.types import Sample
#: token groups of an attention stream (``Trace.groups``), re-exported from :mod:`mmdiag.tokens`
from mmdiag.tokens import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT

__all__ = ["Adapter", "ModelAdapter", "ModelInfo", "PhraseMasks", "Trace", "count_params", "IMAGE", "TEXT",
           "MODALITIES", "GROUP_PAD", "GROUP_SPECIAL", "GROUP_TEXT", "GROUP_IMAGE"]

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

    Attention (only when the adapter's ``output_attentions`` is True): for each
    stream (``"joint"`` for single-stream/decoder models whose text and image
    tokens share one sequence, or ``"image"``/``"text"`` for the towers of a
    dual encoder) ``attentions[s]`` holds one ``(B, H, T, T)`` map per block,
    ``groups[s]`` the ``(B, T)`` token groups (``GROUP_PAD`` -1, ``GROUP_SPECIAL``
    0, ``GROUP_TEXT`` 1, ``GROUP_IMAGE`` 2) and ``causal[s]`` whether it is causal.
    ``grounding[s]`` (adapters that know where phrases and boxes sit in stream
    ``s``): its :class:`PhraseMasks`.
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
    attentions: dict[str, Sequence[torch.Tensor]] = field(default_factory=dict)
    groups: dict[str, torch.Tensor] = field(default_factory=dict)
    causal: dict[str, bool] = field(default_factory=dict)
    #: per attention stream, where each phrase's words and its own box sit
    grounding: dict[str, "PhraseMasks"] = field(default_factory=dict)


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


@runtime_checkable
class Adapter(Protocol):
    """What mmdiag needs from a model. See the README's "Bring your own model"."""

    #: family name shown in reports (``clip``, ``siglip``, ``text``, or your own)
    family: str
    #: modalities the model embeds, e.g. ``("image", "text")`` or ``("text",)``
    modalities: tuple[str, ...]
    #: set by mmdiag before the forward pass when attention checks are collected
    output_attentions: bool

    def layer_counts(self) -> dict[str, int]:
        """Number of hidden-state entries per modality (blocks + 1)."""

    def prepare(self, samples: Sequence[Sample]) -> Any:
        """Tokenise/preprocess a batch of samples into model inputs."""

    def forward(self, batch: Any) -> Trace:
        """Run the model (no grad) and return the batch's :class:`Trace`."""


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
