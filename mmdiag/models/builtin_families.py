"""The built-in family declarations (see :mod:`mmdiag.models.families`).

Each family: the ``model_type`` values it covers, its adapter factory (the one
signature ``(model, tokenizer, processor, info, device, dtype)``), the builder
of its ``random:`` presets (seeded random weights, offline tokenizer and image
processor) and what it needs from a checkpoint's preprocessing files.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPModel, LlavaForConditionalGeneration, SiglipModel, ViltModel

from mmdiag.models import dual_generic, lxmert, offline, visualbert
from mmdiag.models.clip import CLIPAdapter
from mmdiag.models.family import Family
from mmdiag.models.presets import PRESETS
from mmdiag.models.siglip import SiglipAdapter
from mmdiag.models.text import TextEncoderAdapter
from mmdiag.models.vilt import ViltAdapter
from mmdiag.models.vlm_families import CROSS_FAMILIES, VLM_FAMILIES
from mmdiag.models.weights import fresh_model


def _presets(family: str) -> tuple:
    return tuple(p for p in PRESETS.values() if p.family == family)


def _seeded(model_class: Any, preset: Any, seed: int) -> tuple[torch.nn.Module, Any]:
    config = preset.make_config()
    torch.manual_seed(seed)
    return fresh_model(model_class, config), config


def _clip_random(preset: Any, seed: int) -> tuple:
    model, config = _seeded(CLIPModel, preset, seed)
    tc = config.text_config
    tok = offline.clip_tokenizer(tc.vocab_size, tc.bos_token_id, tc.eos_token_id, tc.max_position_embeddings)
    return model, tok, offline.clip_image_processor(config.vision_config.image_size)


def _siglip_random(preset: Any, seed: int) -> tuple:
    model, config = _seeded(SiglipModel, preset, seed)
    tc = config.text_config
    tok = offline.siglip_tokenizer(tc.vocab_size, tc.pad_token_id, tc.eos_token_id, 2, tc.max_position_embeddings)
    return model, tok, offline.siglip_image_processor(config.vision_config.image_size)


def _vilt_random(preset: Any, seed: int) -> tuple:
    model, config = _seeded(ViltModel, preset, seed)
    tok = offline.bert_tokenizer(config.vocab_size, config.max_position_embeddings)
    return model, tok, offline.vilt_image_processor(config.image_size, config.patch_size)


def _llava_random(preset: Any, seed: int) -> tuple:
    model, config = _seeded(LlavaForConditionalGeneration, preset, seed)
    tc = config.text_config
    tok = offline.llama_tokenizer(tc.vocab_size, tc.bos_token_id, tc.eos_token_id, tc.pad_token_id,
                                  config.image_token_id, tc.max_position_embeddings)
    return model, tok, offline.clip_image_processor(config.vision_config.image_size)


def _text_random(preset: Any, seed: int) -> tuple:
    from transformers import BertModel

    model, config = _seeded(BertModel, preset, seed)
    return model, offline.bert_tokenizer(config.vocab_size, config.max_position_embeddings), None


def _text_adapter(model, tokenizer, processor, info, device, dtype):
    return TextEncoderAdapter(model, tokenizer, info, device, dtype)


def _region_adapter(module: Any):
    def factory(model, tokenizer, processor, info, device, dtype):
        return module.adapter_from_pretrained(model, tokenizer, info, device, dtype)
    factory.__doc__ = f"{module.__name__}.adapter_from_pretrained in the one factory signature"
    return factory


def _llava_adapter(model, tokenizer, processor, info, device, dtype):
    from mmdiag.models.llava import LlavaAdapter

    return LlavaAdapter(model, tokenizer, processor, info, device, dtype)


BUILTIN: tuple[Family, ...] = (
    Family("clip", ("clip",), CLIPAdapter, _clip_random, _presets("clip"),
           tokens="two towers: image = CLS + patches (pools CLS), text = BOS caption EOS (pools EOS)",
           matrix="tiny-clip"),
    Family("siglip", ("siglip",), SiglipAdapter, _siglip_random, _presets("siglip"),
           tokens="two towers: image = patches (attention-pooling head), text = caption EOS padded to the "
                  "context (pools the last position)", matrix="tiny-siglip"),
    Family("vilt", ("vilt",), ViltAdapter, _vilt_random, _presets("vilt"),
           tokens="one encoder: [CLS] caption [SEP] (text) then image CLS + patches (image), joint attention",
           matrix="tiny-vilt"),
    Family("llava", ("llava",), _llava_adapter, _llava_random, _presets("llava"),
           model_class=LlavaForConditionalGeneration, needs="processor",
           tokens="causal decoder: BOS, <image> x N (image), caption (text); pools the last caption token",
           matrix="tiny-llava"),
    Family("lxmert", ("lxmert",), _region_adapter(lxmert), lxmert.build_parts, _presets("lxmert"),
           needs="tokenizer", matrix="tiny-lxmert",
           tokens="two streams + cross-attention: [CLS] caption [SEP] (text), region features (image)"),
    Family("visualbert", ("visual_bert",), _region_adapter(visualbert), visualbert.build_parts,
           _presets("visualbert"), needs="tokenizer", matrix="tiny-visualbert",
           tokens="one encoder: [CLS] caption [SEP] (text) then region features (image), joint attention"),
    Family("text", ("bert", "roberta", "distilbert", "electra", "xlm-roberta", "deberta", "deberta-v2", "albert"),
           _text_adapter, _text_random, _presets("text"), needs="tokenizer", matrix="tiny-bert",
           tokens="text only: [CLS] caption [SEP] (pools [CLS])"),
    *VLM_FAMILIES,
    *CROSS_FAMILIES,
    # one generic dual encoder for HF models with get_image_features/get_text_features; no random: preset (the
    # family matrix of these types is tests/models/test_dual_generic.py, one saved tiny model per type)
    Family("dual", dual_generic.MODEL_TYPES, dual_generic.make_generic_dual, matrix="",
           tokens="two towers read through get_image_features/get_text_features(output_hidden_states): "
                  "SigLIP 2 (NaFlex patches with their mask, pools the last text position), ALIGN (CNN: each "
                  "stage's spatial mean, no patch grid), AltCLIP, Chinese-CLIP (text pools [CLS]), MetaCLIP 2 "
                  "(text pools EOS)"),
)
