"""A user's in-memory model for :func:`mmdiag.diagnose`: a spec string, an adapter, or an HF model + processor.

An HF model object is wrapped in its family's built-in adapter (the one ``--mm-model=DIR`` would use), so
the checks see the same traces as for a saved copy of it. The adapter puts the model in eval mode with
eager attention (attention checks need the weights), on ``device`` (default: where it already is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from mmdiag.errors import SpecError


@dataclass
class ModelChoice:
    """What diagnose() runs: a ``--mm-model`` spec, or an adapter object the session is handed."""

    spec: Optional[str] = None
    adapter: Any = None


def is_adapter(obj: Any) -> bool:
    """An object following the adapter protocol (``docs/adapters.md``)."""
    return all(callable(getattr(obj, name, None)) for name in ("layer_counts", "prepare", "forward"))


def _parts(model_or_spec: Any, processor: Any, tokenizer: Any) -> tuple[Any, Any, Any]:
    if isinstance(model_or_spec, tuple):
        if len(model_or_spec) != 2 or processor is not None:
            raise SpecError("mmdiag.diagnose((model, processor)): give a pair, or the model and processor=")
        model_or_spec, processor = model_or_spec
    return model_or_spec, processor, tokenizer


def _dtype_name(model: Any) -> str:
    import torch

    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def _device_name(model: Any) -> str:
    device = next((p.device for p in model.parameters()), None)
    return "cpu" if device is None else str(device)


def hf_adapter(model: Any, processor: Any, tokenizer: Any = None, device: Optional[str] = None,
               dtype: Optional[str] = None) -> Any:
    """The built-in adapter around an HF ``PreTrainedModel`` and its processor (or tokenizer + image processor)."""
    from mmdiag.models import families as registry
    from mmdiag.models.base import ModelInfo, count_params
    from mmdiag.models.load import make_adapter, resolve_device, resolve_dtype
    from mmdiag.models.weights import fingerprint

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    declared = registry.lookup(model_type) if model_type else None
    if declared is None:
        raise SpecError(f"mmdiag.diagnose(): {type(model).__name__} (model_type {model_type!r}) has no built-in "
                        f"adapter (families: {registry.supported()}); wrap it in an adapter object "
                        "(docs/adapters.md) and pass that instead")
    family = declared.name
    tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
    if declared.needs == "tokenizer":  # text encoders, region-feature models: no pixels
        tokenizer = tokenizer if tokenizer is not None else processor
        image_processor = None
    elif declared.needs == "processor":  # decoder VLMs build their prompts with the full processor
        image_processor = processor
    else:
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None and processor is not None and tokenizer is not None:
            image_processor = processor  # an image processor given beside tokenizer=
    if tokenizer is None or (declared.needs != "tokenizer" and image_processor is None):
        raise SpecError(f"mmdiag.diagnose(): a {family} model needs its processor: diagnose(model, "
                        "processor=AutoProcessor.from_pretrained(...)) or tokenizer= and processor=IMAGE_PROCESSOR")
    if getattr(config, "_attn_implementation", "eager") != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")  # the attention checks read the weights sdpa does not return
    info = ModelInfo(spec=f"{type(model).__name__} (in memory)", family=family, n_params=count_params(model),
                     fingerprint=fingerprint(model), extra={"weights": "in-memory model", "model_type": model_type})
    return make_adapter(family, model, tokenizer, image_processor, info,
                        resolve_device(device or _device_name(model)), resolve_dtype(dtype or _dtype_name(model)))


def choose_model(model_or_spec: Any, processor: Any = None, tokenizer: Any = None, device: Optional[str] = None,
                 dtype: Optional[str] = None) -> ModelChoice:
    """A spec string passes through to ``--mm-model``; an adapter is used as it is; an HF model is wrapped."""
    model, processor, tokenizer = _parts(model_or_spec, processor, tokenizer)
    if isinstance(model, str):
        if processor is not None or tokenizer is not None:
            raise SpecError("mmdiag.diagnose(): processor=/tokenizer= go with a model object, not a spec string "
                            f"({model!r} loads its own)")
        if not model.strip():
            raise SpecError("mmdiag.diagnose(''): the model spec is empty; accepted: random:PRESET, zoo:NAME, "
                            "a save_pretrained directory, a hub id, or a model object")
        return ModelChoice(spec=model)
    if is_adapter(model):
        return ModelChoice(adapter=model)
    if hasattr(model, "config") and hasattr(model, "parameters"):
        return ModelChoice(adapter=hf_adapter(model, processor, tokenizer, device, dtype))
    raise SpecError(f"mmdiag.diagnose(): cannot diagnose a {type(model).__name__}; give a spec string "
                    "(random:PRESET, zoo:NAME, a directory or a hub id), an HF model with processor=, or an adapter")


__all__ = ["ModelChoice", "choose_model", "hf_adapter", "is_adapter"]
