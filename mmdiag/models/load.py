"""Turn a ``--mm-model`` spec into an adapter.

Accepted specs: ``random:PRESET`` (see :mod:`mmdiag.models.presets`),
``zoo:NAME`` (small trained models shipped in :mod:`mmdiag.zoo`), a local
directory written by ``save_pretrained``, or a Hugging Face hub id (which needs
network access or the local HF cache). Every failure a user can cause becomes a
:class:`~mmdiag.errors.SpecError` that lists what is accepted.
"""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

from mmdiag.errors import SpecError
from mmdiag.models import families as registry
from mmdiag.models import open_clip as open_clip_models
from mmdiag.models.base import ModelInfo, count_params, optional
from mmdiag.models.families import Family
from mmdiag.models.presets import Preset
from mmdiag.models.weights import fingerprint, fresh_model, quiet_transformers, unreadable_safetensors
from mmdiag.zoo import zoo_names, zoo_path

try:  # huggingface_hub's validation of a config's fields (transformers 5 configs are strict dataclasses)
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # an older huggingface_hub: configs are not validated
    class StrictDataclassError(Exception):  # type: ignore[no-redef]
        pass

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def accepted_specs() -> str:
    """A one-paragraph list of what ``--mm-model`` accepts, for error messages."""
    zoo = ", ".join(f"zoo:{n}" for n in zoo_names()) or "(none installed)"
    presets = ", ".join(f"random:{n}" for n in all_presets())
    return (f"accepted: {presets}; {zoo}; a local directory written by save_pretrained; "
            "or a Hugging Face hub id (needs network or the local HF cache)")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SpecError(f"--mm-device={name!r} is not a device (accepted: auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"--mm-device={name!r} but no CUDA device is available here (use cpu or auto)")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise SpecError(f"--mm-dtype={name!r} is not supported (accepted: fp32, bf16; fp16 overflows "
                        "with eager attention)") from None


def all_presets() -> dict[str, Preset]:
    """Every ``random:`` preset of every registered family."""
    return registry.presets_of(registry.families().values())


def family_of(model_type: str) -> Optional[str]:
    """The name of the registered family covering ``model_type`` (None if none does)."""
    family = registry.lookup(model_type)
    return None if family is None else family.name


def build_random(preset: Preset, seed: int) -> tuple[torch.nn.Module, Any, Any]:
    """Instantiate a preset with seeded random weights plus offline tokenizer/processor (its family's builder)."""
    family = registry.family_of_preset(preset.name) or registry.families().get(preset.family)
    if family is None or family.build_random is None:
        raise SpecError(f"preset {preset.name!r} belongs to no registered family with a random builder")
    family.check_requirements(f"random:{preset.name}")
    return family.build_random(preset, seed)


def load_pretrained(path_or_id: str, device_map: Optional[str] = None,
                    dtype: Optional[torch.dtype] = None, revision: Optional[str] = None
                    ) -> tuple[str, torch.nn.Module, Any, Any]:
    """Load model, tokenizer and image processor from a local dir or hub id (at ``revision``: a commit, tag or
    branch of the hub repository, so a release gate diagnoses the same weights every time).

    ``device_map="auto"`` lets accelerate place a model too large for one device.
    """
    pinned = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(path_or_id, trust_remote_code=False, **pinned)
    except StrictDataclassError as exc:
        raise SpecError(f"--mm-model={path_or_id!r}: its config.json has an invalid value "
                        f"({_all_lines(exc)}); write it with model.save_pretrained") from None
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise SpecError(f"--mm-model={path_or_id!r} needs remote code (its config has an auto_map), which "
                            "mmdiag never runs; load the model yourself and pass an adapter through an mm_model "
                            "fixture override (see the README, 'Bring your own model')") from None
        where = "directory" if Path(path_or_id).exists() else "model id"
        raise SpecError(f"--mm-model={path_or_id!r}: cannot load a model config from this {where} "
                        f"({_first_line(exc)}); {accepted_specs()}") from None
    if getattr(config, "auto_map", None):
        raise SpecError(f"--mm-model={path_or_id!r} needs remote code (its config has an auto_map), which mmdiag "
                        "never runs; load the model yourself and pass an adapter through an mm_model fixture "
                        "override (see the README, 'Bring your own model')")
    family = registry.family_for(config.model_type, path_or_id, config)
    family.check_requirements(path_or_id)
    placement: dict[str, Any] = {}
    if device_map is not None:
        if importlib.util.find_spec("accelerate") is None:
            raise SpecError("--mm-device-map=auto needs accelerate: pip install accelerate")
        placement = {"device_map": device_map, "dtype": dtype}
    local = Path(path_or_id).is_dir()
    if local:
        _check_weight_files(Path(path_or_id))
    try:
        with quiet_transformers():
            model, loading = _load_model(family, path_or_id, placement, pinned)
    except SafetensorError as exc:
        raise SpecError(f"--mm-model={path_or_id!r}: its model.safetensors is corrupt ({_first_line(exc)}); "
                        "write it again with model.save_pretrained") from None
    except (TypeError, RuntimeError, StrictDataclassError) as exc:
        raise SpecError(f"--mm-model={path_or_id!r}: cannot build the model its config.json describes "
                        f"({type(exc).__name__}: {_all_lines(exc)}); write it with model.save_pretrained") from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"--mm-model={path_or_id!r}: the config loaded but the weights, tokenizer or image "
                        f"processor did not ({_first_line(exc)}). A directory needs the files written by "
                        "model.save_pretrained, tokenizer.save_pretrained and processor.save_pretrained.") from None
    _check_loading(path_or_id, loading, local)
    if local:
        _check_preprocessing_files(Path(path_or_id), family)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=False, **pinned)
        processor = None
        if family.needs == "image_processor":
            processor = AutoImageProcessor.from_pretrained(path_or_id, trust_remote_code=False, **pinned)
        elif family.needs == "processor":
            from mmdiag.models.processors import load_processor

            processor = load_processor(path_or_id, tokenizer, pinned)
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001  (tokenizers raises a bare Exception on a malformed tokenizer.json)
        raise SpecError(f"--mm-model={path_or_id!r}: the model loaded but its tokenizer or image processor did not "
                        f"({type(exc).__name__}: {_first_line(exc)}); write them with tokenizer.save_pretrained(dir) "
                        "and processor.save_pretrained(dir)") from None
    return family.name, model, tokenizer, processor


