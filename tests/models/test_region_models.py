"""Region-feature models: LXMERT (arXiv:1908.07490) and VisualBERT (arXiv:1908.03557) adapters,
the default region features and precomputed-feature files."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiag.data.synthetic import make_synthetic
from mmdiag.data.types import Phrase, Sample
from mmdiag.errors import DataError, SpecError
from mmdiag.metrics.grounding import phrase_grounding
from mmdiag.models import lxmert, visualbert
from mmdiag.models.base import GROUP_IMAGE as IMAGE, GROUP_PAD as PAD, GROUP_SPECIAL as SPECIAL, GROUP_TEXT as TEXT
from mmdiag.models.base import Adapter
from mmdiag.models.region_features import (
    NpzRegionFeatures,
    PooledColourFeatures,
    RegionFeatureExtractor,
    normalized_boxes,
    region_token_masks,
    sample_boxes,
)
from mmdiag.record import Recorder, record
from mmdiag.recording.grounding import update_from_trace


@pytest.fixture(scope="module")
def samples():
    return make_synthetic(6, seed=1)


@pytest.fixture(scope="module")
def lx():
    return lxmert.build_adapter("tiny-lxmert", seed=0)


@pytest.fixture(scope="module")
def vb():
    return visualbert.build_adapter("tiny-visualbert", seed=0)


# -- region features ---------------------------------------------------------------------------

def _solid(size=(40, 30), colour=(200, 100, 50)):
    return Image.new("RGB", size, colour)


def test_sample_boxes_and_normalised_positions():
    s = Sample(uid="u", image=_solid((40, 20)), caption="a b c", words=("a", "b", "c"),
               phrases=(Phrase(0, 1, (4, 2, 20, 10)), Phrase(2, 3, (-5, 0, 50, 25))))
    boxes = sample_boxes(s)
    assert boxes == [(0.0, 0.0, 40.0, 20.0), (4.0, 2.0, 20.0, 10.0), (-5.0, 0.0, 50.0, 25.0)]
    pos = normalized_boxes(boxes, (40, 20))
    np.testing.assert_allclose(pos.numpy(), [[0, 0, 1, 1], [0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]])


def test_default_features_pool_a_solid_box_to_its_colour():
    ext = PooledColourFeatures(feat_dim=64, grid=4, seed=0)
    image = _solid((40, 30), (200, 100, 50))
    box = (10, 6, 30, 24)
    raw = ext.raw(image, [box])[0].numpy()
    cells = raw[:48].reshape(3, 4, 4)
    for c, value in enumerate((200, 100, 50)):
        np.testing.assert_allclose(cells[c], value / 255)
    np.testing.assert_allclose(raw[48:], [10 / 40, 6 / 30, 30 / 40, 24 / 30, (20 / 40) * (18 / 30)])
    feats = ext(image, [box])
    assert feats.shape == (1, 64) and feats.dtype == torch.float32
    np.testing.assert_allclose(feats[0].numpy(), (raw - 0.5) @ ext.projection.numpy(), rtol=1e-5, atol=1e-6)


def test_default_features_cells_follow_the_layout():
    """Left half red, right half blue, box = whole image, 2x2 grid: reference by numpy block means."""
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:, :4] = (255, 0, 0)
    arr[:, 4:] = (0, 0, 255)
    arr[6:, :] = (0, 255, 0)  # bottom quarter green: cells are means of mixed pixels
    image = Image.fromarray(arr)
    ext = PooledColourFeatures(feat_dim=8, grid=2)
    raw = ext.raw(image, [(0, 0, 8, 8)])[0].numpy()
    ref = arr.astype(np.float64).reshape(2, 4, 2, 4, 3).mean((1, 3)) / 255  # (2, 2, 3)
    np.testing.assert_allclose(raw[:12].reshape(3, 2, 2), ref.transpose(2, 0, 1))


def test_default_projection_is_seeded_and_lossless():
    a, b, c = PooledColourFeatures(128, seed=0), PooledColourFeatures(128, seed=0), PooledColourFeatures(128, seed=1)
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)
    assert torch.linalg.matrix_rank(a.projection).item() == a.raw_dim == 53
    assert isinstance(a, RegionFeatureExtractor)


def test_npz_and_safetensors_features(tmp_path, samples):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    arrays = {s.uid: rng.normal(size=(1 + len(s.phrases), 64)).astype(np.float32) for s in samples}
    np.savez(tmp_path / "f.npz", **arrays)
    save_file(arrays, str(tmp_path / "f.safetensors"))
    for name in ("f.npz", "f.safetensors"):
        ext = NpzRegionFeatures(tmp_path / name, feat_dim=64)
        got = ext.for_sample(samples[0], sample_boxes(samples[0]))
        np.testing.assert_array_equal(got.numpy(), arrays[samples[0].uid])
    # the adapter uses them
    adapter = visualbert.build_adapter("tiny-visualbert", seed=0, extractor=NpzRegionFeatures(tmp_path / "f.npz"))
    batch = adapter.prepare(samples[:2])
    n = 1 + len(samples[1].phrases)
    np.testing.assert_array_equal(batch["regions"].feats[1, :n].numpy(), arrays[samples[1].uid])


def test_npz_errors_name_file_and_key(tmp_path, samples):
    s = samples[0]
    boxes = sample_boxes(s)
    np.savez(tmp_path / "bad.npz", **{s.uid: np.zeros((len(boxes) + 1, 64), np.float32),
                                      "other": np.zeros((2, 64, 1), np.float32)})
    ext = NpzRegionFeatures(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=rf"bad\.npz: key '{s.uid}': {len(boxes) + 1} rows"):
        ext.for_sample(s, boxes)
    with pytest.raises(DataError, match=r"bad\.npz: key 'other': expected a 2-d"):
        ext.for_sample(replace(s, uid="other"), boxes)
    with pytest.raises(DataError, match=r"bad\.npz: no region features for sample 'missing'"):
        ext.for_sample(replace(s, uid="missing"), boxes)
    np.savez(tmp_path / "dim.npz", **{s.uid: np.zeros((len(boxes), 10), np.float32)})
    with pytest.raises(DataError, match=r"dim\.npz: key .*10 dims, the model expects 64"):
        NpzRegionFeatures(tmp_path / "dim.npz", feat_dim=64).for_sample(s, boxes)
    with pytest.raises(DataError, match="not found"):
        NpzRegionFeatures(tmp_path / "nope.npz")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        NpzRegionFeatures(tmp_path / "x.txt")
    with pytest.raises(SpecError, match="64-d"):
        visualbert.build_adapter("tiny-visualbert", extractor=PooledColourFeatures(feat_dim=32))


# -- LXMERT ------------------------------------------------------------------------------------

def test_lxmert_attributes(lx):
    assert isinstance(lx, Adapter)
    assert (lx.family, lx.modalities, lx.joint_attention) == ("lxmert", ("image", "text"), False)
    # tiny: 2 language, 1 region, 2 cross layers (+1 embedding entry)
    assert lx.layer_counts() == {"text": 5, "image": 4}
    assert lx.attention_layers() == {"text": [1, 2, 3, 4], "image": [1, 2, 3], "cross": [3, 4]}
    cfg = lxmert.PRESETS["lxmert-base"].make_config()
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.l_layers, cfg.x_layers, cfg.r_layers,
            cfg.visual_feat_dim, cfg.visual_pos_dim, cfg.vocab_size) == (768, 12, 9, 5, 5, 2048, 4, 30522)


def test_lxmert_record_end_to_end(lx, samples):
    acts = record(lx, samples, 3, words=True, attentions=True)
    n, d = len(samples), lx.model.config.hidden_size
    assert [len(acts.pooled[m]) for m in ("text", "image")] == [5, 4]
    for m in ("text", "image"):
        assert all(p.shape == (n, d) and torch.isfinite(p).all() for p in acts.pooled[m])
        assert acts.embeds[m].shape == (n, d)
    assert acts.word_counts == [len(s.words) for s in samples]
    assert [w.shape[0] for w in acts.word_states] == [sum(acts.word_counts)] * 5
    att = acts.attention
    assert set(att) == {"text", "image", "cross"}
    assert att["text"].share.shape == (4, 4, 3, 3) and att["image"].share.shape == (3, 4, 3, 3)
    assert att["cross"].share.shape == (2, 4, 3, 3)
    np.testing.assert_allclose(att["cross"].share_mean[:, TEXT, IMAGE], 1.0)
    # regions attend over the words and [CLS]/[SEP]
    cross = att["cross"].share_mean
    np.testing.assert_allclose(cross[:, IMAGE, TEXT] + cross[:, IMAGE, SPECIAL], 1.0)
    np.testing.assert_allclose(att["cross"].share_mean[:, IMAGE, IMAGE], 0.0)
    # the single-modality streams keep entropies only (no shares between modalities exist there)
    assert np.isnan(att["text"].share_mean).all() and np.isnan(att["image"].share_mean).all()
    assert np.isfinite(att["text"].entropy_mean[:, TEXT]).all()
    assert np.isfinite(att["image"].entropy_mean[:, IMAGE]).all()
    assert acts.causal == {"text": False, "image": False, "cross": False}
    # entropy of text queries over regions is at most log(#regions)
    max_regions = max(1 + len(s.phrases) for s in samples)
    assert (att["cross"].entropy_mean[:, TEXT] <= np.log(max_regions) + 1e-6).all()


def test_lxmert_matches_hf_outputs_and_hooks_change_nothing(lx, samples):
    batch = lx.prepare(samples[:3])
    lx.output_attentions = False
    plain = lx.forward(batch)
    lx.output_attentions = True
    try:
        traced = lx.forward(batch)
    finally:
        lx.output_attentions = False
    for m in ("text", "image"):
        assert len(plain.hidden[m]) == lx.layer_counts()[m]
        for a, b in zip(plain.hidden[m], traced.hidden[m]):
            torch.testing.assert_close(a, b)
    text, regions = batch["text"], batch["regions"]
    with torch.inference_mode():
        out = lx.model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                       visual_feats=regions.feats, visual_pos=regions.pos,
                       visual_attention_mask=regions.mask.long(), output_hidden_states=True, output_attentions=True)
        emb = lx.model.embeddings(text.input_ids, torch.zeros_like(text.input_ids))
        vis = lx.model.encoder.visn_fc(regions.feats, regions.pos)
    torch.testing.assert_close(plain.hidden["text"][0], emb)
    torch.testing.assert_close(plain.hidden["image"][0], vis)
    for a, b in zip(plain.hidden["text"][1:], out.language_hidden_states):
        torch.testing.assert_close(a, b)
    for a, b in zip(plain.hidden["image"][1:], out.vision_hidden_states):
        torch.testing.assert_close(a, b)
    # the hooked maps agree with what HF returns where HF returns them
    for a, b in zip(traced.attention["text"].maps[:2], out.language_attentions):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(traced.attention["image"].maps[0], out.vision_attentions[0])
    n_text = text.input_ids.shape[1]
    for joint, cross in zip(traced.attention["cross"].maps, out.cross_encoder_attentions):
        torch.testing.assert_close(joint[:, :, :n_text, n_text:], cross)
        assert float(joint[:, :, :n_text, :n_text].abs().max()) == 0.0
        valid = traced.attention["cross"].groups != PAD
        rows = joint.sum(-1)[valid.unsqueeze(1).expand_as(joint.sum(-1))]
        torch.testing.assert_close(rows, torch.ones_like(rows))
    # pooled text = [CLS], pooled image = whole-image region, embeds = content means of the last layer
    assert plain.pool_index["text"].tolist() == [0, 0, 0] and plain.pool_index["image"].tolist() == [0, 0, 0]
    torch.testing.assert_close(plain.embeds["image"],
                               (out.vision_output * regions.mask[..., None]).sum(1) / regions.mask.sum(1, keepdim=True))


def test_lxmert_groups_and_region_tokens(lx, samples):
    batch = lx.prepare(samples[:3])
    counts = [1 + len(s.phrases) for s in samples[:3]]
    assert batch["regions"].counts == counts
    assert batch["regions"].mask.sum(1).tolist() == counts
    lx.output_attentions = True
    try:
        trace = lx.forward(batch)
    finally:
        lx.output_attentions = False
    g_text, g_image = trace.attention["text"].groups, trace.attention["image"].groups
    ids = batch["text"].input_ids
    assert (g_text[ids == 101] == SPECIAL).all() and (g_text[ids == 102] == SPECIAL).all()
    assert (g_text[batch["text"].word_ids >= 0] == TEXT).all()
    assert (g_text[batch["text"].attention_mask == 0] == PAD).all()
    assert g_image.tolist() == [[IMAGE] * c + [PAD] * (max(counts) - c) for c in counts]
    # regions straight from the image tokens: [whole image, phrase 0, ...] per sample
    rec = Recorder(lx.layer_counts())
    rec.add_regions(trace, lx.region_masks(samples[:3]))
    acts = rec.finish()
    assert acts.region_counts == counts
    for k, h in enumerate(trace.hidden["image"]):
        expected = torch.cat([h[b, :c] for b, c in enumerate(counts)]).float()
        torch.testing.assert_close(acts.region_states[k], expected)


def test_lxmert_grounding_masks(lx, samples):
    batch = lx.prepare(samples[:2])
    lx.output_attentions = True
    try:
        trace = lx.forward(batch)
    finally:
        lx.output_attentions = False
    masks = trace.attention["cross"].grounding
    n_text = batch["text"].input_ids.shape[1]
    for b, s in enumerate(samples[:2]):
        wid = batch["text"].word_ids[b]
        for p, phrase in enumerate(s.phrases):
            expected = ((wid >= phrase.start) & (wid < phrase.end)).nonzero().flatten().tolist()
            assert masks.queries[b, p].nonzero().flatten().tolist() == expected
            assert masks.keys[b, p].nonzero().flatten().tolist() == [n_text + 1 + p]
    accs: dict = {}
    update_from_trace(accs, trace)
    res = accs["cross"].result()
    assert res.share.shape == (2, 4)
    assert ((res.share >= 0) & (res.share <= 1)).all()
    assert res.n_phrases[0, 0] == sum(len(s.phrases) for s in samples[:2])
    # chance = 1 / (number of regions) per phrase
    ref = np.mean([1 / (1 + len(s.phrases)) for s in samples[:2] for _ in s.phrases])
    np.testing.assert_allclose(res.chance_mean, ref)


def test_lxmert_determinism_and_seed(lx, samples):
    again = lxmert.build_adapter("tiny-lxmert", seed=0)
    other = lxmert.build_adapter("tiny-lxmert", seed=1)
    a = record(lx, samples[:3], 3)
    b = record(again, samples[:3], 3)
    c = record(other, samples[:3], 3)
    assert lx.info.fingerprint == again.info.fingerprint != other.info.fingerprint
    for m in ("text", "image"):
        for x, y, z in zip(a.pooled[m], b.pooled[m], c.pooled[m]):
            assert torch.equal(x, y)
        assert not torch.equal(a.pooled[m][-1], c.pooled[m][-1])


# -- VisualBERT --------------------------------------------------------------------------------

def test_visualbert_attributes(vb):
    assert isinstance(vb, Adapter)
    assert (vb.family, vb.modalities, vb.joint_attention) == ("visualbert", ("image", "text"), True)
    assert vb.layer_counts() == {"text": 4, "image": 4}
    cfg = visualbert.PRESETS["visualbert-vqa-coco-pre"].make_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.visual_embedding_dim,
            cfg.vocab_size) == (768, 12, 12, 2048, 30522)


def test_visualbert_record_end_to_end(vb, samples):
    acts = record(vb, samples, 3, words=True, attentions=True)
    n, d = len(samples), vb.model.config.hidden_size
    for m in ("text", "image"):
        assert len(acts.pooled[m]) == 4
        assert all(p.shape == (n, d) and torch.isfinite(p).all() for p in acts.pooled[m])
        assert acts.embeds[m].shape == (n, d)
    assert [w.shape[0] for w in acts.word_states] == [sum(len(s.words) for s in samples)] * 4
    stats = acts.attention["joint"]
    assert set(acts.attention) == {"joint"} and acts.causal["joint"] is False
    assert stats.share.shape == (3, 4, 3, 3)
    share = stats.share_mean
    total = share[:, TEXT, TEXT] + share[:, TEXT, IMAGE] + share[:, TEXT, SPECIAL]
    np.testing.assert_allclose(total, 1.0, atol=1e-9)
    assert (stats.share_mean[:, TEXT, IMAGE] > 0).all()


def test_visualbert_slices_groups_and_grounding(vb, samples):
    batch = vb.prepare(samples[:3])
    vb.output_attentions = True
    try:
        trace = vb.forward(batch)
    finally:
        vb.output_attentions = False
    text, regions = batch["text"], batch["regions"]
    n_text, n_reg = text.input_ids.shape[1], regions.mask.shape[1]
    with torch.inference_mode():
        out = vb.model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                       visual_embeds=regions.feats, visual_attention_mask=regions.mask.long(),
                       output_hidden_states=True)
    for k, h in enumerate(out.hidden_states):
        torch.testing.assert_close(trace.hidden["text"][k], h[:, :n_text])
        torch.testing.assert_close(trace.hidden["image"][k], h[:, n_text:])
    groups = trace.attention["joint"].groups
    assert groups.shape == (3, n_text + n_reg)
    assert (groups[:, n_text:][regions.mask] == IMAGE).all() and (groups[:, n_text:][~regions.mask] == PAD).all()
    assert all(a.shape == (3, 4, n_text + n_reg, n_text + n_reg) for a in trace.attention["joint"].maps)
    # padded region keys get no attention
    for a in trace.attention["joint"].maps:
        assert float(a[..., n_text:][~regions.mask[:, None, None, :].expand_as(a[..., n_text:])].max()) < 1e-6
    masks = trace.attention["joint"].grounding
    share, valid, chance = phrase_grounding(trace.attention["joint"].maps[0], masks)
    n_phr = [len(s.phrases) for s in samples[:3]]
    assert valid.sum().item() == sum(n_phr) * 4
    for b, s in enumerate(samples[:3]):
        np.testing.assert_allclose(chance[b, :n_phr[b]].numpy(), 1 / (1 + n_phr[b]))
    # region states = image tokens [whole, phrases...]
    rec = Recorder(vb.layer_counts())
    rec.add_regions(trace, vb.region_masks(samples[:3]))
    acts = rec.finish()
    expected = torch.cat([trace.hidden["image"][2][b, :1 + c] for b, c in enumerate(n_phr)]).float()
    torch.testing.assert_close(acts.region_states[2], expected)


def test_phrase_free_and_noise_samples_run(vb, lx):
    noise = [Sample(uid=f"n{i}", image=Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3),
                                                                                       dtype=np.uint8)),
                    caption="", token_ids=tuple(range(200 + i, 205 + 2 * i))) for i in range(3)]
    for adapter in (vb, lx):
        acts = record(adapter, noise, 2, words=True, attentions=True)
        assert acts.n == 3 and all(torch.isfinite(p).all() for p in acts.pooled["image"])
    masks = region_token_masks([1, 3])
    assert masks[0] is None and torch.equal(masks[1], torch.eye(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no image"):
        lx.prepare([Sample(uid="t", image=None, caption="a red circle")])
    with pytest.raises(ValueError, match="no image"):
        vb.prepare([noise[0], Sample(uid="t", image=None, caption="a red circle")])


def test_visualbert_text_only_and_hidden_image(vb, lx, samples):
    text_only = [Sample(uid=f"t{i}", image=None, caption=s.caption, words=s.words) for i, s in enumerate(samples[:3])]
    acts = record(vb, text_only, 3, words=True, attentions=True)
    assert set(acts.pooled) == {"text"} and len(acts.word_states) == 4
    assert np.isnan(acts.attention["joint"].share_mean[:, TEXT, IMAGE]).all()
    # the same words through plain BERT-style masking match the text slice of a text-only forward
    hidden = record(vb, samples[:3], 3, attentions=True, hide=("image",))
    np.testing.assert_allclose(hidden.attention["joint"].share_mean[:, TEXT, IMAGE], 0.0, atol=1e-6)
    seen = record(vb, samples[:3], 3, attentions=True)
    assert (seen.attention["joint"].share_mean[:, TEXT, IMAGE] > 0.05).all()
    # with the image hidden the text states equal the text-only run's (regions are invisible keys;
    # VisualBERT's text positions/types do not depend on the regions)
    for a, b in zip(hidden.pooled["text"], acts.pooled["text"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="cannot hide"):
        record(lx, samples[:2], 2, hide=("image",))


def test_pretrained_round_trip(tmp_path, vb, lx, samples):
    """save_pretrained -> AutoModel/AutoTokenizer -> adapter_from_pretrained reproduces the preset."""
    from transformers import AutoModel, AutoTokenizer

    from mmdiag.models.base import ModelInfo

    for module, adapter in ((visualbert, vb), (lxmert, lx)):
        out = tmp_path / adapter.family
        adapter.model.save_pretrained(out)
        adapter.tokenizer.save_pretrained(out)
        model = AutoModel.from_pretrained(out, attn_implementation="eager")
        tok = AutoTokenizer.from_pretrained(out)
        info = ModelInfo(spec=str(out), family=adapter.family)
        loaded = module.adapter_from_pretrained(model, tok, info, torch.device("cpu"), torch.float32)
        a, b = record(adapter, samples[:2], 2), record(loaded, samples[:2], 2)
        for m in ("text", "image"):
            torch.testing.assert_close(a.pooled[m][-1], b.pooled[m][-1])
