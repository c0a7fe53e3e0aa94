"""One model family's declaration (:class:`Family`); the registry is :mod:`mmdiag.models.families`.

Adapters and preset modules import this module only, so the registry (which
imports them) is no import cycle.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from mmdiag.errors import SpecError

#: ``factory(model, tokenizer, processor, info, device, dtype) -> adapter``; ``processor`` is what ``needs`` asks
#: for (None, an image processor, or a full multimodal processor)
AdapterFactory = Callable[[torch.nn.Module, Any, Any, Any, torch.device, torch.dtype], Any]
#: ``builder(preset, seed) -> (model, tokenizer, processor)``: seeded random weights and offline preprocessing
RandomBuilder = Callable[[Any, int], tuple]

#: what a family needs from the preprocessing files: nothing beyond a tokenizer, an image processor, or the full
#: processor (image processor + tokenizer + chat template; assembled from its parts when AutoProcessor fails)
NEEDS = ("tokenizer", "image_processor", "processor")


@dataclass(frozen=True)
class Family:
    """One model family: what it covers and how mmdiag builds, loads and wraps it.

    ``model_types``: the ``config.model_type`` values it covers. ``adapter``: the
    :data:`AdapterFactory`. ``build_random``: the :data:`RandomBuilder` of its
    ``presets`` (``random:NAME`` specs, :class:`~mmdiag.models.presets.Preset`).
    ``model_class``: what ``from_pretrained`` loads a checkpoint with (default
    ``transformers.AutoModel``). ``needs``: one of :data:`NEEDS`. ``tokens``: how
    the adapter maps tokens to modalities (docs/adapters.md). ``matrix``: the
    preset the family matrix test saves and loads (default: its first preset; ``""``: none,
    for a family whose models ``save_pretrained`` cannot write). ``requires``: ``(module, what needs it)``
    pairs beyond transformers (Mistral 3's ``PixtralProcessor`` needs torchvision, SmolVLM's processor
    num2words); a missing one makes loading the family a usage error naming it.
    """

    name: str
    model_types: tuple[str, ...]
    adapter: AdapterFactory
    build_random: Optional[RandomBuilder] = None
    presets: tuple = ()
    model_class: Any = None
    needs: str = "image_processor"
    tokens: str = ""
    matrix: Optional[str] = None
    requires: tuple[tuple[str, str], ...] = ()
    #: where the declaration came from (``builtin``, ``entry point NAME``, ``register_family``)
    origin: str = field(default="builtin", compare=False)

    def __post_init__(self) -> None:
        if self.needs not in NEEDS:
            raise SpecError(f"family {self.name!r}: needs={self.needs!r} is not one of {', '.join(NEEDS)}")
        if not self.model_types:
            raise SpecError(f"family {self.name!r} covers no model_type")
        if self.presets and self.build_random is None:
            raise SpecError(f"family {self.name!r} declares presets but no build_random")

    def missing_requirements(self) -> list[str]:
        """The ``requires`` modules that do not import here, each as ``"MODULE (for WHAT: why)"``."""
        missing = []
        for module, what in self.requires:
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001  (a torchvision built for another torch raises OSError)
                why = "not installed" if isinstance(exc, ModuleNotFoundError) else \
                    f"does not import: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
                missing.append(f"{module} (for {what}; {why})")
        return missing

    def check_requirements(self, spec: str) -> None:
        """Raise a :class:`SpecError` naming the ``requires`` modules that do not import (``pip install ...``)."""
        missing = self.missing_requirements()
        if missing:
            names = " ".join(entry.split(" ", 1)[0] for entry in missing)
            raise SpecError(f"--mm-model={spec!r}: the {self.name} family needs {', '.join(missing)}: "
                            f"pip install {names} (a torchvision built for your torch)"
                            if "torchvision" in names else
                            f"--mm-model={spec!r}: the {self.name} family needs {', '.join(missing)}: "
                            f"pip install {names}")

    @property
    def matrix_preset(self) -> Optional[str]:
        """The ``random:`` preset of the family matrix test (None: the family has no preset)."""
        if self.matrix is not None:
            return self.matrix or None  # "": the family has no preset save_pretrained can write
        return self.presets[0].name if self.presets else None
