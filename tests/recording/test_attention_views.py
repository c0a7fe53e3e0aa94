"""Cross-attention rectangles and padded tower maps give the sums their squares would (mmdiag.models.attention_views).

The recorder reduces a cross stream's ``(B, H, Q, N)`` maps (``ShareAccumulator.update_cross``) and Mllama's
padded vision maps (the padding as PAD) instead of the squares the stream promises; every statistic must be the
one the squares give.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdiag.models.attention_views import CrossMaps, GatheredMaps, square_of
from mmdiag.models.base import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, AttentionStream
from mmdiag.record import Recorder
from mmdiag.recording.attention import ShareAccumulator

SUMS = ("mass", "count", "n_queries", "mass_nosink", "count_nosink", "n_queries_nosink", "entropy", "n_sinks",
        "n_samples")


def _rect(seed: int, batch: int, heads: int, q: int, n: int, peak: float) -> tuple:
    """Row-stochastic (B, H, Q, N) maps (``peak`` sharpens them: sinks), query and key groups with padding."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, heads, q, n, generator=g) * peak
    gk = torch.randint(-1, 3, (batch, n), generator=g)
    gk[:, 0] = GROUP_SPECIAL
    logits = logits.masked_fill((gk == GROUP_PAD)[:, None, None, :], -30.0)
    a = torch.softmax(logits, -1)
    gq = torch.randint(0, 3, (batch, q), generator=g)
    gq[:, -1] = GROUP_PAD  # a padding query: its row may be NaN (SDPA gives NaN for fully masked rows)
    a[:, :, -1] = float("nan") if seed % 2 else a[:, :, -1]
    return a, gq, gk


def _sums(acc: ShareAccumulator) -> dict:
    return {name: getattr(acc, name).clone() for name in SUMS}


def _assert_same(ours: dict, theirs: dict) -> None:
    for name in SUMS:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-6, atol=1e-9, msg=name)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.sampled_from([0.5, 3.0, 12.0]),
       st.booleans(), st.integers(0, 2 ** 16))
def test_cross_rectangles_sum_as_their_squares(batch, heads, q, n, peak, shares, seed):
    """Property: update_cross(rect) adds exactly what update(square_of(rect)) adds, every sum, sinks included."""
    a, gq, gk = _rect(seed, batch, heads, q, n, peak)
    square = ShareAccumulator(n_layers=2, n_heads=heads, shares=shares)
    rect = ShareAccumulator(n_layers=2, n_heads=heads, shares=shares)
    for layer in range(2):
        square.update(layer, square_of(a), torch.cat([gq, gk], 1))
        rect.update_cross(layer, a, gq, gk)
    _assert_same(_sums(rect), _sums(square))
    ours, theirs = rect.result(), square.result()
    for field in dataclasses.fields(ours):
        np.testing.assert_allclose(getattr(ours, field.name), getattr(theirs, field.name), rtol=1e-6, atol=1e-12)


def test_cross_keeps_the_squares_seen_groups():
    """A group only among the queries counts as seen with no mass (the square's zero columns): text->text of a
    cross stream is 0, not NaN; a group nowhere stays NaN."""
    a = torch.full((1, 1, 2, 3), 1 / 3)
    gq = torch.tensor([[GROUP_TEXT, GROUP_TEXT]])
    gk = torch.tensor([[GROUP_SPECIAL, GROUP_IMAGE, GROUP_IMAGE]])
    acc = ShareAccumulator(n_layers=1, n_heads=1)
    acc.update_cross(0, a, gq, gk)
    share = acc.result().share[0, 0]
    assert share[GROUP_TEXT, GROUP_TEXT] == 0.0
    assert share[GROUP_TEXT, GROUP_IMAGE] == pytest.approx(2 / 3)
    assert share[GROUP_TEXT, GROUP_SPECIAL] == pytest.approx(1 / 3)
    assert np.isnan(share[GROUP_IMAGE]).all()


def test_cross_refuses_bad_shapes_and_nan_in_a_valid_row():
    a, gq, gk = _rect(0, 2, 2, 3, 4, 1.0)
    acc = ShareAccumulator(n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="groups"):
        acc.update_cross(0, a, gk, gq)
    with pytest.raises(ValueError, match="heads"):
        ShareAccumulator(n_layers=1, n_heads=3).update_cross(0, a, gq, gk)
    bad = a.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        acc.update_cross(0, bad, torch.zeros_like(gq), gk)


def test_lazy_squares_index_like_a_list():
    a, _, _ = _rect(1, 2, 2, 3, 4, 1.0)
    maps = CrossMaps([a, a * 0.5])
    assert len(maps) == 2 and maps.n_queries == 3
    torch.testing.assert_close(maps[0], square_of(a), equal_nan=True)
    assert maps[0] is maps[0] and maps[-1] is maps[1]  # built once
    assert [m.shape for m in maps] == [(2, 2, 7, 7)] * 2 and len(maps[0:1]) == 1
    with pytest.raises(IndexError):
        maps[2]
    with pytest.raises(ValueError, match="shapes"):
        CrossMaps([a, a[:, :, :2]])


