"""Tests for mmdiag.metrics.attention (row-normalised attention mass shares)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy

from mmdiag.errors import SpecError
from mmdiag.metrics.attention import (
    DIRECTIONS,
    GROUP_NAMES,
    N_GROUPS,
    attention_sinks,
    direction_index,
    modality_mass,
    modality_shares,
    row_entropy,
)
from mmdiag.models.base import GROUP_IMAGE as IMAGE, GROUP_PAD as PAD, GROUP_SPECIAL as SPECIAL, GROUP_TEXT as TEXT
from mmdiag.recording.attention import ShareAccumulator

A = N_GROUPS
S, X, I, P = SPECIAL, TEXT, IMAGE, PAD
TI, TT, IT, II = (TEXT, IMAGE), (TEXT, TEXT), (IMAGE, TEXT), (IMAGE, IMAGE)


# ----------------------------------------------------------------------------- reference
def ref_stats(attn, groups, causal=False, keep=None):
    """Brute-force loops: summed mass, pair counts, row counts (H, A, A)/(H, A)."""
    attn = np.asarray(attn, dtype=np.float64)
    groups = np.asarray(groups)
    B, H, T, _ = attn.shape
    keep = np.ones((B, H, T), bool) if keep is None else np.broadcast_to(keep, (B, H, T))
    mass, count, nq = np.zeros((H, A, A)), np.zeros((H, A, A)), np.zeros((H, A))
    for b in range(B):
        for h in range(H):
            keys = [j for j in range(T) if groups[b, j] != PAD and keep[b, h, j]]
            for i in range(T):
                g = groups[b, i]
                if g == PAD:
                    continue
                w = attn[b, h, i, keys]
                s = w.sum()
                if not s > 0:
                    continue
                w = w / s
                nq[h, g] += 1
                for j, wj in zip(keys, w):
                    mass[h, g, groups[b, j]] += wj
                for c in range(A):
                    if any(groups[b, j] == c and (not causal or j <= i) for j in keys):
                        count[h, g, c] += 1
    return mass, count, nq


def ref_sinks(attn, groups, thr):
    attn = np.asarray(attn, dtype=np.float64)
    B, H, T, _ = attn.shape
    out = np.zeros((B, H, T), bool)
    for b in range(B):
        valid = np.asarray(groups[b]) != PAD
        for h in range(H):
            rows = []
            for i in range(T):
                if not valid[i]:
                    continue
                w = np.where(valid, attn[b, h, i], 0.0)
                if w.sum() > 0:
                    rows.append(w / w.sum())
            recv = np.mean(rows, axis=0) if rows else np.zeros(T)
            out[b, h] = (recv > thr) & valid
    return out


def softmax_attn(scores, groups, causal=False):
    """Masked softmax like a HF model: PAD keys (and future keys if causal) get 0."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    g = torch.as_tensor(groups)
    T = g.shape[1]
    mask = (g != PAD)[:, None, None, :].expand(-1, 1, T, -1)
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool).tril()
    s = scores.masked_fill(~mask, -1e9)
    return torch.softmax(s, dim=-1)


def uniform_attn(groups, H=1, causal=False):
    g = torch.as_tensor(groups)
    B, T = g.shape
    return softmax_attn(torch.zeros(B, H, T, T), g, causal)


@st.composite
def batches(draw, max_b=3, max_h=3, max_t=7, all_groups=False, allow_pad=True):
    B = draw(st.integers(1, max_b))
    H = draw(st.integers(1, max_h))
    T = draw(st.integers(3 if all_groups else 1, max_t))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    choices = [P, S, X, I] if allow_pad else [S, X, I]
    groups = rng.choice(choices, size=(B, T))
    if all_groups:
        for b in range(B):
            pos = rng.choice(T, size=3, replace=False)
            groups[b, pos] = [S, X, I]
    for b in range(B):  # at least one valid token per sample
        if (groups[b] == P).all():
            groups[b, rng.integers(T)] = X
    scores = torch.from_numpy(rng.normal(scale=2.0, size=(B, H, T, T)))
    return scores, torch.from_numpy(groups)


