"""Decoder-VLM families: one declaration per architecture, all run by the generic adapter.

Each family's ``random:tiny-*`` preset is a small config of the published
architecture (2 decoder layers, a 1-2 layer vision tower) with the model's own
processor class built offline (:mod:`mmdiag.models.vlm_offline`), so a saved
directory loads through the same path as the hub checkpoint.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import transformers
from transformers import AutoModelForImageTextToText
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from mmdiag.models.decoder_vlm import DecoderVLMAdapter
from mmdiag.models.family import Family
from mmdiag.models.presets import Preset
from mmdiag.models.processors import assemble
from mmdiag.models.vlm_offline import TokenSpec, chat_template, token_id, vlm_tokenizer
from mmdiag.models.weights import fresh_model

VOCAB = 512
#: PaliGemma's processor adds its 1024 location and 128 segmentation tokens to the tokenizer
PALIGEMMA_VOCAB = 1344
#: a small Llama-style decoder (text_config fields common to the decoders below)
TEXT = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}
CLIP_VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
SIGLIP_VISION = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
IM = ("<|im_start|>", "<|im_end|>")


def model_class(model_type: str) -> type:
    """The ``AutoModelForImageTextToText`` class of ``model_type``."""
    return getattr(transformers, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type])


def _config(model_type: str, **kwargs: Any) -> Any:
    return transformers.AutoConfig.for_model(model_type, **kwargs)


# -- one builder per architecture: (config, tokenizer, processor) ------------------------------------------------
def _qwen_vl(model_type: str, image_processor_name: str, vision: dict, text: dict) -> Callable[[], tuple]:
    def build() -> tuple:
        spec = TokenSpec(named=(("image_token", "<|image_pad|>"), ("video_token", "<|video_pad|>"),
                                ("vision_bos_token", "<|vision_start|>"), ("vision_eos_token", "<|vision_end|>")),
                         plain=IM, bos=None, eos="<|endoftext|>", pad="<|endoftext|>")
        tok = vlm_tokenizer(VOCAB, spec, 512)
        tok.chat_template = chat_template("<|vision_start|><|image_pad|><|vision_end|>", *IM)
        names = (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                 ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))
        ids = {k: token_id(tok, t) for k, t in names}
        config = _config(model_type, text_config={**TEXT, **text, "eos_token_id": tok.eos_token_id,
                                                   "pad_token_id": tok.pad_token_id, "bos_token_id": None},
                         vision_config=vision, **ids)
        patch, merge = vision["patch_size"], vision["spatial_merge_size"]
        image_processor = getattr(transformers, image_processor_name)(
            patch_size=patch, merge_size=merge, temporal_patch_size=vision.get("temporal_patch_size", 2),
            size={"shortest_edge": (patch * merge) ** 2, "longest_edge": (patch * merge * 3) ** 2})
        processor_class = getattr(transformers, transformers.models.auto.processing_auto.PROCESSOR_MAPPING_NAMES[
            model_type])
        return config, tok, assemble(processor_class, image_processor, tok, tok.chat_template)
    return build


def _llava_next() -> tuple:
    spec = TokenSpec(named=(("image_token", "<image>"),), plain=IM)
    tok = vlm_tokenizer(VOCAB, spec, 512)
    tok.chat_template = chat_template("<image>\n", *IM)
    config = _config("llava_next", vision_config=CLIP_VISION,
                     text_config={"model_type": "llama", **TEXT, "bos_token_id": tok.bos_token_id,
                                  "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
                     image_token_index=tok.image_token_id, image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]],
                     vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=16)
    image_processor = transformers.LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=config.image_grid_pinpoints)
    processor = transformers.LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                                vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                                chat_template=tok.chat_template)
    return config, tok, processor


def _gemma3() -> tuple:
    spec = TokenSpec(named=(("image_token", "<image_soft_token>"), ("boi_token", "<start_of_image>"),
                            ("eoi_token", "<end_of_image>")), plain=("<start_of_turn>", "<end_of_turn>"),
                     bos="<bos>", eos="<eos>", pad="<pad>")
    tok = vlm_tokenizer(VOCAB, spec, 512)
    tok.chat_template = chat_template("<start_of_image>", "<start_of_turn>", "<end_of_turn>", bos="<bos>")
    text = {"model_type": "gemma3_text", **TEXT, "head_dim": 16, "sliding_window": 64,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = _config("gemma3", text_config=text, vision_config=SIGLIP_VISION, mm_tokens_per_image=4,
                     boi_token_index=token_id(tok, "<start_of_image>"), eoi_token_index=token_id(tok, "<end_of_image>"),
                     image_token_index=tok.image_token_id)
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = transformers.Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=4,
                                             chat_template=tok.chat_template)
    return config, tok, processor


def _paligemma() -> tuple:
    from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS

    # its location and segmentation tokens in the vocabulary already (as PaliGemma's tokenizer has them), so the
    # processor adds none
    spec = TokenSpec(named=(("image_token", "<image>"),), plain=tuple(EXTRA_TOKENS), bos="<bos>", eos="<eos>",
                     pad="<pad>")
    tok = vlm_tokenizer(PALIGEMMA_VOCAB, spec, 512)
    text = {"model_type": "gemma", **TEXT, "vocab_size": PALIGEMMA_VOCAB, "head_dim": 16,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = _config("paligemma", text_config=text, vision_config={**SIGLIP_VISION, "projection_dim": 64},
                     image_token_index=tok.image_token_id, projection_dim=64, hidden_size=64)
    image_processor = transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16
    processor = transformers.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    return config, tok, processor


def _idefics(model_type: str) -> Callable[[], tuple]:
    def build() -> tuple:
        turn = ("<|im_start|>",) if model_type == "smolvlm" else ()  # SmolVLM's turns start with it
        spec = TokenSpec(named=(("image_token", "<image>"), ("fake_image_token", "<fake_token_around_image>"),
                                ("global_image_token", "<global-img>"),
                                ("end_of_utterance_token", "<end_of_utterance>")),
                         plain=tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)) + turn)
        tok = vlm_tokenizer(VOCAB, spec, 512)
        tok.chat_template = chat_template("<image>", "<|im_start|>", "<end_of_utterance>")
        text = {"model_type": "llama", **TEXT, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id}
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "image_size": 32, "patch_size": 8}
        config = _config(model_type, text_config=text, vision_config=vision, scale_factor=2,
                         image_token_id=tok.image_token_id)
        image_processor = getattr(transformers, "Idefics3ImageProcessorPil" if model_type == "idefics3"
                                  else "SmolVLMImageProcessorPil")(
            size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
        processor_class = transformers.Idefics3Processor if model_type == "idefics3" else transformers.SmolVLMProcessor
        processor = assemble(processor_class, image_processor, tok, tok.chat_template, image_seq_len=4)
        return config, tok, processor
    return build


def _mistral3() -> tuple:
    """A small Mistral 3 (Mistral Small 3.1): a 2-layer Pixtral tower (2-D rotary positions) over 8-pixel patches,
    2x2 patch merging, a Mistral decoder; ``PixtralProcessor`` writes ``[IMG]`` per merged patch, ``[IMG_BREAK]``
    after each row and ``[IMG_END]`` last. Needs torchvision (transformers requires it for that processor)."""
    spec = TokenSpec(named=(("image_token", "[IMG]"), ("image_break_token", "[IMG_BREAK]"),
                            ("image_end_token", "[IMG_END]")), plain=("[INST]", "[/INST]"))
    tok = vlm_tokenizer(VOCAB, spec, 512)
    tok.chat_template = chat_template("[IMG]", "[INST]", "[/INST]", bos="<s>")
    text = {"model_type": "mistral", **TEXT, "head_dim": 16, "sliding_window": None,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    vision = {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
    config = _config("mistral3", text_config=text, vision_config=vision, image_token_index=tok.image_token_id,
                     spatial_merge_size=2, vision_feature_layer=-1)
    image_processor = transformers.PixtralImageProcessor(size={"longest_edge": 32}, patch_size=8)
    processor = transformers.PixtralProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                              spatial_merge_size=2, chat_template=tok.chat_template)
    return config, tok, processor


QWEN2_VISION = {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "patch_size": 8,
                "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
QWEN_ROPE = {"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}

QWEN25_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": 64,
                 "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32,
                 "fullatt_block_indexes": [1], "in_channels": 3}
QWEN3_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "out_hidden_size": 64,
                "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 64,
                "deepstack_visual_indexes": [0], "in_channels": 3}
QWEN3_TEXT = {"head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": [2, 3, 3], "mrope_interleaved": True}}


def _internvl() -> tuple:
    spec = TokenSpec(named=(("context_image_token", "<IMG_CONTEXT>"), ("start_image_token", "<img>"),
                            ("end_image_token", "</img>"), ("video_token", "<video>")),
                     plain=IM, bos=None, eos="<|im_end|>", pad="<|endoftext|>")
    tok = vlm_tokenizer(VOCAB, spec, 512)
    tok.chat_template = chat_template("<IMG_CONTEXT>\n", *IM)
    text = {"model_type": "qwen2", **TEXT, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": [32, 32], "patch_size": [8, 8]}
    config = _config("internvl", text_config=text, vision_config=vision, image_token_id=token_id(tok, "<IMG_CONTEXT>"),
                     image_seq_length=4, downsample_ratio=0.5)
    image_processor = transformers.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True,
                                                           min_patches=1, max_patches=4)
    processor = assemble(transformers.InternVLProcessor, image_processor, tok, tok.chat_template, image_seq_length=4)
    return config, tok, processor


def _llava_onevision() -> tuple:
    spec = TokenSpec(named=(("image_token", "<image>"), ("video_token", "<video>")), plain=IM, bos=None,
                     eos="<|im_end|>", pad="<|endoftext|>")
    tok = vlm_tokenizer(VOCAB, spec, 512)
    tok.chat_template = chat_template("<image>\n", *IM)
    text = {"model_type": "qwen2", **TEXT, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    config = _config("llava_onevision", text_config=text, vision_config=SIGLIP_VISION,
                     image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
                     image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1,
                     vision_aspect_ratio="anyres_max_9")
    image_processor = transformers.LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32},
                                                                  image_grid_pinpoints=pinpoints)
    processor = assemble(transformers.LlavaOnevisionProcessor, image_processor, tok, tok.chat_template,
                         num_image_tokens=16, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
    return config, tok, processor


#: model_type -> (builder, what the tiny preset copies)
TINY: dict[str, tuple[Callable[[], tuple], str]] = {
    "qwen2_vl": (_qwen_vl("qwen2_vl", "Qwen2VLImageProcessorPil", QWEN2_VISION, QWEN_ROPE),
                 "Qwen2-VL (M-RoPE, dynamic resolution)"),
    "qwen2_5_vl": (_qwen_vl("qwen2_5_vl", "Qwen2VLImageProcessorPil", QWEN25_VISION, QWEN_ROPE),
                   "Qwen2.5-VL (M-RoPE, window attention in the vision tower)"),
    "qwen3_vl": (_qwen_vl("qwen3_vl", "Qwen2VLImageProcessorPil", QWEN3_VISION, QWEN3_TEXT),
                 "Qwen3-VL (interleaved M-RoPE, DeepStack)"),
    "internvl": (_internvl, "InternVL (dynamic tiles, pixel shuffle)"),
    "llava_onevision": (_llava_onevision, "LLaVA-OneVision (any-resolution tiles, SigLIP tower)"),
    "llava_next": (_llava_next, "LLaVA-NeXT (any-resolution tiles)"),
    "gemma3": (_gemma3, "Gemma 3 (SigLIP tower, pooled soft tokens)"),
    "paligemma": (_paligemma, "PaliGemma (image prefix, Gemma decoder)"),
    "idefics3": (_idefics("idefics3"), "Idefics3 (image splitting, pixel shuffle)"),
    "smolvlm": (_idefics("smolvlm"), "SmolVLM (Idefics3's image splitting, pixel shuffle)"),
    "mistral3": (_mistral3, "Mistral 3 (Pixtral tower, 2x2 patch merging)"),
}
#: what a family needs beyond transformers, as Family.requires
REQUIRES = {"mistral3": (("torchvision", "PixtralProcessor"),),
            "smolvlm": (("num2words", "SmolVLMProcessor"),)}


def _random(model_type: str) -> Callable[[Preset, int], tuple]:
    def build(preset: Preset, seed: int) -> tuple:
        config, tok, processor = TINY[model_type][0]()
        torch.manual_seed(seed)
        return fresh_model(model_class(model_type), config), tok, processor
    return build


def _adapter(family: str, placeholder: Optional[str] = None, causal: bool = True) -> Callable[..., DecoderVLMAdapter]:
    def factory(model, tokenizer, processor, info, device, dtype):
        return DecoderVLMAdapter(model, tokenizer, processor, info, device, dtype, family=family,
                                 placeholder=placeholder, causal=causal)
    return factory


#: processors that write the image tokens themselves in front of a prompt without a placeholder
PREPENDS_IMAGE = {"paligemma": ""}
#: prefix-LM decoders: the prompt (image, BOS, caption) is one bidirectional prefix (token_type_ids 0)
BIDIRECTIONAL_PROMPT = {"paligemma"}


def _family(model_type: str, name: str, tokens: str) -> Family:
    builder, source = TINY[model_type]
    preset = Preset(f"tiny-{name}", name, lambda b=builder: b()[0], f"a small {source} for tests")
    factory = _adapter(name, PREPENDS_IMAGE.get(model_type), model_type not in BIDIRECTIONAL_PROMPT)
    return Family(name, (model_type,), factory, _random(model_type), (preset,),
                  model_class=AutoModelForImageTextToText, needs="processor", tokens=tokens,
                  requires=REQUIRES.get(model_type, ()))


DECODER_TOKENS = "causal decoder: prompt tokens (special), image-token positions from the ids (image), caption (text)"

VLM_FAMILIES: tuple[Family, ...] = tuple(
    _family(model_type, model_type.replace("_", "-"), DECODER_TOKENS + extra) for model_type, extra in (
        ("qwen2_vl", "; <|vision_start|>/<|vision_end|> special; 3-D rotary positions from image_grid_thw"),
        ("qwen2_5_vl", "; <|vision_start|>/<|vision_end|> special; 3-D rotary positions from image_grid_thw"),
        ("qwen3_vl", "; <|vision_start|>/<|vision_end|> special; interleaved 3-D rotary positions"),
        ("internvl", "; <img>/</img> special, <IMG_CONTEXT> per tile feature (image)"),
        ("llava_onevision", "; base image + tiles and row newlines, the count per sample from the processor"),
        ("llava_next", "; base image + tiles and row newlines, the count per sample from the processor"),
        ("gemma3", "; <start_of_image>/<end_of_image> special; image tokens attend bidirectionally"),
        ("paligemma", "; image prefix then BOS and the caption, one bidirectional prefix (stream not causal)"),
        ("idefics3", "; per crop <fake_token_around_image><row_i_col_j> (special) and image tokens"),
        ("smolvlm", "; per crop <fake_token_around_image><row_i_col_j> (special) and image tokens"),
        ("mistral3", "; [IMG] per merged patch (image), [IMG_BREAK] after each row and [IMG_END] (special)"),
    ))


# -- cross-attention VLMs: the decoder reads the image in cross-attention layers (own adapters) -------------------
def _mllama() -> tuple:
    """A small Llama 3.2 Vision: 3 decoder layers, the middle one cross-attention; 2 local + 1 global vision
    layers over 4 tiles of 32x32 pixels (the published tiling, smaller tiles)."""
    spec = TokenSpec(named=(("image_token", "<|image|>"),), plain=("<|python_tag|>",), bos="<|begin_of_text|>",
                     eos="<|end_of_text|>", pad="<|finetune_right_pad_id|>")
    tok = vlm_tokenizer(VOCAB, spec, 512)
    text = {**TEXT, "num_hidden_layers": 3, "cross_attention_layers": [1], "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
              "attention_heads": 4, "image_size": 32, "patch_size": 8, "max_num_tiles": 4,
              "intermediate_layers_indices": [0], "vision_output_dim": 64}
    config = _config("mllama", text_config=text, vision_config=vision, image_token_index=tok.image_token_id)
    image_processor = transformers.MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=4)
    return config, tok, transformers.MllamaProcessor(image_processor=image_processor, tokenizer=tok)


def _mllama_adapter(model, tokenizer, processor, info, device, dtype):
    from mmdiag.models.mllama import MllamaAdapter

    return MllamaAdapter(model, tokenizer, processor, info, device, dtype)


def _blip2() -> tuple:
    """A small BLIP-2 (OPT decoder): 2 vision layers, a 2-layer Q-Former (cross-attention in layer 1) with 4 query
    tokens, 2 OPT layers."""
    spec = TokenSpec(plain=("<image>",), bos="</s>", eos="</s>", pad="<pad>")  # OPT's BOS is its </s>
    tok = vlm_tokenizer(VOCAB, spec, 512)
    text = {"model_type": "opt", "vocab_size": VOCAB, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 512, "word_embed_proj_dim": 64,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    # initializer_range: BLIP-2's vision default (1e-10) leaves random layers the identity, every CLS the same
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8, "initializer_range": 0.02}
    qformer = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "cross_attention_frequency": 2, "encoder_hidden_size": 32, "vocab_size": VOCAB,
               "max_position_embeddings": 64}
    config = _config("blip-2", vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=4,
                     image_token_index=token_id(tok, "<image>"))
    image_processor = transformers.BlipImageProcessorPil(size={"height": 32, "width": 32})
    return config, tok, transformers.Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=4)


def _blip2_adapter(family: str) -> Callable[..., Any]:
    def factory(model, tokenizer, processor, info, device, dtype):
        from mmdiag.models.blip2 import Blip2Adapter

        return Blip2Adapter(model, tokenizer, processor, info, device, dtype, family=family)
    return factory


def _instructblip() -> tuple:
    """:func:`_blip2`'s parts as InstructBLIP: the same towers, a Q-Former that also reads the instruction (its own
    BERT-style tokenizer)."""
    from mmdiag.models import offline

    blip2, tok, processor = _blip2()
    config = _config("instructblip", vision_config=blip2.vision_config.to_dict(),
                     qformer_config={**blip2.qformer_config.to_dict(), "model_type": "instructblip_qformer"},
                     text_config=blip2.text_config.to_dict(), num_query_tokens=4,
                     image_token_index=blip2.image_token_index)
    qformer_tok = offline.bert_tokenizer(VOCAB, 64)
    return config, tok, transformers.InstructBlipProcessor(image_processor=processor.image_processor, tokenizer=tok,
                                                           qformer_tokenizer=qformer_tok, num_query_tokens=4)


def _cross_random(builder: Callable[[], tuple], cls_name: str) -> Callable[[Preset, int], tuple]:
    def build(preset: Preset, seed: int) -> tuple:
        config, tok, processor = builder()
        torch.manual_seed(seed)
        return fresh_model(getattr(transformers, cls_name), config), tok, processor
    return build


CROSS_FAMILIES: tuple[Family, ...] = (
    Family("mllama", ("mllama",), _mllama_adapter, _cross_random(_mllama, "MllamaForConditionalGeneration"),
           (Preset("tiny-mllama", "mllama", lambda: _mllama()[0], "a small Llama 3.2 Vision (Mllama) for tests"),),
           model_class=transformers.MllamaForConditionalGeneration, needs="processor",
           tokens="decoder with cross-attention layers: <|image|> <|begin_of_text|> (special), caption (text); "
                  "the image = the vision tower's tile tokens (CLS special, patches image), read by the "
                  "decoder only in its cross-attention layers (stream \"cross\")"),
    Family("blip-2", ("blip-2",), _blip2_adapter("blip-2"), _cross_random(_blip2, "Blip2ForConditionalGeneration"),
           (Preset("tiny-blip-2", "blip-2", lambda: _blip2()[0], "a small BLIP-2 (Q-Former, OPT decoder) for tests"),),
           model_class=transformers.Blip2ForConditionalGeneration, needs="processor",
           tokens="vision tower (image: CLS special, patches) -> Q-Former queries cross-attending to it (stream "
                  "\"cross\", queries on the text side) -> decoder: <image> x Q (image), BOS (special), caption "
                  "(text), causal \"joint\" stream"),
    Family("instructblip", ("instructblip",), _blip2_adapter("instructblip"),
           _cross_random(_instructblip, "InstructBlipForConditionalGeneration"),
           (Preset("tiny-instructblip", "instructblip", lambda: _instructblip()[0],
                   "a small InstructBLIP (instruction-aware Q-Former, OPT decoder) for tests"),),
           model_class=transformers.InstructBlipForConditionalGeneration, needs="processor",
           tokens="as blip-2; the Q-Former also reads the instruction (the prompt before the caption: none), its "
                  "queries' cross-attention is the \"cross\" stream"),
)
