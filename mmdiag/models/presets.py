"""``random:PRESET``: exact published architecture configs with seeded random weights.

The full-size presets copy the configs of the published checkpoints (values from
their ``config.json`` on the Hugging Face hub) so that a random-init control has
exactly the architecture of the real model; the ``tiny-*`` presets are small
versions of the same classes for fast tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import (BertConfig, CLIPConfig, LlavaConfig, LxmertConfig, PretrainedConfig, SiglipConfig,
                          ViltConfig, VisualBertConfig)


@dataclass(frozen=True)
class Preset:
    """A named architecture: its family, config factory and the source it copies."""

    name: str
    family: str
    make_config: Callable[[], PretrainedConfig]
    source: str


def _clip(text: dict, vision: dict, projection_dim: int) -> CLIPConfig:
    text = {"vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1, **text}
    vision = {"hidden_act": "quick_gelu", "image_size": 224, **vision}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim,
                      logit_scale_init_value=2.6592)


def _siglip(text: dict, vision: dict) -> SiglipConfig:
    text = {"vocab_size": 32000, "max_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh",
            "pad_token_id": 1, "eos_token_id": 1, "bos_token_id": None, **text}
    vision = {"hidden_act": "gelu_pytorch_tanh", **vision}
    return SiglipConfig(text_config=text, vision_config=vision)


def _bert(**kw) -> BertConfig:
    base = {"vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 0}
    return BertConfig(**{**base, **kw})


def _vilt(**kw) -> ViltConfig:
    """dandelin/vilt-b32-mlm's config.json, except ``max_image_length``: -1 (keep every patch)
    instead of the pre-training 200 (random patch sub-sampling). The ViLT adapter embeds
    patches with -1 anyway (see :mod:`mmdiag.models.vilt`), so this only affects direct use."""
    base = {"vocab_size": 30522, "type_vocab_size": 2, "modality_type_vocab_size": 2,
            "max_position_embeddings": 40, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-12, "image_size": 384,
            "patch_size": 32, "num_channels": 3, "qkv_bias": True, "max_image_length": -1}
    return ViltConfig(**{**base, **kw})


def _llava(vision: dict, text: dict, image_token_id: int) -> LlavaConfig:
    """A LLaVA-1.5-style config: CLIP vision tower, Llama decoder, 2-layer GELU projector,
    features from the second-to-last vision layer with CLS dropped ("default")."""
    vision = {"model_type": "clip_vision_model", "hidden_act": "quick_gelu", **vision}
    text = {"model_type": "llama", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "hidden_act": "silu", "rms_norm_eps": 1e-5, **text}
    side = vision["image_size"] // vision["patch_size"]
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       image_seq_length=side * side, vision_feature_select_strategy="default",
                       vision_feature_layer=-2, projector_hidden_act="gelu")


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("clip-vit-base-patch32", "clip", lambda: _clip(
        {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
         "patch_size": 32}, 512), "openai/clip-vit-base-patch32"),
    Preset("clip-vit-base-patch16", "clip", lambda: _clip(
        {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
         "patch_size": 16}, 512), "openai/clip-vit-base-patch16"),
    Preset("clip-vit-large-patch14", "clip", lambda: _clip(
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
         "patch_size": 14}, 768), "openai/clip-vit-large-patch14"),
    Preset("tiny-clip", "clip", lambda: _clip(
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4},
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
         "patch_size": 8, "image_size": 32}, 16), "a 3-layer CLIP for tests"),
    Preset("siglip-base-patch16-224", "siglip", lambda: _siglip(
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
         "patch_size": 16, "image_size": 224}), "google/siglip-base-patch16-224"),
    Preset("tiny-siglip", "siglip", lambda: _siglip(
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4},
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
         "patch_size": 8, "image_size": 32}), "a 3-layer SigLIP for tests"),
    Preset("bert-base-uncased", "text", lambda: _bert(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        "google-bert/bert-base-uncased"),
    Preset("all-MiniLM-L6-v2", "text", lambda: _bert(
        hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12),
        "sentence-transformers/all-MiniLM-L6-v2 (the model of the EWT probe measurements, docs/performance.md)"),
    Preset("tiny-bert", "text", lambda: _bert(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
        "a 3-layer BERT for tests"),
    Preset("vilt-b32", "vilt", lambda: _vilt(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        "dandelin/vilt-b32-mlm"),
    Preset("tiny-vilt", "vilt", lambda: _vilt(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=64, patch_size=16), "a 3-layer ViLT for tests"),
    Preset("tiny-llava", "llava", lambda: _llava(
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "image_size": 32, "patch_size": 8},
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 128}, image_token_id=511),
        "a LLaVA-1.5-style model (2-layer CLIP tower, 3-layer Llama) for tests"),
    # the 7B-class decoder VLM of the GPU bench (random init, bf16): llava-hf/llava-1.5-7b-hf's shapes, a
    # CLIP ViT-L/14-336 tower and a Llama-2-7B decoder (7.06B parameters)
    Preset("llava-1.5-7b", "llava", lambda: _llava(
        {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
         "image_size": 336, "patch_size": 14, "projection_dim": 768},
        {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
         "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096}, image_token_id=32000),
        "llava-hf/llava-1.5-7b-hf"),
]}



def _lxmert_config(**kw):
    """unc-nlp/lxmert-base-uncased's config.json (``LxmertConfig``'s defaults are that checkpoint's values)."""
    base = {"vocab_size": 30522, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
            "l_layers": 9, "x_layers": 5, "r_layers": 5, "visual_feat_dim": 2048, "visual_pos_dim": 4,
            "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "num_qa_labels": 9500,
            "num_object_labels": 1600, "num_attr_labels": 400}
    return LxmertConfig(**{**base, **kw})


PRESETS.update({p.name: p for p in [
    Preset("lxmert-base", "lxmert", lambda: _lxmert_config(), "unc-nlp/lxmert-base-uncased"),
    Preset("tiny-lxmert", "lxmert", lambda: _lxmert_config(
        hidden_size=32, num_attention_heads=4, intermediate_size=64, l_layers=2, x_layers=2, r_layers=1,
        visual_feat_dim=64), "a small LXMERT (2 language, 1 region, 2 cross layers) for tests"),
]})


def _visualbert_config(**kw):
    """uclanlp/visualbert-vqa-coco-pre's architecture (BERT-base, 2048-d region features).

    ``pad_token_id`` is BERT's ``[PAD]`` (0); the hub config carries
    ``VisualBertConfig``'s default 1, which only zero-initialises one row of the
    word embeddings (``[unused0]`` in BERT's vocabulary, but the word "a" in
    mmdiag's offline tokenizer) and is overwritten by the checkpoint's weights.
    """
    base = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "visual_embedding_dim": 2048, "bypass_transformer": False,
            "special_visual_initialize": True, "pad_token_id": 0}
    return VisualBertConfig(**{**base, **kw})


PRESETS.update({p.name: p for p in [
    Preset("visualbert-vqa-coco-pre", "visualbert", lambda: _visualbert_config(),
           "uclanlp/visualbert-vqa-coco-pre"),
    Preset("tiny-visualbert", "visualbert", lambda: _visualbert_config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        visual_embedding_dim=64), "a 3-layer VisualBERT for tests"),
]})
