"""``--mm-model=open_clip:...``: models of the open_clip library (LAION, DataComp, DFN, MetaCLIP...).

Accepted (DESIGN.md §8):

- ``open_clip:ARCH``: the architecture with seeded random weights (``open_clip.list_models()``);
- ``open_clip:ARCH/PRETRAINED_TAG``: a published checkpoint (``open_clip.list_pretrained()``), read from the
  local cache (or downloaded where the network is reachable);
- ``open_clip:hf-hub:ORG/NAME``: an open_clip model on the Hugging Face hub (config and weights);
- ``open_clip:ARCH@/path/to/weights``: the architecture with a local checkpoint file.

open_clip is an optional extra (``pip install 'mmdiag[open_clip]'``, which brings ``open-clip-torch``); without
it, or when it cannot be imported (open_clip needs torchvision), the spec is a usage error saying why.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from mmdiag.errors import SpecError
from mmdiag.models.base import ModelInfo, count_params
from mmdiag.models.open_clip_tokens import make_tokens
from mmdiag.models.open_clip_towers import OpenClipAdapter

PREFIX = "open_clip:"
FORMS = ("open_clip:ARCH (random weights), open_clip:ARCH/PRETRAINED_TAG, open_clip:hf-hub:ORG/NAME, "
         "open_clip:ARCH@/path/to/weights")
INSTALL = "pip install 'mmdiag[open_clip]' (open-clip-torch, which needs torchvision built for your torch)"


@dataclass(frozen=True)
class OpenClipSpec:
    """A parsed ``open_clip:`` spec: exactly one of ``pretrained``, ``hf_hub``, ``weights`` or none (random)."""

    arch: str
    pretrained: Optional[str] = None
    hf_hub: Optional[str] = None
    weights: Optional[Path] = None

    @property
    def model_name(self) -> str:
        """The name ``open_clip.create_model_and_transforms`` takes."""
        return f"hf-hub:{self.hf_hub}" if self.hf_hub else self.arch

    def describe(self, seed: int) -> str:
        if self.hf_hub:
            return f"open_clip hf-hub:{self.hf_hub}"
        if self.pretrained:
            return f"open_clip {self.arch} pretrained={self.pretrained}"
        if self.weights:
            return f"open_clip {self.arch} with weights {self.weights}"
        return f"random weights (seed {seed}), open_clip architecture {self.arch}"


def parse_spec(spec: str) -> OpenClipSpec:
    """Parse ``open_clip:...`` (see the module docstring); a malformed spec is a :class:`SpecError`."""
    if not spec.startswith(PREFIX):
        raise SpecError(f"--mm-model={spec!r} is not an open_clip spec; accepted: {FORMS}")
    rest = spec[len(PREFIX):]
    bad = f"--mm-model={spec!r}: accepted: {FORMS}"
    if rest.startswith("hf-hub:"):
        repo = rest[len("hf-hub:"):]
        org, _, name = repo.partition("/")
        if not org or not name or "/" in name or "@" in repo:
            raise SpecError(f"{bad} (hf-hub: takes ORG/NAME)")
        return OpenClipSpec(arch=repo, hf_hub=repo)
    if "@" in rest:
        arch, _, path = rest.partition("@")
        if not arch or not path or "/" in arch:
            raise SpecError(f"{bad} (ARCH@PATH takes an architecture and a checkpoint file)")
        weights = Path(path).expanduser()
        if not weights.is_file():
            raise SpecError(f"--mm-model={spec!r}: no checkpoint file {str(weights)!r}")
        return OpenClipSpec(arch=arch, weights=weights)
    arch, slash, tag = rest.partition("/")
    if not arch or (slash and (not tag or "/" in tag)):
        raise SpecError(bad)
    return OpenClipSpec(arch=arch, pretrained=tag or None)


def installed() -> bool:
    """Whether the ``open_clip`` package is installed (whether or not it imports)."""
    return importlib.util.find_spec("open_clip") is not None


def import_open_clip() -> Any:
    """The ``open_clip`` module, or a :class:`SpecError` saying how to install it or why it does not import."""
    if not installed():
        raise SpecError(f"--mm-model=open_clip:... needs the open_clip library, which is not installed: {INSTALL}")
    try:
        return importlib.import_module("open_clip")
    except Exception as exc:  # noqa: BLE001  (a broken torchvision raises RuntimeError/OSError at import)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"--mm-model=open_clip:... : open_clip is installed but does not import "
                        f"({type(exc).__name__}: {first}); it needs torchvision built for this torch "
                        f"({torch.__version__}): {INSTALL}") from None


def _check_known(lib: Any, parsed: OpenClipSpec) -> None:
    """Refuse an unknown architecture or pretrained tag before anything is built, listing what exists."""
    if parsed.hf_hub:
        return
    models = list(lib.list_models())
    if parsed.arch not in models:
        shown = ", ".join(models[:30]) + (" ..." if len(models) > 30 else "")
        raise SpecError(f"--mm-model=open_clip:{parsed.arch}: unknown open_clip architecture; open_clip has: {shown}")
    if parsed.pretrained:
        tags = list(lib.list_pretrained_tags_by_model(parsed.arch))
        if parsed.pretrained not in tags:
            raise SpecError(f"--mm-model=open_clip:{parsed.arch}/{parsed.pretrained}: unknown pretrained tag; "
                            f"{parsed.arch} has: {', '.join(tags) or '(none: use open_clip:ARCH@/path/to/weights)'}")


def weights_fingerprint(model: torch.nn.Module, name: str) -> str:
    """A short hash of the architecture name and a strided sample of every parameter (open_clip models have no
    config, so the name stands for it), as :func:`mmdiag.models.weights.fingerprint` hashes a HF model."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(name.encode())
    for key, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        digest.update(key.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def load_open_clip(spec: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> OpenClipAdapter:
    """Build the adapter of an ``open_clip:`` spec (random init seeded with ``seed``)."""
    parsed = parse_spec(spec)
    lib = import_open_clip()
    _check_known(lib, parsed)
    pretrained = str(parsed.weights) if parsed.weights else parsed.pretrained
    torch.manual_seed(seed)
    try:
        model, _, preprocess = lib.create_model_and_transforms(parsed.model_name, pretrained=pretrained)
        tokenizer = lib.get_tokenizer(parsed.model_name)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = "is not in the local cache and could not be downloaded" if parsed.pretrained or parsed.hf_hub \
            else "could not be loaded"
        raise SpecError(f"--mm-model={spec!r}: the model {where} ({type(exc).__name__}: {first})") from None
    context = int(getattr(tokenizer, "context_length", None) or getattr(model, "context_length", 77))
    tokens = make_tokens(tokenizer, context, spec)
    info = ModelInfo(spec=spec, family="open_clip", n_params=count_params(model),
                     fingerprint=weights_fingerprint(model, parsed.model_name),
                     extra={"weights": parsed.describe(seed), "model_type": f"open_clip:{parsed.arch}"})
    try:
        return OpenClipAdapter(model, tokens, preprocess, info, device, dtype,
                               rebuild=lambda: lib.create_model(parsed.model_name, load_weights=False))
    except SpecError as exc:  # a tower mmdiag cannot read (ResNet, ConvNeXt, a Hugging Face text encoder, CoCa)
        raise SpecError(f"--mm-model={spec!r}: {exc}") from None
