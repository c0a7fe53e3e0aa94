"""Mistral 3 (Pixtral tower, ``PixtralProcessor``) and SmolVLM through the generic decoder-VLM adapter.

Each part skips, with the reason, where its family's requirements do not import (Mistral 3: torchvision, which
transformers needs for ``PixtralProcessor``; SmolVLM: num2words, which its processor needs).
"""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiag.data.synthetic import make_synthetic
from mmdiag.models.base import GROUP_IMAGE, GROUP_SPECIAL, GROUP_TEXT
from mmdiag.models.families import families
from mmdiag.models.load import load_adapter


def _require(family):
    missing = families()[family].missing_requirements()
    if missing:
        pytest.skip(f"the {family} family needs {', '.join(missing)}")


def _samples(sizes, seed=3):
    rng = np.random.default_rng(0)
    return [replace(s, image=Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
            for s, (h, w) in zip(make_synthetic(len(sizes), seed=seed), sizes)]


def _image_features(adapter, batch):
    """The projected visual features the model merges into the sequence, one ``(n_i, D)`` tensor per image."""
    extra = {k: v for k, v in batch["extra"].items() if k != "pixel_values"}
    with torch.inference_mode():
        out = adapter.model.get_image_features(pixel_values=batch["pixel_values"], **extra)
    features = getattr(out, "pooler_output", out)
    return list(features) if isinstance(features, (list, tuple)) else list(features.reshape(len(batch["image"]), -1,
                                                                                           features.shape[-1]))



def _forward_with_attentions(adapter, batch):
    adapter.output_attentions = True
    try:
        return adapter.forward(batch)
    finally:
        adapter.output_attentions = False

def test_mistral3_image_tokens_follow_pixtrals_dynamic_resolution():
    """[IMG] per merged 16-pixel cell of each image's own size (image), [IMG_BREAK]/[IMG_END] special; entry 0 at
    the image positions is the projected Pixtral features the model merges there."""
    _require("mistral3")
    adapter = load_adapter("random:tiny-mistral3", "cpu")
    batch = adapter.prepare(_samples([(32, 32), (16, 32)]))
    assert batch["image"].sum(dim=1).tolist() == [4, 2]  # (32/16)*(32/16), (16/16)*(32/16)
    tok = adapter.tokenizer
    first = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert first[first.index("[IMG]"):][:6] == ["[IMG]", "[IMG]", "[IMG_BREAK]", "[IMG]", "[IMG]", "[IMG_END]"]
    trace = _forward_with_attentions(adapter, batch)
    groups = trace.attention["joint"].groups
    assert (groups == GROUP_IMAGE).sum(dim=1).tolist() == [4, 2]
    for name in ("[IMG_BREAK]", "[IMG_END]"):
        at = batch["input_ids"] == tok.convert_tokens_to_ids(name)
        assert at.any() and (groups[at] == GROUP_SPECIAL).all()
    features = _image_features(adapter, batch)
    for row, n in enumerate([4, 2]):
        torch.testing.assert_close(trace.hidden["image"][0][row, :n], features[row], atol=1e-5, rtol=1e-4)
    for row in range(2):
        assert int((groups[row] == GROUP_TEXT).sum()) == int((trace.word_ids[row] >= 0).sum())


def test_mistral3_a_sample_gives_the_same_states_alone_and_in_a_mixed_batch():
    _require("mistral3")
    adapter = load_adapter("random:tiny-mistral3", "cpu")
    samples = _samples([(16, 32), (32, 32)])
    together = adapter.forward(adapter.prepare(samples))
    alone = adapter.forward(adapter.prepare(samples[1:]))
    k = int(alone.pool_index["text"][0])
    assert int(together.pool_index["text"][1]) == k
    for layer in range(3):
        torch.testing.assert_close(together.hidden["text"][layer][1, k], alone.hidden["text"][layer][0, k],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(together.hidden["image"][layer][1, :4], alone.hidden["image"][layer][0, :4],
                                   atol=1e-5, rtol=1e-4)


def test_smolvlm_splits_the_image_and_frames_each_crop():
    """Image splitting: 2x2 crops of a 64-pixel image plus the global image, each <fake_token_around_image>
    <row_i_col_j> (special) then image_seq_len <image> tokens; entry 0 there is the connector's output."""
    _require("smolvlm")
    adapter = load_adapter("random:tiny-smolvlm", "cpu")
    batch = adapter.prepare(_samples([(64, 64), (64, 64)]))
    assert batch["image"].sum(dim=1).tolist() == [20, 20]  # (4 crops + global) x 4
    tok = adapter.tokenizer
    tokens = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens.count("<fake_token_around_image>") == 6 and "<global-img>" in tokens
    assert "<|im_start|>" in tokens  # the template's turn marker is one token
    trace = _forward_with_attentions(adapter, batch)
    groups = trace.attention["joint"].groups
    framing = torch.isin(batch["input_ids"], torch.tensor(tok.convert_tokens_to_ids(
        ["<fake_token_around_image>", "<global-img>", "<row_1_col_1>", "<row_2_col_2>"])))
    assert (groups[framing] == GROUP_SPECIAL).all()
    with torch.inference_mode():
        features = adapter.model.get_image_features(pixel_values=batch["pixel_values"],
                                                    pixel_attention_mask=batch["extra"].get("pixel_attention_mask"))
    features = getattr(features, "pooler_output", features)
    for row in range(2):
        torch.testing.assert_close(trace.hidden["image"][0][row], features[row].reshape(20, -1), atol=1e-5,
                                   rtol=1e-4)


def test_smolvlm_assembled_prompt_is_the_full_processors():
    """Without its video processor, SmolVLM's template is rendered by the tokenizer: the same text as the full
    processor's own apply_chat_template (where torchvision lets transformers build the video processor)."""
    _require("smolvlm")
    import transformers

    from mmdiag.models.prompts import render_template

    adapter = load_adapter("random:tiny-smolvlm", "cpu")
    assembled = adapter.processor
    assert type(assembled).__name__ == "AssembledSmolVLMProcessor"
    before, after = render_template(assembled.chat_template, adapter.tokenizer, assembled)
    assert before.endswith("<image>") and "<|im_start|>" in before and after.startswith("<end_of_utterance>")
    try:
        video = transformers.SmolVLMVideoProcessor()
    except Exception as exc:  # noqa: BLE001  (it needs torchvision)
        pytest.skip(f"SmolVLM's full processor needs torchvision here ({type(exc).__name__})")
    full = transformers.SmolVLMProcessor(image_processor=assembled.image_processor, tokenizer=adapter.tokenizer,
                                         video_processor=video, chat_template=assembled.chat_template,
                                         image_seq_len=assembled.image_seq_len)
    assert render_template(full.chat_template, adapter.tokenizer, full) == (before, after)
