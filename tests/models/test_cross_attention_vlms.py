"""Cross-attention VLMs (Mllama): the text->image share is read on the cross-attention layers only, as a stream of
its own ("cross"), and a saved tiny model runs the suite through ``--mm-model=DIR``."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmdiag.data.types import Sample
from mmdiag.models.base import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT
from mmdiag.models.families import lookup
from mmdiag.models.load import load_adapter
from mmdiag.models.mllama import MllamaAdapter, cross_stream_maps
from mmdiag.record import record
from tests.models.saved_runs import run_saved

SPECIAL, TEXT, IMAGE = 0, 1, 2  # rows/columns of the share statistics (group ids)


def _samples(n=3):
    rng = np.random.default_rng(0)
    # different aspect ratios: 1, 2 or 4 tiles per image
    sizes = [(32, 32), (32, 64), (64, 64), (40, 90)]
    return [Sample(uid=f"s{i}", image=Image.fromarray((rng.random((*sizes[i % 4], 3)) * 255).astype("uint8")),
                   caption=" ".join(["a", "red", "cat", "sits", "on", "the", "mat"][:3 + i])) for i in range(n)]


@pytest.fixture(scope="module")
def mllama():
    adapter = load_adapter("random:tiny-mllama", "cpu", "fp32", 0)
    assert isinstance(adapter, MllamaAdapter)
    return adapter


def test_family_is_registered():
    family = lookup("mllama")
    assert family is not None and family.name == "mllama" and family.matrix_preset == "tiny-mllama"


def test_cross_stream_maps_take_the_cross_layers_only():
    """Layers 0 and 2 of four are cross-attention: only their maps, in the square [text | vision] layout."""
    torch.manual_seed(0)
    t, n = 3, 5
    maps = [torch.softmax(torch.randn(2, 4, t, t if i not in (0, 2) else n), -1) for i in range(4)]
    out = cross_stream_maps(maps, [0, 2], t)
    assert len(out) == 2
    for square, index in zip(out, (0, 2)):
        assert square.shape == (2, 4, t + n, t + n)
        torch.testing.assert_close(square[:, :, :t, t:], maps[index])
        assert float(square[:, :, :t, :t].abs().sum()) == 0.0 and float(square[:, :, t:].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="text tokens"):
        cross_stream_maps(maps, [0], t + 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 9), st.integers(0, 2 ** 16))
def test_square_layouts_keep_each_query_row(batch, heads, t, n, seed):
    """Property: the square layout keeps every query row's distribution (sums to 1, same weights) over the vision
    columns and adds no mass anywhere else (mllama.cross_stream_maps and blip2.square_cross agree)."""
    from mmdiag.models.blip2 import square_cross

    g = torch.Generator().manual_seed(seed)
    a = torch.softmax(torch.randn(batch, heads, t, n, generator=g), -1)
    for square in (cross_stream_maps([a], [0], t)[0], square_cross([a])[0]):
        assert square.shape == (batch, heads, t + n, t + n)
        torch.testing.assert_close(square[:, :, :t].sum(-1), torch.ones(batch, heads, t))
        torch.testing.assert_close(square[:, :, :t, t:], a)
        assert float(square.sum()) == pytest.approx(batch * heads * t, rel=1e-5)


def test_cross_stream_is_the_hf_cross_attention(mllama):
    samples = _samples()
    mllama.output_attentions = True
    try:
        batch = mllama.prepare(samples)
        trace = mllama.forward(batch)
        core = mllama.core()
        out = core(input_ids=batch["input_ids"], attention_mask=batch["real"].long(),
                   pixel_values=batch["pixel_values"], aspect_ratio_ids=batch["aspect_ratio_ids"],
                   aspect_ratio_mask=batch["aspect_ratio_mask"], cross_attention_mask=batch["cross_attention_mask"],
                   output_attentions=True, use_cache=False)
    finally:
        mllama.output_attentions = False
    cross = mllama.model.config.text_config.cross_attention_layers
    n_layers = mllama.model.config.text_config.num_hidden_layers
    assert set(trace.attention) == {"text", "image", "cross"}
    assert len(trace.attention["cross"].maps) == len(cross)
    assert len(trace.attention["text"].maps) == n_layers - len(cross)
    n_text = batch["input_ids"].shape[1]
    for square, index in zip(trace.attention["cross"].maps, cross):
        torch.testing.assert_close(square[:, :, :n_text, n_text:], out.attentions[index])
    for own, index in zip(trace.attention["text"].maps, [i for i in range(n_layers) if i not in cross]):
        torch.testing.assert_close(own, out.attentions[index])
    groups = trace.attention["cross"].groups
    vision = groups[:, n_text:]
    per_tile = mllama.per_tile
    # each used tile: its CLS special, its patches image; unused tiles padding
    tiles = batch["tiles"].bool()
    for b in range(len(samples)):
        for tile in range(mllama.n_tiles):
            block = vision[b, tile * per_tile:(tile + 1) * per_tile]
            if tiles[b, tile]:
                assert int(block[0]) == GROUP_SPECIAL and bool((block[1:] == GROUP_IMAGE).all())
            else:
                assert bool((block == GROUP_PAD).all())
    text_groups = groups[:, :n_text]
    assert bool((text_groups[:, :2] == GROUP_SPECIAL).all())  # <|image|> <|begin_of_text|>
    assert bool(((text_groups == GROUP_TEXT) == (batch["word_ids"] >= 0)).all())


def test_recorded_cross_shares(mllama):
    """On the cross stream, a text query's mass is on the vision tokens only (patches + tile CLS = 1), the
    vision tokens are no queries, and the share is that of the cross-attention layers' maps."""
    samples = _samples(4)
    acts = record(mllama, samples, 2, attentions=True)
    cross = acts.attention["cross"]
    n_cross = len(mllama.model.config.text_config.cross_attention_layers)
    assert cross.share.shape[0] == n_cross
    share = cross.share_mean
    np.testing.assert_allclose(share[:, TEXT, IMAGE] + share[:, TEXT, SPECIAL], 1.0, atol=1e-6)
    np.testing.assert_allclose(share[:, TEXT, TEXT], 0.0, atol=1e-12)
    assert np.isnan(share[:, IMAGE, :]).all()  # vision tokens never query the text
    # the text->image share by hand: per sample, text query and head, the mass on patch keys, averaged
    mllama.output_attentions = True
    try:
        expected = []
        for start in range(0, len(samples), 2):
            batch = mllama.prepare(samples[start:start + 2])
            trace = mllama.forward(batch)
            groups = trace.attention["cross"].groups
            for square in trace.attention["cross"].maps:
                mass = (square * (groups == GROUP_IMAGE)[:, None, None, :]).sum(-1)  # (B, H, T)
                rows = (groups == GROUP_TEXT)[:, None, :].expand_as(mass)
                expected.append(mass[rows].reshape(-1))
    finally:
        mllama.output_attentions = False
    by_hand = float(torch.cat(expected).double().mean())
    assert share[0, TEXT, IMAGE] == pytest.approx(by_hand, rel=1e-5)
    assert acts.causal["cross"] is False and acts.causal["text"] is True


