"""The LLaVA adapter (causal decoder; Liu et al. 2023, arXiv:2304.08485) on the tiny preset."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st


from transformers import LlavaConfig

from mmdiag.data.noise import make_noise
from mmdiag.data.synthetic import make_synthetic
from mmdiag.models.base import GROUP_IMAGE as IMAGE, GROUP_SPECIAL as SPECIAL, GROUP_TEXT as TEXT
from mmdiag.models.llava import LlavaAdapter, image_token_count
from mmdiag.models.load import load_adapter, save_preset
from mmdiag.record import record
from mmdiag.recording.attention import ShareAccumulator

SPEC = "random:tiny-llava"
N_IMAGE = 16  # (32 / 8)^2 patches; the CLS is dropped by the "default" strategy
IMAGE_ID = 511


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(SPEC, "cpu")


@pytest.fixture(scope="module")
def samples():
    return make_synthetic(5, seed=4)


def test_adapter_attributes(adapter):
    assert isinstance(adapter, LlavaAdapter)
    assert (adapter.family, adapter.modalities, adapter.joint_attention) == ("llava", ("image", "text"), True)
    assert adapter.layer_counts() == {"image": 4, "text": 4}
    assert adapter.n_image_tokens() == N_IMAGE and adapter.model.config.image_token_id == IMAGE_ID


def test_image_token_count_of_published_configs():
    """LLaVA-1.5 (CLIP-L/14 at 336 px): 24 x 24 = 576 image tokens; the "full" strategy keeps CLS."""
    config = LlavaConfig()
    assert image_token_count(config) == 576 == config.image_seq_length
    config.vision_feature_select_strategy = "full"
    assert image_token_count(config) == 577


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "big", "red", "circle", "left", "of", "xqz", "<image>"]),
                         min_size=0, max_size=6), min_size=1, max_size=3))
def test_prepare_layout(adapter, captions):
    """<s>, N contiguous image tokens, then the caption, right-padded; word ids follow the words."""
    image = make_synthetic(1, seed=0, image_size=32)[0].image
    samples = [replace(make_synthetic(1, seed=0, image_size=32)[0], caption=" ".join(w), words=tuple(w),
                       image=image, tree=None) for w in captions]
    batch = adapter.prepare(samples)
    ids, real, wids = batch["input_ids"], batch["real"], batch["word_ids"]
    assert (batch["image_start"], batch["text_start"]) == (1, 1 + N_IMAGE)
    assert (ids[:, 0] == 1).all() and (ids[:, 1:1 + N_IMAGE] == IMAGE_ID).all()
    assert ((ids == IMAGE_ID).sum(1) == N_IMAGE).all()  # a literal "<image>" word never adds one
    assert (wids[:, :1 + N_IMAGE] == -1).all()
    for i, words in enumerate(captions):
        n_real = int(real[i].sum())
        assert real[i, :n_real].all() and not real[i, n_real:].any()  # right padding
        assert (ids[i, n_real:] == adapter.special_ids()[1]).all()
        assert int(wids[i].max()) == len(words) - 1
        assert (wids[i, 1 + N_IMAGE:n_real] >= 0).all() and (n_real > 1 + N_IMAGE) == (len(words) > 0)
    assert ids.shape[1] > 1 + N_IMAGE  # at least one text position, even when every caption is empty
    trace = adapter.forward(batch)
    assert trace.hidden["text"][0].shape[1] == ids.shape[1] - 1 - N_IMAGE


def test_record_end_to_end_and_causal_counts(adapter, samples):
    acts = record(adapter, samples, batch_size=3, words=True, attentions=True)
    n, d = len(samples), adapter.text_config().hidden_size
    for modality in ("image", "text"):
        assert len(acts.pooled[modality]) == 4
        assert all(p.shape == (n, d) and torch.isfinite(p).all() for p in acts.pooled[modality])
        assert acts.embeds[modality].shape == (n, d)
    assert acts.word_counts == [len(s.words) for s in samples]
    assert [w.shape[0] for w in acts.word_states] == [sum(acts.word_counts)] * 4
    stats = acts.attention["joint"]
    assert acts.causal["joint"] is True
    np.testing.assert_allclose(stats.share_total.sum(-1), 1.0, atol=1e-6)
    count, nq = stats.count, stats.n_queries
    # only BOS (SPECIAL) precedes the image: it sees neither image nor text; every text query sees all groups
    assert np.all(nq[:, :, SPECIAL] == n) and np.all(nq[:, :, IMAGE] == N_IMAGE * n)
    assert np.all(count[:, :, SPECIAL, IMAGE] == 0) and np.all(count[:, :, SPECIAL, TEXT] == 0)
    assert np.all(count[:, :, TEXT, IMAGE] == nq[:, :, TEXT]) and np.all(count[:, :, TEXT, SPECIAL] == nq[:, :, TEXT])
    assert np.all(count[:, :, IMAGE, TEXT] == 0) and np.all(np.isnan(stats.share[:, :, IMAGE, TEXT]))
    np.testing.assert_allclose(stats.share[:, :, TEXT, :].sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(stats.share[:, :, SPECIAL, SPECIAL], 1.0, atol=1e-6)  # BOS attends to itself


def test_trace_positions_match_the_model(adapter, samples):
    """Entry 0 holds the projected image features at the image slice and token embeddings at the text slice."""
    batch = adapter.prepare(samples[:2])
    trace = adapter.forward(batch)
    with torch.inference_mode():
        features = adapter.model.model.get_image_features(pixel_values=batch["extra"]["pixel_values"]).pooler_output
        features = torch.stack(list(features))
        tokens = adapter.model.get_input_embeddings()(batch["input_ids"][:, 1 + N_IMAGE:])
    assert features.shape == (2, N_IMAGE, adapter.text_config().hidden_size)
    torch.testing.assert_close(trace.hidden["image"][0], features, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(trace.hidden["text"][0], tokens, atol=1e-6, rtol=1e-5)
    n_real = batch["real"][:, 1 + N_IMAGE:].sum(1)
    assert torch.equal(trace.pool_index["text"], n_real - 1) and trace.pool_index["image"] is None
    assert trace.patch_grid == (4, 4) and trace.patch_offset == 0
    # views of the joint hidden states
    assert trace.hidden["text"][2].untyped_storage().data_ptr() == trace.hidden["image"][2].untyped_storage().data_ptr()
    # embeds: mean of content tokens in the output (for Llama the last hidden state is after the final norm)
    expected = trace.hidden["image"][-1].mean(1)
    torch.testing.assert_close(trace.embeds["image"], expected)


def test_right_padding_does_not_change_a_sample(adapter, samples):
    """A sample padded in a batch gives the states it gives alone (mask and causality are right)."""
    short = min(samples, key=lambda s: len(s.words))
    longer = max(samples, key=lambda s: len(s.words))
    together = adapter.forward(adapter.prepare([longer, short]))
    alone = adapter.forward(adapter.prepare([short]))
    k = together.pool_index["text"][1]
    assert k == alone.pool_index["text"][0] and k < together.hidden["text"][0].shape[1] - 1
    for layer in range(4):
        torch.testing.assert_close(together.hidden["text"][layer][1, k], alone.hidden["text"][layer][0, k],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(together.hidden["image"][layer][1], alone.hidden["image"][layer][0],
                                   atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together.embeds["text"][1], alone.embeds["text"][0], atol=1e-5, rtol=1e-4)


def test_deterministic(adapter, samples):
    a = record(adapter, samples, 5, words=True, attentions=True)
    b = record(adapter, samples, 5, words=True, attentions=True)
    for m in ("image", "text"):
        assert all(torch.equal(x, y) for x, y in zip(a.pooled[m], b.pooled[m]))
    np.testing.assert_array_equal(a.attention["joint"].share_total, b.attention["joint"].share_total)


def test_hiding_the_image_gives_zero_text_to_image_share(adapter, samples):
    batch = adapter.prepare(samples[:3])
    adapter.output_attentions = True
    try:
        seen = adapter.forward(batch)
        hidden = adapter.forward({**batch, "hide": ("image",)})
    finally:
        adapter.output_attentions = False
    results = []
    for trace in (seen, hidden):
        acc = ShareAccumulator(n_layers=3, n_heads=4)
        acc.update_layers(trace.attention["joint"].maps, trace.attention["joint"].groups, causal=True)
        results.append(acc.result())
    normal, knocked = results
    assert np.all(normal.share[:, :, TEXT, IMAGE] > 0.05)
    assert np.all(knocked.count[:, :, TEXT, IMAGE] > 0)
    np.testing.assert_allclose(knocked.share[:, :, TEXT, IMAGE], 0.0, atol=1e-7)
    assert torch.equal(seen.attention["joint"].groups, hidden.attention["joint"].groups)
    assert not torch.allclose(seen.hidden["text"][1], hidden.hidden["text"][1])


def test_noise_token_ids(adapter):
    """The noise control's raw ids work, the image id is excluded via the tokenizer's special ids."""
    tok = adapter.tokenizer
    assert IMAGE_ID in tok.all_special_ids
    samples = make_noise(3, seed=0, vocab_size=len(tok), exclude_ids=tok.all_special_ids, image_size=32)
    acts = record(adapter, samples, 3, words=True)
    assert acts.word_counts == [len(s.token_ids) for s in samples]
    # a raw id equal to the image id would break LLaVA's feature placement: it is replaced by <unk>
    raw = replace(samples[0], token_ids=(5, IMAGE_ID, 6))
    batch = adapter.prepare([raw])
    assert int((batch["input_ids"] == IMAGE_ID).sum()) == N_IMAGE
    assert batch["input_ids"][0, -2] == tok.unk_token_id


def test_save_preset_round_trip(tmp_path, samples):
    directory = save_preset(SPEC, tmp_path / "llava")
    assert (directory / "config.json").exists()
    loaded = load_adapter(str(directory), "cpu")
    assert isinstance(loaded, LlavaAdapter) and loaded.info.family == "llava"
    assert loaded.model.config._attn_implementation == "eager"
    a = record(load_adapter(SPEC, "cpu"), samples[:2], 2, words=True)
    b = record(loaded, samples[:2], 2, words=True)
    assert a.word_counts == b.word_counts
    for m in ("image", "text"):
        for x, y in zip(a.pooled[m], b.pooled[m]):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_plugin_attention_checks(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-llava", "--mm-samples=8", "--mm-batch-size=4",
                                "-p", "no:cacheprovider", "-k", "attention", "-rA", "--color=no",
                                "--mm-json=r.json")
    result.stdout.fnmatch_lines(["PASSED *test_attention_share?text->image-L01?*",
                                 "PASSED *test_attention_image_use*"])
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["model"]["family"] == "llava"
    by_id = {(r["check"], r["params"].get("direction"), r["params"].get("layer")): r for r in doc["results"]}
    for layer in (1, 2, 3):
        assert by_id[("attention.share", "text->image", layer)]["status"] == "info"  # ungated: reported
        # image tokens precede the caption in a causal decoder: no image query can see text
        assert by_id[("attention.share", "image->text", layer)]["status"] == "skip"
    assert by_id[("attention.image_use", None, None)]["status"] == "pass"
    assert result.ret == 0