def _load_model(family: Family, path_or_id: str, placement: dict, pinned: dict) -> tuple[torch.nn.Module, dict]:
    """The model and transformers' loading info (missing, unexpected and mismatched keys)."""
    # AutoModel gives the headless LlavaModel; the checkpoints are saved from the generation class, whose key
    # layout this loads without conversion. Mismatched shapes are reported by the loading info (and refused by
    # _check_loading) rather than by transformers' multi-line table and RuntimeError.
    cls = family.model_class or AutoModel
    return cls.from_pretrained(path_or_id, attn_implementation="eager", trust_remote_code=False,
                               output_loading_info=True, ignore_mismatched_sizes=True, **placement, **pinned)


def _check_loading(path_or_id: str, loading: dict, local: bool) -> None:
    """Refuse weights that do not fit the config: other tensor shapes, or tensors missing (they would be random)
    or, for a local directory, left over (the config describes a smaller model than the weights)."""
    mismatched = sorted(loading.get("mismatched_keys") or [], key=lambda entry: str(entry[0]))
    if mismatched:
        key, found, wanted = mismatched[0]
        raise SpecError(f"--mm-model={path_or_id!r}: the weights in model.safetensors do not fit config.json: "
                        f"{len(mismatched)} tensors have other shapes (e.g. {key}: {tuple(found)} in the weights, "
                        f"{tuple(wanted)} by the config); was config.json edited? Write both with "
                        "model.save_pretrained")
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        raise SpecError(f"--mm-model={path_or_id!r}: config.json describes {len(missing)} tensors that the weights "
                        f"lack (e.g. {missing[0]}), which would be random; was config.json edited? Write both with "
                        "model.save_pretrained")
    unexpected = sorted(loading.get("unexpected_keys") or [])
    if unexpected and local:
        raise SpecError(f"--mm-model={path_or_id!r}: the weights hold {len(unexpected)} tensors that config.json "
                        f"has no place for (e.g. {unexpected[0]}); was config.json edited? Write both with "
                        "model.save_pretrained")


#: what counts as a tokenizer in a directory (the files transformers' tokenizer classes read)
TOKENIZER_FILES = ("tokenizer.json, vocab.txt, vocab.json with merges.txt, a sentencepiece *.model, "
                   "or a tokenizer_config.json with its vocab")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def has_tokenizer(directory: Path) -> bool:
    if any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        return True
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return True
    if any(p.is_file() for p in directory.glob("*.model")):
        return True
    config = _json(directory / "tokenizer_config.json")
    return isinstance(config, dict) and bool(config.get("vocab"))


def has_image_processor(directory: Path) -> bool:
    if (directory / "preprocessor_config.json").is_file():
        return True
    nested = _json(directory / "processor_config.json")
    return isinstance(nested, dict) and isinstance(nested.get("image_processor"), dict)


def _check_weight_files(directory: Path) -> None:
    """Refuse a local model directory whose safetensors file is truncated or has a malformed header."""
    broken = unreadable_safetensors(directory)
    if broken is not None:
        file, why = broken
        raise SpecError(f"--mm-model={str(directory)!r}: {file} is corrupt or truncated ({why}); write it again "
                        "with model.save_pretrained(dir)")


def _check_preprocessing_files(directory: Path, family: Family) -> None:
    """Refuse a local model directory without the tokenizer or image processor its family needs (transformers
    would quietly build a placeholder tokenizer of a handful of tokens, and every caption would be unknown)."""
    missing = []
    if not has_tokenizer(directory):
        missing.append(f"a tokenizer (one of {TOKENIZER_FILES}; write it with tokenizer.save_pretrained(dir))")
    if family.needs != "tokenizer" and not has_image_processor(directory):
        missing.append("an image processor config (preprocessor_config.json; write it with "
                       "processor.save_pretrained(dir))")
    if missing:
        raise SpecError(f"--mm-model={str(directory)!r}: a {family.name} model directory needs "
                        + " and ".join(missing) + "; it has none")


