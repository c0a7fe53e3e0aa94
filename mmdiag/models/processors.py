"""A decoder VLM's processor, assembled from its parts where ``AutoProcessor`` cannot build it.

transformers builds a video processor inside the processors of Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, InternVL and SmolVLM, which needs
torchvision; without it ``AutoProcessor.from_pretrained`` fails on a directory
that is fine. mmdiag only needs the image side, so it assembles the model's
processor class from the image processor, the tokenizer, the chat template and
the processor's own settings (``processor_config.json``), leaving the video
processor out, and says so (``assembled_note``; shown once in the run header).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

#: the processor attributes left out of an assembled processor
LEFT_OUT = ("video_processor",)


def assemble(processor_class: type, image_processor: Any, tokenizer: Any, chat_template: Optional[str] = None,
             **settings: Any) -> Any:
    """``processor_class`` built from its image processor and tokenizer, without a video processor."""
    attributes = [a for a in processor_class.get_attributes() if a not in LEFT_OUT]
    def to_dict(self: Any) -> dict:  # saved as the model's own processor class, which loads it where it can
        return {**processor_class.to_dict(self), "processor_class": processor_class.__name__}

    assembled = type(f"Assembled{processor_class.__name__}", (processor_class,),
                     {"get_attributes": classmethod(lambda cls: list(attributes)), "to_dict": to_dict,
                      "__doc__": f"{processor_class.__name__} without {', '.join(LEFT_OUT)} (mmdiag)"})
    accepted = set(inspect.signature(processor_class.__init__).parameters)
    kwargs = {k: v for k, v in settings.items() if k in accepted and k not in (*LEFT_OUT, "image_processor",
                                                                               "tokenizer", "chat_template")}
    if "video_processor" in accepted:
        kwargs["video_processor"] = None
    processor = assembled(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                          **kwargs)
    processor.assembled_note = (f"{processor_class.__name__} assembled from its image processor, tokenizer and "
                                "chat template (AutoProcessor needs torchvision for its video processor)")
    return processor


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def chat_template_of(directory: Path, tokenizer: Any) -> Optional[str]:
    """The chat template saved next to the model (``chat_template.jinja``/``.json``), else the tokenizer's."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = _read_json(directory / "chat_template.json").get("chat_template")
    return template or getattr(tokenizer, "chat_template", None)


def processor_class_of(model_type: str) -> Optional[type]:
    """The processor class transformers maps ``model_type`` to (None if none, or if it cannot be imported)."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not name:
        return None
    try:
        return getattr(transformers, name)
    except (ImportError, AttributeError):
        return None


def load_processor(path_or_id: str, tokenizer: Any, pinned: dict) -> Any:
    """The model's processor: ``AutoProcessor``, else assembled from its parts, else the image processor alone
    (a checkpoint written with an image processor and a tokenizer only)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path_or_id, trust_remote_code=False, **pinned)
        if hasattr(processor, "image_processor"):
            return processor
    except (ImportError, ValueError, TypeError, AttributeError, OSError, KeyError):
        pass
    image_processor = AutoImageProcessor.from_pretrained(path_or_id, trust_remote_code=False, **pinned)
    directory = Path(path_or_id)
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(path_or_id, local_files_only=True, **pinned))
    model_type = AutoConfig.from_pretrained(path_or_id, trust_remote_code=False, **pinned).model_type
    processor_class = processor_class_of(model_type)
    if processor_class is None:
        return image_processor
    settings = _read_json(directory / "processor_config.json")
    for key in ("processor_class", "image_processor", "tokenizer", "chat_template", *LEFT_OUT):
        settings.pop(key, None)
    try:
        return assemble(processor_class, image_processor, tokenizer, chat_template_of(directory, tokenizer),
                        **settings)
    except (ValueError, TypeError, AttributeError, KeyError):  # a processor that needs more than these parts
        return image_processor
