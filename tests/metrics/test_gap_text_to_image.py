"""L2I, RMG and retrieval with several captions per image (text_to_image), against direct loops."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdiag.data.groups import text_to_image_map
from mmdiag.data.types import Sample
from mmdiag.metrics.gap import gap_l2i, relative_modality_gap, retrieval_hits, retrieval_recall


def _unit(v):
    return v / np.linalg.norm(v)


def _d(a, b):
    return 1 - (float(_unit(a) @ _unit(b)) + 1) / 2


def _direct_rmg(img, txt, m):
    d_m = np.mean([_d(img[m[j]], txt[j]) for j in range(len(txt))])
    d_ii = np.mean([_d(img[i], img[k]) for i in range(len(img)) for k in range(len(img)) if i != k])
    d_tt = np.mean([_d(txt[j], txt[l]) for j in range(len(txt)) for l in range(len(txt)) if j != l])
    return d_m / (d_m + (d_ii + d_tt) / 2)


def _direct_recall(img, txt, m):
    sim = np.array([[_unit(i) @ _unit(t) for t in txt] for i in img])
    t2i = np.mean([int(np.argmax(sim[:, j]) == m[j]) for j in range(len(txt))])
    i2t = np.mean([int(m[int(np.argmax(sim[i]))] == i) for i in range(len(img))])
    return i2t, t2i


def _case(seed, n_img=6, per=(5, 5, 3, 5, 1, 2), d=7):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n_img, d)) + 0.5
    m = np.repeat(np.arange(n_img), per)
    txt = img[m] + rng.normal(size=(len(m), d)) * 0.8 - 0.5
    return img, txt, m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mapped_metrics_equal_the_direct_computation(seed):
    img, txt, m = _case(seed)
    l2i = np.mean([np.linalg.norm(_unit(img[m[j]]) - _unit(txt[j])) for j in range(len(txt))])
    assert gap_l2i(img, txt, m) == pytest.approx(l2i, rel=1e-12)
    assert relative_modality_gap(img, txt, m) == pytest.approx(_direct_rmg(img, txt, m), rel=1e-12)
    assert retrieval_recall(img, txt, m) == pytest.approx(_direct_recall(img, txt, m))


def test_repeating_each_image_per_caption_lowers_the_within_image_dissimilarity():
    """Why the map matters: duplicated image rows add i≠k pairs at distance 0, which shrink d_ii and raise RMG."""
    img, txt, m = _case(3)
    assert gap_l2i(img[m], txt) == pytest.approx(gap_l2i(img, txt, m), rel=1e-12)  # L2I: the same either way
    assert relative_modality_gap(img[m], txt) > relative_modality_gap(img, txt, m) + 1e-3
    dup_i2t, dup_t2i = retrieval_recall(img[m], txt)  # a sibling caption counts as a miss without the map
    i2t, t2i = retrieval_recall(img, txt, m)
    assert dup_t2i <= t2i and dup_i2t <= i2t


def test_identity_map_is_the_paired_metric_and_bad_maps_are_refused():
    img, txt, _ = _case(4, n_img=4, per=(1, 1, 1, 1))
    assert relative_modality_gap(img, txt, [0, 1, 2, 3]) == pytest.approx(relative_modality_gap(img, txt), rel=1e-12)
    assert retrieval_recall(torch.tensor(img), torch.tensor(img)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="map each of the 4 captions"):
        gap_l2i(img, txt, [0, 1])
    with pytest.raises(ValueError, match="outside 0..3"):
        gap_l2i(img, txt, [0, 1, 2, 4])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=6), st.integers(0, 2 ** 16))
def test_mapped_rmg_and_l2i_stay_in_range_and_ignore_caption_order(per, seed):
    img, txt, m = _case(seed, n_img=len(per), per=tuple(per), d=5)
    perm = np.random.default_rng(seed).permutation(len(m))
    rmg = relative_modality_gap(img, txt, m)
    assert 0.0 <= rmg <= 1.0 and 0.0 <= gap_l2i(img, txt, m) <= 2.0
    assert relative_modality_gap(img, txt[perm], m[perm]) == pytest.approx(rmg, abs=1e-12)
    assert gap_l2i(img, txt[perm], m[perm]) == pytest.approx(gap_l2i(img, txt, m), abs=1e-12)


def test_samples_group_by_image_key_in_first_seen_order():
    keys = ["a", "b", "a", None, "b", None]
    samples = [Sample(uid=str(i), image=None, caption="c", meta={} if k is None else {"image_key": k})
               for i, k in enumerate(keys)]
    groups = text_to_image_map(samples)
    assert groups.image_rows == (0, 1, 3, 5) and groups.text_to_image == (0, 1, 0, 2, 1, 3) and groups.shared
    assert not text_to_image_map(samples[3:4]).shared


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=7), st.integers(0, 2 ** 16), st.integers(1, 30))
def test_retrieval_in_blocks_equals_one_matrix_ties_included(per, seed, block):
    """Blocks of image rows give the full matrix's recall. One-hot rows make every similarity exactly 0 or 1,
    so ties are everywhere and exact (no rounding decides them): the first maximum must win across blocks."""
    rng = np.random.default_rng(seed)
    m = np.repeat(np.arange(len(per)), per)
    img, txt = np.eye(3)[rng.integers(0, 3, len(per))], np.eye(3)[rng.integers(0, 3, len(m))]
    assert retrieval_recall(img, txt, m, block=block) == retrieval_recall(img, txt, m, block=10 ** 9)
    assert retrieval_recall(img, txt, m, block=block) == pytest.approx(_direct_recall(img, txt, m))


def test_retrieval_hits_are_what_recall_averages():
    img, txt, m = _case(5)
    i2t_hits, t2i_hits = retrieval_hits(img, txt, m, block=7)
    assert i2t_hits.shape == (len(img),) and t2i_hits.shape == (len(txt),) and t2i_hits.dtype == torch.bool
    assert (float(i2t_hits.double().mean()), float(t2i_hits.double().mean())) == retrieval_recall(img, txt, m)
    sim = np.array([[_unit(i) @ _unit(t) for t in txt] for i in img])
    np.testing.assert_array_equal(t2i_hits.numpy(), sim.argmax(axis=0) == m)  # caption j: its own image first
