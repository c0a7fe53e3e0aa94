"""Attention grounding metrics (mmdiag.metrics.grounding) against brute-force references."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.metrics.grounding import (
    attention_heatmap,
    chance_level,
    grounding_share,
    phrase_grounding,
    region_heatmap,
)
from mmdiag.models.base import PhraseMasks
from mmdiag.models.regions import phrase_query_mask, place_key_masks
from mmdiag.recording.grounding import GroundingAccumulator, update_from_trace

FAST = settings(max_examples=30, deadline=None)


def _reference_share(a: np.ndarray, mask: np.ndarray) -> float:
    """Direct loop: per row, in-box mass over total mass; mean over rows with mass."""
    shares = []
    for row in a:
        total = sum(row)
        if total > 0:
            shares.append(sum(w for w, m in zip(row, mask) if m) / total)
    return float(np.mean(shares)) if shares and mask.any() else float("nan")


def test_all_mass_in_box_gives_one():
    mask = torch.tensor([False, True, True, False, False])
    attn = torch.tensor([[0.0, 0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0, 0.0]])
    assert grounding_share(attn, mask) == pytest.approx(1.0)


def test_uniform_attention_gives_area_fraction():
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[0, 3, 7]] = True
    attn = torch.full((4, 12), 1 / 12)
    assert chance_level(mask) == pytest.approx(3 / 12)
    assert grounding_share(attn, mask) == pytest.approx(3 / 12)


def test_no_mass_outside_gives_zero_and_degenerate_cases_nan():
    mask = torch.tensor([True, False])
    assert grounding_share(torch.tensor([[0.0, 1.0]]), mask) == 0.0
    assert math.isnan(grounding_share(torch.zeros(2, 2), mask))
    assert math.isnan(grounding_share(torch.ones(2, 2), torch.zeros(2, dtype=torch.bool)))
    with pytest.raises(ValueError):
        grounding_share(torch.ones(2, 3), mask)
    with pytest.raises(ValueError):
        grounding_share(torch.tensor([[-0.1, 1.1]]), mask)


@st.composite
def _attn_and_mask(draw):
    q = draw(st.integers(1, 4))
    k = draw(st.integers(1, 8))
    vals = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=q * k, max_size=q * k))
    bits = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    return np.array(vals, dtype=np.float64).reshape(q, k), np.array(bits)


@FAST
@given(_attn_and_mask(), st.randoms(use_true_random=False))
def test_share_matches_reference_is_bounded_and_permutation_invariant(am, rnd):
    a, mask = am
    value = grounding_share(torch.from_numpy(a), torch.from_numpy(mask))
    ref = _reference_share(a, mask)
    if math.isnan(ref):
        assert math.isnan(value)
        return
    assert value == pytest.approx(ref, abs=1e-12)
    assert -1e-12 <= value <= 1 + 1e-12
    perm = list(range(a.shape[1]))
    rnd.shuffle(perm)
    permuted = grounding_share(torch.from_numpy(a[:, perm]), torch.from_numpy(mask[perm]))
    assert permuted == pytest.approx(value, abs=1e-12)
    # rows are renormalised: scaling a row changes nothing
    scaled = a * np.arange(1, a.shape[0] + 1)[:, None]
    assert grounding_share(torch.from_numpy(scaled), torch.from_numpy(mask)) == pytest.approx(value, abs=1e-12)


def test_attention_heatmap_reshapes_row_major_and_normalises():
    row = torch.arange(6, dtype=torch.float32)
    heat = attention_heatmap(row, (2, 3))
    assert heat.shape == (2, 3)
    np.testing.assert_allclose(heat, np.arange(6).reshape(2, 3) / 15)
    assert attention_heatmap(torch.zeros(4), (2, 2)).sum() == 0
    with pytest.raises(ValueError):
        attention_heatmap(row, (2, 2))


def _raster_heatmap(weights, boxes, size):
    """Pixel-level reference for integer boxes on a size x size image, output at full resolution."""
    out = np.zeros((size, size))
    for w, (x0, y0, x1, y1) in zip(weights, boxes):
        out[y0:y1, x0:x1] += w / ((x1 - x0) * (y1 - y0))
    return out / out.sum()


def test_region_heatmap_against_pixel_raster():
    boxes = [(0, 0, 8, 8), (0, 0, 4, 8), (2, 5, 7, 8)]
    weights = [0.2, 0.5, 0.3]
    heat = region_heatmap(torch.tensor(weights), boxes, (8, 8), (8, 8))
    np.testing.assert_allclose(heat, _raster_heatmap(weights, boxes, 8), atol=1e-12)
    # a coarser grid sums the same pixels: 2x2 blocks
    coarse = region_heatmap(torch.tensor(weights), boxes, (8, 8), (4, 4))
    np.testing.assert_allclose(coarse, _raster_heatmap(weights, boxes, 8).reshape(4, 2, 4, 2).sum((1, 3)),
                               atol=1e-12)
    whole = region_heatmap(torch.tensor([1.0]), [(0, 0, 10, 5)], (10, 5), (5, 10))
    np.testing.assert_allclose(whole, np.full((5, 10), 1 / 50))


def _loop_phrase_grounding(attn, masks):
    """Independent reference: per (b, h, p) call grounding_share on the sliced rows/keys."""
    B, H, T, _ = attn.shape
    P = masks.queries.shape[1]
    share = np.full((B, H, P), np.nan)
    chance = np.full((B, P), np.nan)
    for b in range(B):
        img = masks.image_keys[b]
        for p in range(P):
            keys = masks.keys[b, p][img]
            if img.any():
                chance[b, p] = keys.double().mean().item()
            q = masks.queries[b, p]
            for h in range(H):
                rows = attn[b, h][q][:, img]
                if rows.shape[0]:
                    share[b, h, p] = grounding_share(rows, keys)
    return share, chance


def _random_case(seed):
    gen = torch.Generator().manual_seed(seed)
    B, H, T, P = 3, 2, 9, 3
    attn = torch.rand(B, H, T, T, generator=gen, dtype=torch.float64)
    attn = attn / attn.sum(-1, keepdim=True)
    image = torch.zeros(B, T, dtype=torch.bool)
    image[:, 5:] = True
    image[2, 8] = False  # a padded region
    queries = torch.zeros(B, P, T, dtype=torch.bool)
    keys = torch.zeros(B, P, T, dtype=torch.bool)
    queries[:, 0, 1:3] = True
    keys[:, 0, 6] = True
    queries[:, 1, 3] = True
    keys[:, 1, 6:8] = True
    queries[0, 2, 4] = True  # phrase 2 only in sample 0, with an empty box: invalid
    attn[1, :, 3, 5:] = 0  # a query row with no image mass: phrase 1 of sample 1 has no valid row
    return attn, PhraseMasks(queries, keys, image)


def test_phrase_grounding_matches_loop_reference():
    attn, masks = _random_case(0)
    share, valid, chance = phrase_grounding(attn, masks)
    ref_share, ref_chance = _loop_phrase_grounding(attn, masks)
    np.testing.assert_allclose(share.numpy(), ref_share, atol=1e-12)
    np.testing.assert_allclose(chance.numpy(), ref_chance, atol=1e-12)
    assert valid.numpy().tolist() == (~np.isnan(ref_share)).tolist()
    assert not valid[1, :, 1].any() and not valid[0, :, 2].any()
    assert chance[2, 0].item() == pytest.approx(1 / 3)  # 3 real regions in sample 2


def test_accumulator_streams_and_merges():
    attn, masks = _random_case(1)
    whole = GroundingAccumulator(n_layers=2, n_heads=2)
    whole.update_layers([attn, attn.flip(-1)], masks)
    parts = [GroundingAccumulator(2, 2) for _ in range(3)]
    for b, acc in enumerate(parts):
        sl = slice(b, b + 1)
        sub = PhraseMasks(masks.queries[sl], masks.keys[sl], masks.image_keys[sl])
        acc.update_layers([attn[sl], attn.flip(-1)[sl]], sub)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    a, m = whole.result(), merged.result()
    for key, value in a.to_arrays().items():
        np.testing.assert_allclose(value, m.to_arrays()[key], atol=1e-12)
    share, valid, chance = phrase_grounding(attn, masks)
    ref = np.nanmean(np.where(valid.numpy(), share.numpy(), np.nan), axis=(0, 2))
    np.testing.assert_allclose(a.share[0], ref, atol=1e-12)
    above = ((share > chance[:, None, :]) & valid).sum((0, 2)).numpy() / valid.sum((0, 2)).numpy()
    np.testing.assert_allclose(a.above_chance[0], above)
    assert a.n_phrases[0].tolist() == valid.sum((0, 2)).tolist()
    np.testing.assert_allclose(a.lift_mean, a.share_mean / a.chance_mean)
    empty = GroundingAccumulator(1, 1).result()
    assert np.isnan(empty.share_mean).all()


def test_planted_grounding_is_one_and_uniform_is_chance():
    _, masks = _random_case(2)
    B, _, T = masks.queries.shape
    planted = torch.full((B, 2, T, T), 1 / T, dtype=torch.float64)
    for b in range(B):
        for p in range(masks.queries.shape[1]):
            if masks.keys[b, p].any():
                rows = masks.queries[b, p]
                planted[b, :, rows] = 0
                planted[b, :, rows.nonzero()[:, 0][:, None], masks.keys[b, p].nonzero()[:, 0]] = 1.0
    acc = GroundingAccumulator(2, 2)
    acc.update(0, planted, masks)
    acc.update(1, torch.full((B, 2, T, T), 1 / T, dtype=torch.float64), masks)
    res = acc.result()
    np.testing.assert_allclose(res.share[0], 1.0)
    np.testing.assert_allclose(res.share[1], res.chance[1])
    assert res.above_chance[1].max() == 0.0


def test_mask_builders():
    word_ids = torch.tensor([[-1, 0, 1, 1, 2, -1], [-1, 0, 0, 1, -1, -1]])
    q = phrase_query_mask(word_ids, [[(0, 2), (2, 3)], [(1, 2)]], offset=1, total=9)
    assert q.shape == (2, 2, 9)
    assert q[0, 0].nonzero().flatten().tolist() == [2, 3, 4]
    assert q[0, 1].nonzero().flatten().tolist() == [5]
    assert q[1, 0].nonzero().flatten().tolist() == [4]
    assert not q[1, 1].any()
    k = place_key_masks([torch.eye(2, dtype=torch.bool), None], offset=6, total=9)
    assert k.shape == (2, 2, 9)
    assert k[0, 0].nonzero().flatten().tolist() == [6] and k[0, 1].nonzero().flatten().tolist() == [7]
    assert not k[1].any()


def test_update_from_trace_reads_grounding_streams():
    from mmdiag.models.base import AttentionStream, Trace

    attn, masks = _random_case(3)
    groups = torch.zeros(attn.shape[0], attn.shape[-1], dtype=torch.long)
    trace = Trace(hidden={}, mask={}, pool_index={}, content={})
    trace.attention["joint"] = AttentionStream([attn, attn], groups, grounding=masks)
    trace.attention["absent"] = AttentionStream([], groups, grounding=masks)  # phrase masks but no maps
    trace.attention["plain"] = AttentionStream([attn], groups)  # maps but no phrase masks
    accs: dict = {}
    update_from_trace(accs, trace)
    update_from_trace(accs, Trace(hidden={}, mask={}, pool_index={}, content={}))  # nothing to add
    assert set(accs) == {"joint"} and accs["joint"].n_layers == 2
    direct = GroundingAccumulator(2, 2)
    direct.update_layers([attn, attn], masks)
    np.testing.assert_allclose(accs["joint"].result().share, direct.result().share)
