"""The generic decoder-VLM adapter on tiny Qwen2-VL (M-RoPE, dynamic resolution) and Gemma 3 presets."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiag.data.synthetic import make_synthetic
from mmdiag.models import families as registry
from mmdiag.models.base import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT
from mmdiag.models.decoder_vlm import DecoderVLMAdapter
from mmdiag.models.load import load_adapter, save_preset
from mmdiag.record import record
from mmdiag.recording.attention import ShareAccumulator


@pytest.fixture(scope="module")
def qwen():
    return load_adapter("random:tiny-qwen2-vl", "cpu")


def _samples(sizes):
    base = make_synthetic(len(sizes), seed=3)
    rng = np.random.default_rng(0)
    return [replace(s, image=Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
            for s, (h, w) in zip(base, sizes)]


def test_image_tokens_per_sample_follow_the_processor(qwen):
    """Dynamic resolution: each row's image tokens are the processor's grid (t*h*w / merge^2), found from the ids."""
    samples = _samples([(16, 16), (48, 32)])
    batch = qwen.prepare(samples)
    grid = batch["extra"]["image_grid_thw"]
    expected = (grid.prod(dim=1) // 4).tolist()
    assert batch["image"].sum(dim=1).tolist() == expected and expected[0] != expected[1]
    assert batch["image_start"] is None  # rows differ: gathered, not sliced
    qwen.output_attentions = True
    try:
        trace = qwen.forward(batch)
    finally:
        qwen.output_attentions = False
    assert trace.mask["image"].sum(dim=1).tolist() == expected
    assert trace.hidden["image"][0].shape[1] == max(expected)
    groups = trace.attention["joint"].groups
    assert (groups == GROUP_IMAGE).sum(dim=1).tolist() == expected
    # the caption's tokens are TEXT, with the word ids of the caption's words
    for row, sample in enumerate(samples):
        assert int(trace.word_ids[row].max()) == len(sample.words) - 1
        assert int((groups[row] == GROUP_TEXT).sum()) == int((trace.word_ids[row] >= 0).sum())


def test_a_sample_gives_the_same_states_alone_and_in_a_mixed_batch(qwen):
    """Right padding, gathering and 3-D rotary positions per row: batching changes nothing."""
    samples = _samples([(48, 32), (16, 16)])
    together = qwen.forward(qwen.prepare(samples))
    alone = qwen.forward(qwen.prepare(samples[1:]))
    k = int(alone.pool_index["text"][0])
    assert int(together.pool_index["text"][1]) == k
    n = int(alone.mask["image"][0].sum())
    for layer in range(3):
        torch.testing.assert_close(together.hidden["text"][layer][1, k], alone.hidden["text"][layer][0, k],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(together.hidden["image"][layer][1, :n], alone.hidden["image"][layer][0, :n],
                                   atol=1e-5, rtol=1e-4)


def test_hiding_the_image_keeps_positions_and_zeroes_text_to_image(qwen):
    batch = qwen.prepare(_samples([(32, 32), (32, 48)]))
    qwen.output_attentions = True
    try:
        seen, hidden = qwen.forward(batch), qwen.forward({**batch, "hide": ("image",)})
    finally:
        qwen.output_attentions = False
    text, image = GROUP_TEXT, GROUP_IMAGE
    shares = []
    for trace in (seen, hidden):
        acc = ShareAccumulator(n_layers=2, n_heads=4)
        acc.update_layers(trace.attention["joint"].maps, trace.attention["joint"].groups, causal=True)
        shares.append(acc.result().share[:, :, text, image])
    assert np.all(shares[0] > 0.01)
    np.testing.assert_allclose(shares[1], 0.0, atol=1e-7)
    # entry 0 is the embedding output: hiding changes the mask only, not the tokens
    torch.testing.assert_close(seen.hidden["text"][0], hidden.hidden["text"][0])


def test_text_before_the_image_is_not_text_in_the_attention_groups():
    """In a causal decoder a caption token placed before the image cannot see it: SPECIAL, not TEXT."""
    real = torch.tensor([[True] * 6 + [False]])
    image = torch.tensor([[False, False, True, True, False, False, False]])
    caption = torch.tensor([[False, True, False, False, True, True, False]])
    groups = DecoderVLMAdapter.joint_groups(real, caption, image)
    assert groups.tolist() == [[GROUP_SPECIAL, GROUP_SPECIAL, GROUP_IMAGE, GROUP_IMAGE, GROUP_TEXT, GROUP_TEXT,
                                GROUP_PAD]]


def test_without_torchvision_the_processor_is_assembled_and_said_once(tmp_path):
    """transformers' AutoProcessor needs torchvision for Qwen2-VL's video processor; mmdiag assembles the rest."""
    from transformers import AutoProcessor

    directory = save_preset("random:tiny-qwen2-vl", tmp_path / "qwen")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises((OSError, ImportError, ValueError)):
            AutoProcessor.from_pretrained(directory)
    adapter = load_adapter(str(directory), "cpu")
    assert type(adapter.processor).__name__ in ("AssembledQwen2VLProcessor", "Qwen2VLProcessor")
    if type(adapter.processor).__name__.startswith("Assembled"):
        assert "assembled from its image processor, tokenizer and chat template" in adapter.info.extra["processor_note"]
        assert adapter.processor.to_dict()["processor_class"] == "Qwen2VLProcessor"  # saved under its own name
    acts = record(adapter, make_synthetic(2, seed=1), 2, words=True)
    assert acts.word_counts == [len(s.words) for s in make_synthetic(2, seed=1)]


def test_an_undeclared_image_text_to_text_model_runs_through_the_generic_adapter(tmp_path, monkeypatch):
    directory = save_preset("random:tiny-gemma3", tmp_path / "gemma3")
    table = {k: v for k, v in registry.families().items() if k != "gemma3"}
    monkeypatch.setitem(registry._cache, "all", table)
    adapter = load_adapter(str(directory), "cpu")
    assert isinstance(adapter, DecoderVLMAdapter) and adapter.family == "generic:gemma3"
    assert adapter.info.family == "generic:gemma3"
    acts = record(adapter, make_synthetic(2, seed=0), 2)
    assert acts.n == 2