def test_states_per_layer(mllama):
    samples = _samples()
    trace = mllama.forward(mllama.prepare(samples))
    counts = mllama.layer_counts()
    vc = mllama.model.config.vision_config
    assert counts == {"image": vc.num_hidden_layers + vc.num_global_layers + 1,
                      "text": mllama.model.config.text_config.num_hidden_layers + 1}
    assert {m: len(h) for m, h in trace.hidden.items()} == counts
    n_vision = mllama.n_tiles * mllama.per_tile
    assert all(h.shape[1] == n_vision for h in trace.hidden["image"])
    # the tower's last global state (padding removed) is what the model hands the projector
    with torch.inference_mode():
        batch = mllama.prepare(samples)
        vision = mllama.core().vision_model(pixel_values=batch["pixel_values"], aspect_ratio_ids=batch["aspect_ratio_ids"],
                                            aspect_ratio_mask=batch["aspect_ratio_mask"])
    last = vision.last_hidden_state[..., :vc.hidden_size].reshape(len(samples), n_vision, -1)
    torch.testing.assert_close(trace.hidden["image"][-1], last)
    assert trace.embeds["image"].shape == trace.embeds["text"].shape
    tiles = batch["tiles"].sum(1)
    assert trace.mask["image"].sum(1).tolist() == (tiles * mllama.per_tile).tolist()
    assert trace.content["image"].sum(1).tolist() == (tiles * (mllama.per_tile - 1)).tolist()


