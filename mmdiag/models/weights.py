"""Model weights: a random-weight build of a model class, and a fingerprint of a model's weights.

:func:`fresh_model` gives the seeded random-init models of ``random:PRESET``
specs and of the random-init control; :func:`fingerprint` keys the activation
cache and identifies the model in reports.
"""
from __future__ import annotations

import hashlib
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from transformers.modeling_utils import PreTrainedModel

__all__ = ["fingerprint", "fresh_model", "quiet_transformers", "unreadable_safetensors"]


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the config and a strided sample of every parameter (cheap, stable)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy()
        digest.update(name.encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


@contextmanager
def _deferred_init() -> Iterator[None]:
    """While building a model: torch's default init functions fill NaN instead of drawing random
    numbers, and ``PreTrainedModel.init_weights`` (called by ``post_init``) does nothing."""
    from transformers import initialization as hf_init  # a transformers 5 module: fresh_model falls back without it

    def fill_nan(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            return tensor.fill_(float("nan"))

    saved: list[tuple[Any, str, Any]] = [(PreTrainedModel, "init_weights", PreTrainedModel.init_weights)]
    for module_name in hf_init.TORCH_MODULES_TO_PATCH:
        module = sys.modules.get(module_name)
        for name in hf_init.TORCH_INIT_FUNCTIONS:
            if module is not None and hasattr(module, name):
                saved.append((module, name, getattr(module, name)))
    try:
        for owner, name, _ in saved:
            setattr(owner, name, (lambda self: None) if owner is PreTrainedModel else fill_nan)
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def fresh_model(model_class: Any, config: Any) -> torch.nn.Module:
    """``model_class`` built from ``config`` with random weights (eager attention), initialised once.

    ``_from_config`` runs torch's default init of every layer and then the
    model's ``_init_weights``, which overwrites it: the first pass is a third of
    the build time of a random ViT-B/32 CLIP on 2 cores. Here torch's default
    init only marks the parameters (NaN) and ``init_weights`` runs once, as
    ``from_pretrained`` does for missing weights; values set in the
    constructor (e.g. CLIP's ``logit_scale``) stay. Should a model's
    ``_init_weights`` leave a marked parameter alone, it is built the ordinary
    way instead.
    """
    try:
        rng = torch.get_rng_state()
        with _deferred_init():
            model = model_class._from_config(config, attn_implementation="eager")
        model.init_weights()
        with torch.no_grad():
            if not any(bool(torch.isnan(p).any()) for p in model.parameters()):
                return model
        torch.set_rng_state(rng)
    except (ImportError, AttributeError):  # another transformers layout
        pass
    return model_class._from_config(config, attn_implementation="eager")


def unreadable_safetensors(directory: Path) -> Optional[tuple[Path, str]]:
    """The first ``*.safetensors`` file of ``directory`` whose header safetensors cannot read (a truncated file,
    a garbage or non-JSON header, a header whose offsets run past the end of the file), and why; None if all read.

    Reading a header is cheap (no tensor data is read); safetensors raises its own ``SafetensorError``, which is
    neither an ``OSError`` nor a ``ValueError``.
    """
    from safetensors import SafetensorError, safe_open

    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            lines = str(exc).strip().splitlines()
            return file, lines[0] if lines else type(exc).__name__
    return None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers logs errors only (its multi-line load report is replaced by mmdiag's own one-line refusal), and
    draws no "Loading weights" bar: the load runs before pytest's session header, which the bar would precede."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
