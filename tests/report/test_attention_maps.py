"""Attention drawn over the image: mmdiag.analyses.attention_maps and its report section."""
from __future__ import annotations

import base64
import copy
import io
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.analyses.attention_maps import ExampleMaps, example_maps
from mmdiag.analyses.thumbnails import thumbnail_uri
from mmdiag.analyses.word_attention import (cls_to_patch, joint_word_ids, pick_layers, pool_grid, select_words,
                                            word_to_patch)
from mmdiag.models.base import GROUP_IMAGE as IMAGE, GROUP_PAD as PAD, GROUP_SPECIAL as SPECIAL, GROUP_TEXT as TEXT
from mmdiag.report import figures as plots
from mmdiag.report.html import render_html

XSS = "<script>alert(1)</script>"
NETWORK_REF = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""", re.I)
ROUNDING = 2e-3  # float16 + 3 significant digits


# ---------------------------------------------------------------- pure helpers

def _hand_example():
    """[CLS] w0 w1a w1b [SEP] | img-CLS p00 p01 p10 p11 (2x2 grid), 2 heads."""
    groups = torch.tensor([SPECIAL, TEXT, TEXT, TEXT, SPECIAL, SPECIAL, IMAGE, IMAGE, IMAGE, IMAGE])
    word_ids = torch.tensor([-1, 0, 1, 1, -1])  # the text slice (first 5 positions)
    attn = torch.full((2, 10, 10), 0.1)
    attn[:, 2:4] = 0.0
    attn[:, 2:4, 7] = 1.0  # both sub-words of word 1, both heads: all mass on patch (0, 1)
    attn[0, 1] = 0.0
    attn[0, 1, 6] = 1.0    # word 0: head 0 on patch (0, 0), head 1 uniform (0.1 everywhere)
    return attn, groups, word_ids


def test_word_to_patch_hand_example():
    attn, groups, word_ids = _hand_example()
    wids = joint_word_ids(groups, word_ids)
    assert wids.tolist() == [-1, 0, 1, 1, -1, -1, -1, -1, -1, -1]
    out = word_to_patch(attn, groups, wids, (2, 2))
    assert out.shape == (2, 4)
    assert torch.allclose(out[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # one-hot on patch (0, 1)
    assert torch.allclose(out[0], torch.tensor([0.55, 0.05, 0.05, 0.05]))  # (1 + 0.1) / 2, 0.1 / 2
    assert torch.allclose(word_to_patch(attn[:1], groups, wids, (2, 2))[0], torch.tensor([1.0, 0, 0, 0]))


def test_word_to_patch_takes_the_last_image_tokens_as_the_grid():
    # LLaVA "full": an image CLS that is an IMAGE token comes first
    attn, groups, word_ids = _hand_example()
    groups = groups.clone()
    groups[5] = IMAGE
    attn = attn.clone()
    attn[:, 2:4, 5] = 0.5
    attn[:, 2:4, 7] = 0.5
    out = word_to_patch(attn, groups, joint_word_ids(groups, word_ids), (2, 2))
    assert torch.allclose(out[1], torch.tensor([0.0, 0.5, 0.0, 0.0]))
    assert word_to_patch(attn, groups, joint_word_ids(groups, word_ids), None).shape == (2, 5)
    with pytest.raises(ValueError, match="patch grid"):
        word_to_patch(attn, groups, joint_word_ids(groups, word_ids), (3, 3))


def test_joint_word_ids_checks_the_alignment():
    _, groups, _ = _hand_example()
    with pytest.raises(ValueError, match="cannot align"):
        joint_word_ids(groups, torch.tensor([-1, 0, 1, -1, -1]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(0, 3), min_size=1, max_size=6), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_word_to_patch_matches_a_loop(heads, pieces, rows, cols, seed):
    # pieces[w] sub-word tokens for word w (0 = the word lost its tokens)
    rng = np.random.default_rng(seed)
    wids = [w for w, n in enumerate(pieces) for _ in range(n)]
    n_img = rows * cols
    groups = [SPECIAL] + [TEXT] * len(wids) + [PAD] + [SPECIAL] + [IMAGE] * n_img
    T = len(groups)
    logits = rng.normal(size=(heads, T, T)) * 2
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    joint = np.full(T, -1)
    joint[1:1 + len(wids)] = wids
    if not wids:
        return
    out = word_to_patch(torch.tensor(attn), torch.tensor(groups), torch.tensor(joint), (rows, cols)).numpy()
    n_words = max(wids) + 1
    keys = [i for i, g in enumerate(groups) if g == IMAGE]
    assert out.shape == (n_words, n_img)
    for w in range(n_words):
        queries = [i for i in range(T) if joint[i] == w]
        if not queries:
            assert np.isnan(out[w]).all()
            continue
        expect = np.mean([[attn[h, q, k] for k in keys] for h in range(heads) for q in queries], axis=0)
        np.testing.assert_allclose(out[w], expect, rtol=1e-5, atol=1e-7)
        assert out[w].sum() <= 1 + 1e-5


def test_cls_to_patch_cls_row_and_mean_without_cls():
    attn = torch.softmax(torch.randn(3, 5, 5), -1)
    with_cls = torch.tensor([SPECIAL, IMAGE, IMAGE, IMAGE, IMAGE])
    vec, kind = cls_to_patch(attn, with_cls, (2, 2))
    assert kind == "cls->patch" and torch.allclose(vec, attn.mean(0)[0, 1:])
    no_cls = torch.tensor([IMAGE, IMAGE, IMAGE, IMAGE, PAD])
    vec, kind = cls_to_patch(attn, no_cls, (2, 2))
    assert kind == "mean->patch" and torch.allclose(vec, attn.mean(0)[:4, :4].mean(0))


def test_pool_grid_sums_blocks_and_keeps_mass():
    maps = torch.arange(16, dtype=torch.float32).reshape(1, 16)
    pooled, grid = pool_grid(maps, (4, 4), 4)
    assert grid == (2, 2)
    assert pooled.tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    same, grid = pool_grid(maps, (4, 4), 16)
    assert grid == (4, 4) and same is maps
    x = torch.rand(3, 27 * 27)
    pooled, grid = pool_grid(x, (27, 27), 256)  # partial edge blocks
    assert grid[0] * grid[1] <= 256 and pooled.shape == (3, grid[0] * grid[1])
    assert torch.allclose(pooled.sum(1), x.sum(1), rtol=1e-5)


def test_pick_layers_and_select_words():
    assert pick_layers(3) == [1, 2, 3] and pick_layers(12) in ([1, 6, 12], [1, 7, 12]) and pick_layers(0) == []
    words = ["a", "big", "red", "circle", "is", "above", "a", "red", "square", "."]
    upos = ["DET", "ADJ", "ADJ", "NOUN", "AUX", "ADP", "DET", "ADJ", "NOUN", "PUNCT"]
    assert select_words(words, upos, 8) == [0, 1, 2, 3, 4, 5, 8, 9]  # content first, 'a'/'red' once, fill up
    assert select_words(words, upos, 3) == [1, 2, 3]
    assert select_words(words, None, 4) == [1, 2, 3, 8]  # stop words skipped without a tree


def test_thumbnail_is_the_model_view():
    from PIL import Image

    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 50, 100))  # left quarter blue: cut by a centre crop
    crop = _png(thumbnail_uri(img, 96, ("crop", (224, 224))))
    assert crop.size == (96, 96) and np.asarray(crop)[:, :10, 2].max() < 50
    resized = _png(thumbnail_uri(img, 96, ("resize", (224, 224))))
    assert resized.size == (96, 96) and np.asarray(resized)[:, :10, 2].min() > 200
    assert _png(thumbnail_uri(img, 96)).size == (96, 48)
    assert thumbnail_uri("not an image") is None


def _png(uri):
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


# ---------------------------------------------------------------- real traces

@pytest.fixture(scope="module")
def samples():
    from mmdiag.data.synthetic import make_synthetic

    return make_synthetic(2)


def _trace(spec, samples):
    from mmdiag.models.load import load_adapter

    adapter = load_adapter(spec, "cpu")
    adapter.output_attentions = True
    return adapter, adapter.forward(adapter.prepare(samples))


@pytest.fixture(scope="module")
def vilt(samples):
    return _trace("random:tiny-vilt", samples)


def test_vilt_word_maps(vilt, samples):
    adapter, trace = vilt
    collector = ExampleMaps.for_adapter(adapter, head=1)
    collector.update(trace, samples)
    result = json.loads(json.dumps(collector.result(), allow_nan=False))
    assert result["head"] == 1 and result["skipped"] == [] and len(result["examples"]) == 2
    groups = trace.attention["joint"].groups
    for b, (ex, sample) in enumerate(zip(result["examples"], samples)):
        assert ex["kind"] == "word->patch" and ex["stream"] == "joint" and ex["grid"] == [4, 4]
        assert ex["uid"] == sample.uid and ex["caption"] == sample.caption
        assert ex["layers"] == [1, 2, 3] and set(ex["maps"]) == set(ex["maps_head"]) == {"1", "2", "3"}
        assert 0 < len(ex["words"]) <= 8 and ex["words"] == [sample.words[i] for i in ex["word_index"]]
        assert _png(ex["thumbnail"]).size == (96, 96)
        # independent computation: the word's token rows in the joint map, image columns
        text_pos = [i for i in range(trace.word_ids.shape[1]) if trace.word_ids[b, i] >= 0]
        image_pos = [i for i in range(groups.shape[1]) if groups[b, i] == IMAGE]
        for layer in ex["layers"]:
            rows = np.array(ex["maps"][str(layer)], dtype=float)
            assert rows.shape == (len(ex["words"]), 16)
            assert (rows >= 0).all() and (rows.sum(1) <= 1 + ROUNDING).all()
            attn = trace.attention["joint"].maps[layer - 1][b].numpy()
            for j, w in enumerate(ex["word_index"]):
                queries = [q for q in text_pos if int(trace.word_ids[b, q]) == w]
                expect = attn[:, queries][:, :, image_pos].mean(axis=(0, 1))
                np.testing.assert_allclose(rows[j], expect, rtol=5e-3, atol=1e-4)
                head = attn[1][queries][:, image_pos].mean(0)
                np.testing.assert_allclose(ex["maps_head"][str(layer)][j], head, rtol=5e-3, atol=1e-4)


def test_only_the_first_k_samples_are_kept(vilt, samples):
    adapter, trace = vilt
    collector = ExampleMaps(k=1)
    collector.update(trace, samples)
    collector.update(trace, samples)
    result = collector.result()
    assert [e["uid"] for e in result["examples"]] == [samples[0].uid]
    assert "maps_head" not in result["examples"][0] and result["head"] is None
    with pytest.raises(ValueError, match="head 9"):
        ExampleMaps(head=9).update(trace, samples)


def test_misaligned_sample_is_skipped_not_fatal(vilt, samples):
    adapter, trace = vilt
    bad = copy.copy(trace)
    bad.word_ids = trace.word_ids.clone()
    bad.word_ids[0, 1] = -1  # one TEXT token loses its word
    collector = ExampleMaps()
    collector.update(bad, samples)
    result = collector.result()
    assert [e["uid"] for e in result["examples"]] == [samples[1].uid]
    assert result["skipped"][0].startswith(samples[0].uid) and "align" in result["skipped"][0]


@pytest.mark.parametrize("spec,kind", [("random:tiny-clip", "cls->patch"), ("random:tiny-siglip", "mean->patch")])
def test_dual_encoders_give_tower_maps(spec, kind, samples):
    adapter, trace = _trace(spec, samples)
    collector = ExampleMaps.for_adapter(adapter, head=0)
    collector.update(trace, samples)
    result = json.loads(json.dumps(collector.result(), allow_nan=False))
    assert len(result["examples"]) == 2
    for b, ex in enumerate(result["examples"]):
        assert ex["kind"] == kind and ex["stream"] == "image" and ex["grid"] == [4, 4] and ex["words"] == []
        for layer in ex["layers"]:
            vec = np.array(ex["maps"][str(layer)])
            attn = trace.attention["image"].maps[layer - 1][b].numpy().mean(0)
            expect = attn[0, 1:] if kind == "cls->patch" else attn.mean(0)
            np.testing.assert_allclose(vec, expect, rtol=5e-3, atol=1e-4)
            assert vec.sum() <= 1 + ROUNDING
            if kind == "mean->patch":  # no CLS: every row's mass is on the patches
                assert vec.sum() == pytest.approx(1.0, abs=ROUNDING * 4)


def test_example_maps_runs_one_small_pass(samples):
    from mmdiag.models.load import load_adapter

    adapter = load_adapter("random:tiny-vilt", "cpu")
    result = example_maps(adapter, samples, k=1)
    assert len(result["examples"]) == 1 and adapter.output_attentions is False


# ---------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def series(vilt, samples):
    collector = ExampleMaps(head=1)
    collector.update(vilt[1], samples)
    return json.loads(json.dumps(collector.result()))


def _doc(entry):
    return {"schema": "mmdiag/1", "model": {"spec": "random:tiny-vilt"}, "series": {"attention_image": entry}}


def test_report_draws_the_section_offline_and_escaped(series):
    entry = copy.deepcopy(series)
    entry["examples"][0]["words"][0] = XSS
    entry["examples"][1]["caption"] = XSS
    html = render_html(_doc(entry))
    assert 'id="plot-attention-image"' in html and 'id="attention-over-image"' in html
    assert '<section id="family-attention"' in html
    section = html[html.index('id="attention-over-image"'):]
    assert section.count('data-plot="attention-image"') == 2
    assert XSS not in html and "&lt;script&gt;" in html
    assert not NETWORK_REF.search(html) and "http://" not in html and "https://" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert not [i for i, n in Counter(ids).items() if n > 1]
    refs = set(re.findall(r'href="#([^"]+)"', html)) | set(re.findall(r"url\(#([^)]+)\)", html))
    assert refs and refs <= set(ids)
    n_words = len(entry["examples"][0]["words"])
    # words x (3 layers + 3 head rows) heat overlays for example 0
    first = section[:section.index('data-example="1"')]
    assert first.count('style="image-rendering:pixelated"') == n_words * 6
    assert ">L2 h1<" in first


def test_report_without_the_series_has_no_section(series):
    assert "attention-over-image" not in render_html({"schema": "mmdiag/1", "series": {}})
    for junk in (None, {}, [], "x", {"examples": None}, {"examples": [None, {"grid": "x"}, {"grid": [2, 2]}]},
                 {"examples": [{"grid": [1, 1], "kind": "word->patch", "words": [], "maps": {"1": [[0.5]]}}]}):
        assert plots.attention_image_svg(junk) is None
        assert "attention-over-image" not in render_html(_doc(junk))


def test_report_drops_a_thumbnail_that_is_not_inline(series):
    entry = copy.deepcopy(series)
    for ex in entry["examples"]:
        ex["thumbnail"] = "https://example.org/x.png"
    entry["examples"][1]["thumbnail"] = 'data:image/png;base64,AAAA" onload="alert(1)'
    html = plots.attention_image_svg(entry)
    assert html is not None and "example.org" not in html and "onload" not in html
    assert "<use" not in html and "<rect" in html  # grey placeholders instead


def test_report_heat_marks_the_attended_cell():
    one_hot = [0.0] * 16
    one_hot[5] = 0.9
    uniform = [1 / 16] * 16
    entry = {"examples": [{"uid": "u", "caption": "c", "words": ["dog", "cat"], "grid": [4, 4],
                           "kind": "word->patch", "layers": [1], "maps": {"1": [one_hot, uniform]}}], "head": None}
    html = plots.attention_image_svg(entry)
    uris = re.findall(r'<image href="(data:image/png;base64,[^"]+)"', html)
    assert len(uris) == 2
    hot, flat = (np.asarray(_png(u)) for u in uris)
    assert hot.shape == (4, 4, 4)
    alpha = hot[..., 3].reshape(-1)
    assert alpha[5] > 150 and np.delete(alpha, 5).max() == 0  # only the attended patch
    assert flat[..., 3].max() == 0  # uniform attention: no heat
    assert "Σ 0.90" in html and "Σ 1.00" in html


def test_report_draws_region_boxes():
    entry = {"examples": [{"uid": "u", "caption": "c", "words": ["dog"], "grid": [1, 2], "kind": "word->region",
                           "layers": [1], "maps": {"1": [[0.2, 0.7]]}, "boxes": [[0, 0, 1, 1], [0.1, 0.2, 0.5, 0.6]]}]}
    html = plots.attention_image_svg(entry)
    assert html is not None and html.count('stroke-width="1.2"') == 2 and "pixelated" not in html


def test_default_tiny_report_size_impact(series):
    base = render_html({"schema": "mmdiag/1", "series": {}})
    with_maps = render_html(_doc(series))
    assert len(with_maps) - len(base) < 150_000
    assert len(json.dumps(series)) < 60_000


def test_heat_is_one_scale_for_every_panel():
    # the same cell at 4x the uniform share is drawn at the same heat whatever else the panel holds
    a = np.full(16, 0.5 / 15)
    a[3] = 0.25  # 4x the mean (1/16)
    b = np.full(16, 1 / 16)
    b[3], b[4] = 0.25, 1 / 16 - (0.25 - 1 / 16)  # also 4x at cell 3, one cell below the mean
    ha, hb = plots.attention.__dict__["_contrast"](a), plots.attention.__dict__["_contrast"](b)
    assert ha[3] == pytest.approx(1.0) and hb[3] == pytest.approx(1.0)
    half = np.array([2.5, 0.0, 0.5] + [1.0] * 13)  # mean 1; cell 0 at 2.5x: the middle of the scale
    assert plots.attention.__dict__["_contrast"](half)[0] == pytest.approx(0.5)
    html = plots.attention_image_svg({"examples": [{"uid": "u", "words": ["w"], "grid": [4, 4], "kind": "word->patch",
                                                    "layers": [1], "maps": {"1": [a.tolist()]}}]})
    assert 'class="heat-legend"' in html and "1× (uniform)" in html