def test_hiding_a_modality_is_refused(mllama):
    batch = mllama.prepare(_samples(2))
    batch["hide"] = ("image",)
    with pytest.raises(ValueError, match="cannot hide"):
        mllama.forward(batch)


def test_saved_mllama_runs_the_suite(pytester):
    doc, _ = run_saved(pytester, "tiny-mllama")
    assert doc["model"]["family"] == "mllama"
    results = doc["results"]
    assert not [r for r in results if r["status"] == "error"]
    by_check = {}
    for r in results:
        by_check.setdefault(r["check"], []).append(r)
    for check in ("cone.final", "gap.norm", "gap.l2i", "attention.entropy"):
        assert any(r["status"] != "skip" and r["value"] is not None for r in by_check[check]), check
    # no joint stream: the share checks skip, saying why
    for r in by_check["attention.share"] + by_check["attention.image_use"]:
        assert r["status"] == "skip" and "share one transformer" in r["message"]
    entropy = {(r["params"]["modality"], r["params"]["layer"]): r for r in by_check["attention.entropy"]}
    assert entropy[("image", 1)]["value"] is not None and entropy[("text", 1)]["value"] is not None


# -- BLIP-2: the Q-Former's cross-attention from the query tokens to the vision tower ---------------------------
@pytest.fixture(scope="module")
def blip2():
    from mmdiag.models.blip2 import Blip2Adapter

    adapter = load_adapter("random:tiny-blip-2", "cpu", "fp32", 0)
    assert isinstance(adapter, Blip2Adapter)
    return adapter


def test_blip2_cross_stream_is_the_qformer_cross_attention_layers_only(blip2):
    from mmdiag.models.blip2 import qformer_cross_layers

    samples = _samples()
    qformer = blip2.model.qformer
    cross = qformer_cross_layers(qformer)
    assert cross == [i for i in range(qformer.config.num_hidden_layers) if i % qformer.config.cross_attention_frequency == 0]
    assert len(cross) < qformer.config.num_hidden_layers  # the tiny Q-Former has a layer without cross-attention
    blip2.output_attentions = True
    try:
        batch = blip2.prepare(samples)
        trace = blip2.forward(batch)
    finally:
        blip2.output_attentions = False
    assert set(trace.attention) == {"joint", "cross"}
    maps = trace.attention["cross"].maps
    assert len(maps) == len(cross)
    # the same maps computed by hand from the Q-Former's cross-attention module of each cross layer
    with torch.inference_mode():
        vision = blip2.model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        n_query, n_vision = blip2.model.config.num_query_tokens, vision.shape[1]
        query = blip2.model.query_tokens.expand(len(samples), -1, -1)
        out = qformer(query_embeds=query, encoder_hidden_states=vision, output_attentions=True, return_dict=True)
    assert out.cross_attentions is not None and len(out.cross_attentions) == len(cross)
    for square, reference in zip(maps, out.cross_attentions):
        assert square.shape[-1] == n_query + n_vision
        torch.testing.assert_close(square[:, :, :n_query, n_query:], reference)
        assert float(square[:, :, n_query:].abs().sum()) == 0.0
    groups = trace.attention["cross"].groups
    assert bool((groups[:, :n_query] == GROUP_TEXT).all()) and bool((groups[:, n_query] == GROUP_SPECIAL).all())
    assert bool((groups[:, n_query + 1:] == GROUP_IMAGE).all())