@pytest.mark.parametrize("shares", [True, False])
def test_padded_maps_sum_as_the_gathered_ones(shares):
    """Mllama's vision maps: the padded (B, H, T', T') maps with the padding as PAD give the gathered maps' sums."""
    g = torch.Generator().manual_seed(3)
    tiles, per_tile, padded = 3, 5, 8
    keep = (torch.arange(tiles)[:, None] * padded + torch.arange(per_tile)[None, :]).reshape(-1)
    width = tiles * padded
    pad = torch.ones(width, dtype=torch.bool)
    pad[keep] = False
    logits = torch.randn(2, 4, width, width, generator=g) * 4
    raw = torch.softmax(logits.masked_fill(pad[None, None, None, :], -1e9), -1)
    groups = torch.randint(0, 3, (2, keep.numel()), generator=g)
    groups[1, -per_tile:] = GROUP_PAD  # an unused tile
    maps = GatheredMaps([raw, raw.flip(-2)], keep)
    blocks = GatheredMaps([raw, raw.flip(-2)], keep, (tiles, padded, per_tile))
    torch.testing.assert_close(maps[0], raw[:, :, keep][:, :, :, keep], rtol=0, atol=0)
    torch.testing.assert_close(blocks[1], maps[1], rtol=0, atol=0)
    gathered = ShareAccumulator(n_layers=2, n_heads=4, shares=shares)
    gathered.update_layers([maps[0], maps[1]], groups)
    padded_acc = ShareAccumulator(n_layers=2, n_heads=4, shares=shares)
    padded_acc.update_layers(maps.raw, maps.padded_groups(groups))
    _assert_same(_sums(padded_acc), _sums(gathered))
    # what the recorder reduces: 8/5 padding -> the gathered squares; nearly no padding -> the padded maps
    chosen, chosen_groups = blocks.for_reduction(groups)
    assert chosen[0].shape[-1] == keep.numel() and chosen_groups is groups
    few = GatheredMaps([raw], torch.arange(width - 1))
    chosen, chosen_groups = few.for_reduction(torch.zeros((2, width - 1), dtype=torch.long))
    assert chosen[0] is raw and int(chosen_groups[0, -1]) == GROUP_PAD
    with pytest.raises(ValueError, match="blocks"):
        GatheredMaps([raw], keep, (tiles, padded, per_tile + 1))


@pytest.mark.parametrize("shares", [True, False])
def test_batch_slices_sum_as_the_whole_batch(monkeypatch, shares):
    """On CPU the maps are reduced in slices of the batch; the sums are the whole batch's (float64 rounding)."""
    import mmdiag.recording.attention as attention

    a, gq, gk = _rect(4, 5, 3, 4, 6, 3.0)
    square, groups = square_of(a), torch.cat([gq, gk], 1)
    whole = ShareAccumulator(n_layers=1, n_heads=3, shares=shares)
    whole.update(0, square, groups)
    whole_cross = ShareAccumulator(n_layers=1, n_heads=3, shares=shares)
    whole_cross.update_cross(0, a, gq, gk)
    monkeypatch.setattr(attention, "CPU_SLICE", square[0].numel() * 2)  # slices of 2, 2 and 1 samples
    assert len(list(attention._slices(square, groups))) == 3
    sliced = ShareAccumulator(n_layers=1, n_heads=3, shares=shares)
    sliced.update(0, square, groups)
    sliced_cross = ShareAccumulator(n_layers=1, n_heads=3, shares=shares)
    sliced_cross.update_cross(0, a, gq, gk)
    for ours, theirs in ((sliced, whole), (sliced_cross, whole_cross), (sliced_cross, whole)):
        for name in SUMS:
            torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=1e-12, atol=1e-12)


def _materialised(trace):
    """The trace with every stream's maps built as plain squares (the layout before the lazy views)."""
    out = dataclasses.replace(trace, attention={
        name: AttentionStream([m for m in s.maps], s.groups, s.causal, s.grounding) for name, s in trace.attention.items()})
    return out


@pytest.mark.parametrize("preset", ["tiny-mllama", "tiny-blip-2"])
def test_recorded_values_equal_the_squares(preset):
    """On the cross-attention presets the recorder's statistics from the views equal those from the squares."""
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.models.load import load_adapter

    adapter = load_adapter(f"random:{preset}", "cpu", "fp32", 0)
    adapter.output_attentions = True
    samples = make_synthetic(6, seed=0, image_size=64)
    lazy, squares = Recorder(adapter.layer_counts()), Recorder(adapter.layer_counts())
    for start in (0, 3):
        trace = adapter.forward(adapter.prepare(samples[start:start + 3]))
        assert any(isinstance(s.maps, (CrossMaps, GatheredMaps)) for s in trace.attention.values())
        lazy.add(trace)
        squares.add(_materialised(trace))
    ours, theirs = lazy.finish().attention, squares.finish().attention
    assert set(ours) == set(theirs) and "cross" in ours
    for stream in ours:
        for field in dataclasses.fields(ours[stream]):
            np.testing.assert_allclose(getattr(ours[stream], field.name), getattr(theirs[stream], field.name),
                                       rtol=1e-6, atol=1e-12, err_msg=f"{stream}.{field.name}")