def _all_lines(exc: BaseException) -> str:
    """The message of ``exc`` on one line."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def make_adapter(family: str, model: torch.nn.Module, tokenizer: Any, processor: Any, info: ModelInfo,
                 device: torch.device, dtype: torch.dtype):
    """Wrap a loaded model in its family's adapter (the family's one factory signature)."""
    declared = registry.families().get(family)
    if declared is None:
        from mmdiag.models.decoder_vlm import generic_family

        declared = generic_family(getattr(model.config, "model_type", family))
    return declared.adapter(model, tokenizer, processor, info, device, dtype)


def load_parts(spec: str, seed: int = 0, device_map: Optional[str] = None,
               dtype: Optional[torch.dtype] = None) -> tuple[str, torch.nn.Module, Any, Any, str]:
    """(family, model, tokenizer, processor, description) for any accepted spec."""
    if device_map is not None and spec.startswith(("random:", "zoo:")):
        raise SpecError(f"--mm-device-map applies to hub ids and local directories, not {spec!r}")
    if spec.startswith("random:"):
        name = spec[len("random:"):]
        preset = all_presets().get(name)
        if preset is None:
            raise SpecError(f"--mm-model={spec!r}: unknown preset {name!r}; {accepted_specs()}")
        model, tok, proc = build_random(preset, seed)
        return preset.family, model, tok, proc, f"random weights (seed {seed}), architecture of {preset.source}"
    if spec.startswith("zoo:"):
        path = zoo_path(spec[len("zoo:"):])
        if path is None:
            raise SpecError(f"--mm-model={spec!r}: no such zoo model; {accepted_specs()}")
        family, model, tok, proc = load_pretrained(str(path))
        return family, model, tok, proc, f"mmdiag zoo model {spec}"
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) and not path.exists():
        raise SpecError(f"--mm-model={spec!r}: no such directory; {accepted_specs()}")
    if path.exists() and not path.is_dir():
        raise SpecError(f"--mm-model={spec!r} is a file; give the directory written by save_pretrained")
    if path.is_dir() and not (path / "config.json").exists():
        raise SpecError(f"--mm-model={spec!r}: the directory has no config.json (write it with "
                        f"model.save_pretrained); {accepted_specs()}")
    if path.is_dir():
        family, model, tok, proc = load_pretrained(str(path), device_map, dtype)
        return family, model, tok, proc, "pretrained weights"
    hub_id, _, revision = spec.partition("@")  # ORG/NAME@REVISION pins a commit, tag or branch
    if "@" in spec and not (hub_id and revision):
        raise SpecError(f"--mm-model={spec!r}: a pinned hub id is ORG/NAME@REVISION (a commit, tag or branch)")
    family, model, tok, proc = load_pretrained(hub_id, device_map, dtype, revision or None)
    return family, model, tok, proc, f"pretrained weights at revision {revision}" if revision else "pretrained weights"


def load_adapter(spec: str, device: str = "auto", dtype: str = "fp32", seed: int = 0,
                 device_map: Optional[str] = None):
    """Load any accepted ``--mm-model`` spec and wrap it in its adapter."""
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    if spec.startswith(open_clip_models.PREFIX):  # open_clip models have no HF config: their own loader
        if device_map is not None:
            raise SpecError(f"--mm-device-map applies to hub ids and local directories, not {spec!r}")
        return open_clip_models.load_open_clip(spec, torch_device, torch_dtype, seed)
    family, model, tok, proc, description = load_parts(spec, seed, device_map, torch_dtype)
    info = ModelInfo(spec=spec, family=family, n_params=count_params(model), fingerprint=fingerprint(model),
                     extra={"weights": description, "model_type": model.config.model_type})
    return make_adapter(family, model, tok, proc, info, torch_device, torch_dtype)


def save_preset(spec: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a ``random:`` preset (model, tokenizer, image processor) with ``save_pretrained``.

    The result loads through the same code path as a hub id, which is how the
    tests exercise hub loading offline.
    """
    family, model, tok, proc, _ = load_parts(spec, seed)
    out = Path(directory)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if proc is not None:
        proc.save_pretrained(out)
    return out


def random_init_like(adapter: Any, seed: int):
    """The same architecture as ``adapter``'s model with seeded random weights (the paper's control).

    Returns None for adapters without a Hugging Face ``model``; an adapter with its own ``random_init(seed)``
    (open_clip's, whose models have no config) rebuilds itself.
    """
    rebuild = getattr(adapter, "random_init", None)
    if callable(rebuild):
        return rebuild(seed)
    model = optional(adapter, "model")
    if model is None or not hasattr(model, "config"):
        return None
    torch.manual_seed(seed)
    fresh = fresh_model(type(model), model.config)
    clone = copy.copy(adapter)
    clone.model = fresh.eval().to(device=adapter.device, dtype=adapter.dtype)
    clone.truncated_captions = 0
    return clone