# ----------------------------------------------------------------------------- names
def test_directions_and_names():
    assert GROUP_NAMES == {0: "special", 1: "text", 2: "image"}
    assert (PAD, SPECIAL, TEXT, IMAGE) == (-1, 0, 1, 2)
    assert direction_index("text->image") == (1, 2)
    assert direction_index("image->special") == (2, 0)
    assert [direction_index(d) for d in DIRECTIONS] == [(1, 2), (1, 1), (2, 1), (2, 2), (1, 0), (2, 0)]
    for bad in ("text-image", "txt->image", "text->image->text"):
        with pytest.raises(SpecError, match="direction"):
            direction_index(bad)


# ----------------------------------------------------------------------------- closed-form cases
def test_uniform_attention_gives_group_fractions():
    groups = torch.tensor([[S, X, X, I, I, I]])
    sh = modality_shares(uniform_attn(groups, H=2), groups).numpy()
    expect_row = np.array([1, 2, 3]) / 6  # fraction of keys per group: special, text, image
    for a in range(A):
        np.testing.assert_allclose(sh[:, a, :], np.tile(expect_row, (2, 1)), atol=1e-12)
    np.testing.assert_allclose(sh.sum(-1), 1.0, atol=1e-12)


def test_padding_excluded_as_queries_and_keys():
    groups = torch.tensor([[S, X, I, I, P, P]])
    attn = torch.full((1, 1, 6, 6), 1 / 6, dtype=torch.float64)  # pad keys NOT zero: renormalised away
    attn[0, 0, 4:] = float("nan")  # pad query rows may be garbage (SDPA gives NaN)
    sh = modality_shares(attn, groups).numpy()[0]
    np.testing.assert_allclose(sh, np.tile([0.25, 0.25, 0.5], (3, 1)), atol=1e-12)
    mass, count, nq = modality_mass(attn, groups)
    np.testing.assert_array_equal(nq.numpy()[0], [1, 1, 2])  # pad rows are not queries
    # a valid query whose whole row sits on PAD keys has no valid mass: skipped everywhere
    attn2 = attn.clone()
    attn2[0, 0, 1] = 0.0
    attn2[0, 0, 1, 4:] = 0.5
    mass2, count2, nq2 = modality_mass(attn2, groups)
    np.testing.assert_array_equal(nq2.numpy()[0], [1, 0, 2])
    np.testing.assert_array_equal(count2.numpy()[0, TEXT], [0, 0, 0])
    assert torch.isnan(modality_shares(attn2, groups)[0, TEXT]).all()
    # NaN in a valid query row is an error, not silently dropped
    attn[0, 0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        modality_shares(attn, groups)


def test_all_mass_on_image_keys():
    groups = torch.tensor([[S, X, X, I, I, P]])
    attn = torch.zeros(1, 1, 6, 6)
    attn[..., 3:5] = 0.5
    sh = modality_shares(attn, groups)[0]
    assert sh[TEXT, IMAGE] == pytest.approx(1.0)
    assert sh[TEXT, TEXT] == 0 and sh[TEXT, SPECIAL] == 0
    assert sh[SPECIAL, IMAGE] == pytest.approx(1.0)


def test_special_tokens_are_their_own_group():
    groups = torch.tensor([[S, X, X, S]])  # CLS ... SEP, no image
    attn = torch.zeros(1, 1, 4, 4)
    attn[..., 0] = 0.7  # everyone attends 0.7 to CLS, 0.1 to each other token
    attn[..., 1:] = 0.1
    sh = modality_shares(attn, groups)[0].numpy()
    np.testing.assert_allclose(sh[TEXT, SPECIAL], 0.8, atol=1e-6)
    np.testing.assert_allclose(sh[TEXT, TEXT], 0.2, atol=1e-6)
    np.testing.assert_allclose(sh[SPECIAL, SPECIAL], 0.8, atol=1e-6)
    # no image anywhere: nobody can attend to it -> NaN (caller decides), not 0
    assert np.isnan(sh[:, IMAGE]).all() and np.isnan(sh[IMAGE]).all()


def test_causal_text_before_image_excluded_from_text_to_image():
    # BOS t t IMG IMG t t  (LLaVA-style: prompt text, image, more text)
    groups = torch.tensor([[S, X, X, I, I, X, X]])
    attn = uniform_attn(groups, causal=True)
    mass, count, nq = modality_mass(attn, groups, causal=True)
    assert count[0, TEXT, IMAGE] == 2  # positions 5 and 6 only
    assert count[0, TEXT, TEXT] == 4 and nq[0, TEXT] == 4
    assert count[0, IMAGE, TEXT] == 2  # image sees the prompt text
    sh = modality_shares(attn, groups, causal=True)[0]
    assert sh[TEXT, IMAGE].item() == pytest.approx((2 / 6 + 2 / 7) / 2)
    # text->text: (1/2, 2/3, 3/6, 4/7) averaged over all 4 text queries
    assert sh[TEXT, TEXT].item() == pytest.approx((1 / 2 + 2 / 3 + 3 / 6 + 4 / 7) / 4)
    # bidirectional reading of the same tensor counts all text queries
    _, count_bi, _ = modality_mass(attn, groups, causal=False)
    assert count_bi[0, TEXT, IMAGE] == 4
    # a text-first sample where no text ever follows the image: NaN text->image
    g2 = torch.tensor([[S, X, X, I, I]])
    assert torch.isnan(modality_shares(uniform_attn(g2, causal=True), g2, causal=True)[0, TEXT, IMAGE])


def test_masked_image_gives_zero_text_to_image():
    groups = torch.tensor([[S, I, I, I, X, X, X], [S, I, I, I, X, X, P]])
    scores = torch.randn(2, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    attn = softmax_attn(scores, groups)
    img = groups == IMAGE
    attn = attn.masked_fill(img[:, None, None, :], 0.0)
    attn = attn / attn.sum(-1, keepdim=True)
    sh = modality_shares(attn, groups)
    assert torch.all(sh[:, TEXT, IMAGE] == 0)  # counted (0), not NaN
    assert torch.all(sh[:, IMAGE, IMAGE] == 0)
    np.testing.assert_allclose(sh.sum(-1).numpy(), 1.0, atol=1e-12)


def test_entropy_uniform_is_log_k_and_matches_scipy():
    groups = torch.tensor([[S, X, X, I, I, P, P]])
    attn = uniform_attn(groups, H=3)
    h = row_entropy(attn, (groups != PAD)[:, None, :])
    assert torch.allclose(h[0, :, :5], torch.full((3, 5), math.log(5), dtype=h.dtype))
    acc = ShareAccumulator(n_layers=1, n_heads=3)
    acc.update(0, attn, groups)
    np.testing.assert_allclose(acc.result().entropy[0], math.log(5), atol=1e-12)
    np.testing.assert_allclose(acc.result().entropy_mean[0], math.log(5), atol=1e-12)
    # causal uniform: query i sees i+1 keys -> entropy log(i+1)
    hc = row_entropy(uniform_attn(torch.tensor([[X] * 5]), causal=True))
    np.testing.assert_allclose(hc[0, 0].numpy(), np.log(np.arange(1, 6)), atol=1e-12)
    # random rows vs scipy
    rng = np.random.default_rng(1)
    a = rng.dirichlet(np.full(9, 0.3), size=(2, 3, 4))
    keys = rng.random((2, 1, 9)) > 0.3
    keys[..., 0] = True
    got = row_entropy(torch.from_numpy(a), torch.from_numpy(keys)).numpy()
    want = scipy_entropy(np.where(keys[:, :, None, :], a, 0.0), axis=-1)
    np.testing.assert_allclose(got, want, atol=1e-10)
    # a row with no valid mass has no entropy
    z = torch.zeros(1, 1, 1, 3)
    assert torch.isnan(row_entropy(z)).all()


def test_planted_sink_column():
    T = 12
    groups = torch.tensor([[S] + [X] * 5 + [I] * 6, [S] + [X] * 3 + [I] * 6 + [P] * 2])
    gen = torch.Generator().manual_seed(3)
    attn = softmax_attn(torch.randn(2, 2, T, T, generator=gen) * 0.3, groups)
    # head 0 of sample 0: BOS (key 0) takes 0.6 of every row; head 1 has no sink
    rest = attn[0, 0, :, 1:] / attn[0, 0, :, 1:].sum(-1, keepdim=True)
    attn[0, 0, :, 0] = 0.6
    attn[0, 0, :, 1:] = 0.4 * rest
    # sample 1 head 1: an image patch (key 7) is a register-like sink, 0.5 per row
    valid1 = (groups[1] != PAD).double()
    other = attn[1, 1] * valid1
    other[:, 7] = 0
    other = other / other.sum(-1, keepdim=True)
    attn[1, 1] = 0.5 * other
    attn[1, 1, :, 7] = 0.5
    sinks = attention_sinks(attn, groups, threshold=0.3)
    want = np.zeros((2, 2, T), bool)
    want[0, 0, 0] = True
    want[1, 1, 7] = True
    np.testing.assert_array_equal(sinks.numpy(), want)
    np.testing.assert_array_equal(sinks.numpy(), ref_sinks(attn, groups, 0.3))

    acc = ShareAccumulator(n_layers=1, n_heads=2, sink_threshold=0.3)
    acc.update(0, attn, groups)
    r = acc.result()
    np.testing.assert_allclose(r.sinks_per_sample[0], [0.5, 0.5])
    # with the sink: text->special big in head 0; without it: only the rest
    assert r.share[0, 0, TEXT, SPECIAL] > 0.3
    m_ns, c_ns, _ = ref_stats(attn, groups, keep=~want)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(r.share_nosink[0], m_ns / c_ns, atol=1e-10, equal_nan=True)
    # sample 0 head 0 lost its only special key -> text->special undefined there; sample 1 counts
    assert r.count_nosink[0, 0, TEXT, SPECIAL] == 3
    # renormalised over the remaining keys, rows still sum to 1
    np.testing.assert_allclose(r.share_total_nosink[0].sum(-1), 1.0, atol=1e-12)
    # a sink-free tensor: nosink == plain
    acc2 = ShareAccumulator(n_layers=1, n_heads=2)
    plain = softmax_attn(torch.zeros(2, 2, T, T), groups)
    acc2.update(0, plain, groups)
    r2 = acc2.result()
    np.testing.assert_allclose(r2.share_nosink, r2.share, atol=1e-12)
    assert (r2.sinks_per_sample == 0).all()


# ----------------------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(batches(), st.booleans())
def test_matches_bruteforce_reference(batch, causal):
    scores, groups = batch
    attn = softmax_attn(scores, groups, causal)
    mass, count, nq = modality_mass(attn, groups, causal)
    m_ref, c_ref, n_ref = ref_stats(attn, groups, causal)
    np.testing.assert_allclose(mass.numpy(), m_ref, atol=1e-10)
    np.testing.assert_array_equal(count.numpy(), c_ref)
    np.testing.assert_array_equal(nq.numpy(), n_ref)
    # unconditional share always sums to 1 for every query group present
    tot = mass.numpy().sum(-1)
    present = n_ref > 0
    np.testing.assert_allclose(tot[present] / n_ref[present], 1.0, atol=1e-10)
    # conditional share sums to >= 1 (queries that cannot see b leave the denominator)
    sh = modality_shares(attn, groups, causal).numpy()
    sums = np.nansum(sh, -1)
    assert np.all(sums[present] >= 1 - 1e-10)
    # the accumulator's sink detection matches the brute-force definition
    np.testing.assert_array_equal(attention_sinks(attn, groups, 0.3).numpy(),
                                  ref_sinks(attn, groups, 0.3))


@settings(max_examples=30, deadline=None)
@given(batches(all_groups=True))
def test_bidirectional_shares_sum_to_one(batch):
    scores, groups = batch
    attn = softmax_attn(scores, groups).float()  # float32 path too
    sh = modality_shares(attn, groups).numpy()
    present = np.array([bool((groups == a).any()) for a in range(A)])
    np.testing.assert_allclose(sh[:, present].sum(-1), 1.0, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(batches(), st.booleans(), st.integers(0, 2**31 - 1))
def test_batch_order_invariance(batch, causal, seed):
    scores, groups = batch
    attn = softmax_attn(scores, groups, causal)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(groups.shape[0]))
    acc1 = ShareAccumulator(n_layers=1, n_heads=attn.shape[1])
    acc2 = ShareAccumulator(n_layers=1, n_heads=attn.shape[1])
    acc1.update(0, attn, groups, causal)
    acc2.update(0, attn[perm], groups[perm], causal)
    r1, r2 = acc1.result().to_arrays(), acc2.result().to_arrays()
    assert r1.keys() == r2.keys()
    for k in r1:
        np.testing.assert_allclose(r1[k], r2[k], atol=1e-12, equal_nan=True, err_msg=k)


@settings(max_examples=25, deadline=None)
@given(batches(max_b=4), st.booleans(), st.integers(1, 3))
def test_merge_equals_concatenated_batch(batch, causal, split):
    scores, groups = batch
    attn = softmax_attn(scores, groups, causal)
    H = attn.shape[1]
    split = min(split, groups.shape[0])
    whole = ShareAccumulator(n_layers=2, n_heads=H)
    part1, part2 = ShareAccumulator(n_layers=2, n_heads=H), ShareAccumulator(n_layers=2, n_heads=H)
    for layer, x in enumerate((attn, attn.flip(-1).clamp_min(0))):  # two distinct layers
        x = x / x.sum(-1, keepdim=True).clamp_min(1e-300)
        whole.update(layer, x, groups, causal)
        part1.update(layer, x[:split], groups[:split], causal)
        if split < groups.shape[0]:
            part2.update(layer, x[split:], groups[split:], causal)
    merged = part1.merge(part2)
    rw, rm = whole.result(), merged.result()
    for k, v in rw.to_arrays().items():
        np.testing.assert_allclose(rm.to_arrays()[k], v, atol=1e-12, equal_nan=True, err_msg=k)
    # and the accumulator equals the pure per-batch function
    mass, count, _ = modality_mass(attn, groups, causal)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(rw.share[0], mass.numpy() / count.numpy(), equal_nan=True)


def test_accumulator_streams_batches_of_different_length():
    g1 = torch.tensor([[S, X, X, I, I]])
    g2 = torch.tensor([[S, X, I, I, I, I, P]])
    a1, a2 = uniform_attn(g1, H=2), uniform_attn(g2, H=2)
    acc = ShareAccumulator(n_layers=1, n_heads=2)
    acc.update(0, a1, g1)
    acc.update(0, a2, g2)
    r = acc.result()
    # text queries: 2 with share 2/5 on image, 1 with share 4/6
    np.testing.assert_allclose(r.share[0, :, TEXT, IMAGE], (2 * 2 / 5 + 4 / 6) / 3)
    np.testing.assert_allclose(r.share_mean[0, TEXT, IMAGE], (2 * 2 / 5 + 4 / 6) / 3)
    np.testing.assert_array_equal(r.n_samples, [2])
    assert r.share.shape == (1, 2, 3, 3) and r.entropy.shape == (1, 2, 3)
    assert r.share_mean.shape == (1, 3, 3) and r.count.shape == (1, 2, 3, 3)


def test_accumulator_dtypes_and_errors():
    groups = torch.tensor([[S, X, I, I]])
    attn = uniform_attn(groups, H=2)
    acc = ShareAccumulator(n_layers=2, n_heads=2)
    acc.update(1, attn.to(torch.bfloat16), groups)  # bf16 from the model: computed in fp32
    r = acc.result()
    np.testing.assert_allclose(r.share[1, :, TEXT], [[0.25, 0.25, 0.5]] * 2, atol=1e-6)
    assert np.isnan(r.share[0]).all() and np.isnan(r.entropy[0]).all()  # layer 0 unseen
    assert acc.mass.dtype == torch.float64 and acc.mass.device == attn.device
    with pytest.raises(ValueError, match="layer"):
        acc.update(2, attn, groups)
    with pytest.raises(ValueError, match="heads"):
        acc.update(0, attn[:, :1], groups)
    with pytest.raises(ValueError, match="groups"):
        acc.update(0, attn, groups[:, :3])
    with pytest.raises(ValueError, match="groups"):
        acc.update(0, attn, torch.tensor([[S, X, 5, I]]))
    with pytest.raises(ValueError):
        acc.merge(ShareAccumulator(n_layers=2, n_heads=2, sink_threshold=0.5))
    empty = ShareAccumulator(n_layers=2, n_heads=2).merge(acc)
    np.testing.assert_allclose(empty.result().share, r.share, equal_nan=True)
    assert np.isnan(ShareAccumulator(n_layers=1, n_heads=1).result().share).all()


@settings(max_examples=30, deadline=None)
@given(batches())
def test_entropy_only_accumulator_matches_the_full_one(batch):
    """shares=False (a single-modality tower) keeps the entropies and row counts of the full accumulator."""
    scores, groups = batch
    attn = torch.softmax(scores, -1)
    attn = attn.masked_fill((groups == P)[:, None, None, :], 0.0)  # no mass on PAD keys, as a padded softmax
    full, ent = ShareAccumulator(n_layers=1, n_heads=attn.shape[1]), ShareAccumulator(1, attn.shape[1], shares=False)
    full.update(0, attn, groups)
    ent.update(0, attn, groups)
    a, b = full.result(), ent.result()
    np.testing.assert_allclose(b.entropy, a.entropy, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(b.n_queries, a.n_queries)
    assert np.isnan(b.share).all() and np.isnan(b.share_mean_nosink).all()


def test_entropy_only_accumulator_errors():
    groups = torch.tensor([[S, I, I, P]])
    attn = uniform_attn(groups, H=1)
    acc = ShareAccumulator(n_layers=1, n_heads=1, shares=False)
    with_nan_pad_row = attn.clone()
    with_nan_pad_row[0, 0, 3] = float("nan")  # a fully masked PAD query: ignored
    acc.update(0, with_nan_pad_row, groups)
    np.testing.assert_allclose(acc.result().entropy[0, 0, IMAGE], math.log(3))
    bad = attn.clone()
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(0, bad, groups)
    with pytest.raises(ValueError, match="entropy-only"):
        acc.merge(ShareAccumulator(n_layers=1, n_heads=1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stays_on_gpu():
    groups = torch.tensor([[S, X, X, I, I, P]], device="cuda")
    attn = uniform_attn(groups.cpu(), H=2).cuda().float()
    acc = ShareAccumulator(n_layers=1, n_heads=2)
    acc.update(0, attn, groups)
    assert acc.mass.is_cuda and acc.entropy.is_cuda
    cpu = ShareAccumulator(n_layers=1, n_heads=2)
    cpu.update(0, attn.cpu(), groups.cpu())
    for k, v in acc.result().to_arrays().items():
        np.testing.assert_allclose(v, cpu.result().to_arrays()[k], atol=1e-6, equal_nan=True, err_msg=k)