def test_blip2_states(blip2):
    samples = _samples()
    trace = blip2.forward(blip2.prepare(samples))
    counts = blip2.layer_counts()
    assert counts == {"image": blip2.model.config.vision_config.num_hidden_layers + 1,
                      "text": blip2.model.config.text_config.num_hidden_layers + 1}
    assert {m: len(h) for m, h in trace.hidden.items()} == counts
    with torch.inference_mode():
        vision = blip2.model.vision_model(pixel_values=blip2.prepare(samples)["pixel_values"],
                                          output_hidden_states=True)
    for ours, theirs in zip(trace.hidden["image"], vision.hidden_states):
        torch.testing.assert_close(ours, theirs)
    side = blip2.model.config.vision_config.image_size // blip2.model.config.vision_config.patch_size
    assert trace.patch_grid == (side, side) and trace.patch_offset == 1
    assert int(trace.content["image"].sum(1)[0]) == side * side
    assert trace.embeds["image"].shape == trace.embeds["text"].shape


def test_blip2_recorded_cross_shares(blip2):
    acts = record(blip2, _samples(4), 2, attentions=True)
    cross = acts.attention["cross"].share_mean
    np.testing.assert_allclose(cross[:, TEXT, IMAGE] + cross[:, TEXT, SPECIAL], 1.0, atol=1e-6)
    assert np.isnan(cross[:, IMAGE, :]).all()
    # the language model's joint stream still gives the decoder's text->image share
    joint = acts.attention["joint"].share_mean
    assert np.isfinite(joint[:, TEXT, IMAGE]).all() and (joint[:, TEXT, IMAGE] > 0).all()


def test_saved_blip2_runs_the_suite(pytester):
    doc, _ = run_saved(pytester, "tiny-blip-2")
    assert doc["model"]["family"] == "blip-2"
    results = doc["results"]
    assert not [r for r in results if r["status"] == "error"]
    for check in ("cone.final", "gap.norm", "attention.share", "attention.image_use", "attention.entropy"):
        assert any(r["status"] != "skip" and r["value"] is not None for r in results if r["check"] == check), check
    assert all(r["message"] for r in results if r["status"] == "skip")


def test_instructblip_cross_stream_reads_the_instruction_aware_qformer():
    from mmdiag.models.blip2 import Blip2Adapter

    adapter = load_adapter("random:tiny-instructblip", "cpu", "fp32", 0)
    assert isinstance(adapter, Blip2Adapter) and adapter.family == "instructblip"
    samples = _samples()
    adapter.output_attentions = True
    batch = adapter.prepare(samples)
    assert "qformer_input_ids" in batch["extra"]  # the Q-Former's own tokens, not aligned with the decoder's
    trace = adapter.forward(batch)
    model = adapter.model
    with torch.inference_mode():
        vision = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        query = model.query_tokens.expand(len(samples), -1, -1)
        ids = batch["extra"]["qformer_input_ids"]
        mask = torch.cat([torch.ones(query.shape[:2], dtype=torch.long), batch["extra"]["qformer_attention_mask"]], 1)
        out = model.qformer(input_ids=ids, attention_mask=mask, query_embeds=query, encoder_hidden_states=vision,
                            output_attentions=True, return_dict=True)
    n_query = model.config.num_query_tokens
    maps = trace.attention["cross"].maps
    assert len(maps) == len(out.cross_attentions)
    for square, reference in zip(maps, out.cross_attentions):
        torch.testing.assert_close(square[:, :, :n_query, n_query:], reference[:, :, :n_query])
    assert {m: len(h) for m, h in trace.hidden.items()} == adapter.layer_counts()


def test_blip2_with_an_encoder_decoder_language_model_is_a_usage_error():
    import transformers

    from mmdiag.errors import SpecError
    from mmdiag.models.blip2 import Blip2Adapter
    from mmdiag.models.vlm_families import _blip2
    from mmdiag.models.weights import fresh_model

    config, tok, processor = _blip2()
    t5 = {"model_type": "t5", "vocab_size": 512, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1,
          "num_heads": 4, "decoder_start_token_id": 0}
    config = transformers.AutoConfig.for_model("blip-2", vision_config=config.vision_config.to_dict(),
                                               qformer_config=config.qformer_config.to_dict(), text_config=t5,
                                               num_query_tokens=4, image_token_index=config.image_token_index)
    assert not config.use_decoder_only_language_model
    model = fresh_model(transformers.Blip2ForConditionalGeneration, config)
    with pytest.raises(SpecError, match="encoder-decoder"):
        Blip2Adapter(model, tok, processor, None, torch.device("cpu"), torch.float32)
