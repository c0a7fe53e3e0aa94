"""The ViLT adapter (single-stream; Kim et al. 2021, arXiv:2102.03334) on the tiny preset."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st


from mmdiag.data.synthetic import make_synthetic
from mmdiag.models.base import GROUP_IMAGE as IMAGE, GROUP_PAD as PAD, GROUP_SPECIAL as SPECIAL, GROUP_TEXT as TEXT
from mmdiag.models.load import load_adapter, save_preset
from mmdiag.models.vilt import ViltAdapter
from mmdiag.record import record
from mmdiag.recording.attention import ShareAccumulator

SPEC = "random:tiny-vilt"


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(SPEC, "cpu")


@pytest.fixture(scope="module")
def samples():
    # short captions (<= 38 words) so that nothing is truncated at ViLT's 40 positions
    return [s for s in make_synthetic(12, seed=3) if len(s.words) <= 30][:5]


def test_adapter_attributes(adapter):
    assert isinstance(adapter, ViltAdapter)
    assert (adapter.family, adapter.modalities, adapter.joint_attention) == ("vilt", ("image", "text"), True)
    assert adapter.output_attentions is False
    assert adapter.layer_counts() == {"image": 4, "text": 4}


def test_record_end_to_end(adapter, samples):
    acts = record(adapter, samples, batch_size=3, words=True, attentions=True)
    n, d = len(samples), adapter.model.config.hidden_size
    for modality in ("image", "text"):
        assert len(acts.pooled[modality]) == 4 and len(acts.mean_tokens[modality]) == 4
        assert all(p.shape == (n, d) and torch.isfinite(p).all() for p in acts.pooled[modality])
        assert acts.embeds[modality].shape == (n, d)
    assert acts.word_counts == [len(s.words) for s in samples]
    assert [w.shape[0] for w in acts.word_states] == [sum(acts.word_counts)] * 4
    stats = acts.attention["joint"]
    assert acts.causal["joint"] is False
    assert stats.share.shape == (3, 4, 3, 3)
    # bidirectional: every valid query sees every key group, so shares over key groups sum to 1
    np.testing.assert_allclose(stats.share.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(stats.share_total.sum(-1), 1.0, atol=1e-6)
    # query counts: 3 specials ([CLS], [SEP], image CLS), every word piece, 16 patches per sample
    nq = stats.n_queries[0, 0]
    assert nq[SPECIAL] == 3 * n and nq[IMAGE] == 16 * n
    assert nq[TEXT] >= sum(acts.word_counts)


def test_trace_layout_and_groups(adapter, samples):
    adapter.output_attentions = True
    try:
        batch = adapter.prepare(samples[:2])
        trace = adapter.forward(batch)
    finally:
        adapter.output_attentions = False
    ids = batch["text"].input_ids
    n_text = ids.shape[1]
    joint = trace.attention["joint"].maps[0]
    assert joint.shape == (2, 4, n_text + 17, n_text + 17)
    for k in range(4):
        assert trace.hidden["text"][k].shape[1] == n_text and trace.hidden["image"][k].shape[1] == 17
    # views of the joint tensor, not copies
    assert trace.hidden["text"][1].untyped_storage().data_ptr() == trace.hidden["image"][1].untyped_storage().data_ptr()
    groups = trace.attention["joint"].groups
    text_groups, image_groups = groups[:, :n_text], groups[:, n_text:]
    real = batch["text"].attention_mask.bool()
    assert torch.equal(text_groups == PAD, ~real)
    assert (text_groups[:, 0] == SPECIAL).all() and (image_groups[:, 0] == SPECIAL).all()
    assert torch.equal(text_groups == TEXT, batch["text"].word_ids >= 0)
    assert ((text_groups == SPECIAL).sum(1) == 2).all()  # [CLS] and [SEP]
    assert (image_groups[:, 1:] == IMAGE).all()
    assert trace.patch_grid == (4, 4) and trace.patch_offset == 1
    assert torch.equal(trace.pool_index["text"], torch.zeros(2, dtype=torch.long))
    assert torch.equal(trace.pool_index["image"], torch.zeros(2, dtype=torch.long))
    assert not trace.content["image"][:, 0].any() and trace.content["image"][:, 1:].all()
    # embeds: mean of content tokens of the model output
    out_last = trace.hidden["image"][-1]  # before the final LayerNorm
    with torch.inference_mode():
        expected = adapter.model.layernorm(out_last)[:, 1:].mean(1)
    torch.testing.assert_close(trace.embeds["image"], expected, atol=1e-5, rtol=1e-5)


def test_patches_are_in_grid_order(adapter, samples):
    """Entry 0 of patch (r, c) is conv(patch r, c) + position[1 + r*cols + c] + image type embedding."""
    batch = adapter.prepare(samples[:2])
    trace = adapter.forward(batch)
    emb = adapter.model.embeddings
    with torch.no_grad():
        conv = emb.patch_embeddings.projection(batch["pixel_values"])  # (B, D, rows, cols)
        direct = conv.flatten(2).transpose(1, 2) + emb.position_embeddings[:, 1:]
        direct = direct + emb.token_type_embeddings.weight[1]
    torch.testing.assert_close(trace.hidden["image"][0][:, 1:], direct, atol=1e-5, rtol=1e-5)


def test_matches_the_models_own_forward(adapter, samples):
    """Same states as ViltModel on pixel_values (which shuffles patches): text states and
    order-free image summaries agree."""
    batch = adapter.prepare(samples[:2])
    trace = adapter.forward(batch)
    text = batch["text"]
    with torch.no_grad():
        torch.manual_seed(123)
        out = adapter.model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                            pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"],
                            output_hidden_states=True)
    n_text = text.input_ids.shape[1]
    real = text.attention_mask.bool()
    for k, h in enumerate(out.hidden_states):
        torch.testing.assert_close(trace.hidden["text"][k][real], h[:, :n_text][real], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(trace.hidden["image"][k][:, 0], h[:, n_text], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(trace.hidden["image"][k][:, 1:].mean(1), h[:, n_text + 1:].mean(1),
                                   atol=1e-5, rtol=1e-4)


def test_deterministic_and_independent_of_the_global_rng(adapter, samples):
    torch.manual_seed(1)
    a = record(adapter, samples, 5, words=True, attentions=True)
    torch.manual_seed(2)
    b = record(adapter, samples, 5, words=True, attentions=True)
    for m in ("image", "text"):
        assert all(torch.equal(x, y) for x, y in zip(a.pooled[m], b.pooled[m]))
        assert torch.equal(a.embeds[m], b.embeds[m])
    assert all(torch.equal(x, y) for x, y in zip(a.word_states, b.word_states))
    np.testing.assert_array_equal(a.attention["joint"].share, b.attention["joint"].share)


def _shares(adapter, batch):
    adapter.output_attentions = True
    try:
        trace = adapter.forward(batch)
    finally:
        adapter.output_attentions = False
    acc = ShareAccumulator(n_layers=3, n_heads=4)
    acc.update_layers(trace.attention["joint"].maps, trace.attention["joint"].groups, causal=False)
    return trace, acc.result()


def test_hiding_the_image_gives_zero_text_to_image_share(adapter, samples):
    batch = adapter.prepare(samples[:3])
    seen, normal = _shares(adapter, batch)
    hidden, knocked = _shares(adapter, {**batch, "hide": ("image",)})
    assert np.all(normal.share[:, :, TEXT, IMAGE] > 0.05)
    assert np.all(knocked.count[:, :, TEXT, IMAGE] > 0)  # image keys still counted ...
    np.testing.assert_allclose(knocked.share[:, :, TEXT, IMAGE], 0.0, atol=1e-7)  # ... but get no mass
    np.testing.assert_allclose(knocked.share[:, :, TEXT, :].sum(-1), 1.0 - knocked.share[:, :, TEXT, IMAGE],
                               atol=1e-6)
    # the knock-out changes the text states after the first block, not the embeddings
    assert torch.equal(seen.hidden["text"][0], hidden.hidden["text"][0])
    assert not torch.allclose(seen.hidden["text"][1], hidden.hidden["text"][1])


def test_padded_patches_are_pad(adapter, samples):
    batch = adapter.prepare(samples[:2])
    pixel_mask = batch["pixel_mask"].clone()
    pixel_mask[0, :, 32:] = 0  # the right half of image 0 is padding: 2 of 4 patch columns
    trace, stats = _shares(adapter, {**batch, "pixel_mask": pixel_mask})
    n_text = batch["text"].input_ids.shape[1]
    image_groups = trace.attention["joint"].groups[:, n_text:]
    assert (image_groups[0] == PAD).sum() == 8 and (image_groups[1] == PAD).sum() == 0
    assert torch.equal(trace.mask["image"][0], image_groups[0] != PAD)
    assert trace.content["image"].sum(1).tolist() == [8, 16]
    # real patches come first (sorted), padding last
    assert (image_groups[0, 1:9] == IMAGE).all() and (image_groups[0, 9:] == PAD).all()
    assert stats.n_queries[0, 0, IMAGE] == 8 + 16


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=4))
def test_joint_groups_property(rows):
    """Groups are PAD exactly off the masks; words TEXT; other real text tokens and image CLS SPECIAL."""
    width, n_patches = 9, 5
    text_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    words = torch.zeros_like(text_mask)
    image_mask = torch.zeros(len(rows), n_patches, dtype=torch.bool)
    for i, (n_words, n_valid_patches, _) in enumerate(rows):
        text_mask[i, :n_words + 2] = True
        words[i, 1:n_words + 1] = True
        image_mask[i, :n_valid_patches + 1] = True
    groups = ViltAdapter.joint_groups(text_mask, words, image_mask)
    assert groups.shape == (len(rows), width + n_patches)
    assert torch.equal(groups == PAD, ~torch.cat([text_mask, image_mask], 1))
    assert torch.equal(groups[:, :width] == TEXT, words)
    assert (groups[:, width] == SPECIAL).all()
    assert torch.equal(groups[:, width + 1:] == IMAGE, image_mask[:, 1:])
    for i, (n_words, _, _) in enumerate(rows):
        assert int((groups[i, :width] == SPECIAL).sum()) == 2


def test_raw_token_ids_and_truncation(adapter):
    """Raw ids (the noise control) are wrapped in [CLS] .. [SEP]; long captions are truncated at 40."""
    base = make_synthetic(2, seed=0)
    raw = replace(base[0], token_ids=tuple(range(1000, 1010)), words=None, tree=None)
    long = replace(base[1], token_ids=tuple(range(1000, 1060)), words=None, tree=None)
    before = adapter.truncated_captions
    batch = adapter.prepare([raw, long])
    assert adapter.truncated_captions == before + 1
    ids = batch["text"].input_ids
    assert ids.shape[1] == 40
    assert ids[0, 0] == 101 and ids[0, 11] == 102 and ids[1, -1] == 102
    trace = adapter.forward(batch)
    assert trace.word_ids[0].max() == 9 and trace.word_ids[1].max() == 37


def test_save_preset_round_trip(tmp_path, samples):
    directory = save_preset(SPEC, tmp_path / "vilt")
    loaded = load_adapter(str(directory), "cpu")
    assert isinstance(loaded, ViltAdapter) and loaded.info.family == "vilt"
    a = record(load_adapter(SPEC, "cpu"), samples[:2], 2, words=True)
    b = record(loaded, samples[:2], 2, words=True)
    for m in ("image", "text"):
        for x, y in zip(a.pooled[m], b.pooled[m]):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_plugin_attention_checks(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-vilt", "--mm-samples=8", "--mm-batch-size=4",
                                "-p", "no:cacheprovider", "-k", "attention", "-rA", "--color=no",
                                "--mm-json=r.json")
    result.stdout.fnmatch_lines(["PASSED *test_attention_share?text->image-L01?*",
                                 "PASSED *test_attention_image_use*"])
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["model"]["family"] == "vilt"
    by_id = {(r["check"], r["params"].get("direction"), r["params"].get("layer")): r for r in doc["results"]}
    for direction in ("text->image", "image->text", "text->text", "image->image"):
        for layer in (1, 2, 3):
            r = by_id[("attention.share", direction, layer)]
            assert r["status"] == "info" and 0.0 < r["value"] < 1.0
    assert by_id[("attention.image_use", None, None)]["status"] == "pass"
    assert result.ret == 0
