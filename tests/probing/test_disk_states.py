"""Word/region states on disk (mmdiag.recording.store) and the probe view of them (mmdiag.probing.states)."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.probing.data import ProbeData
from mmdiag.probing.fit import ProbeTask, fit_probes
from mmdiag.probing.states import StateView, same_states
from mmdiag.recording.store import STATE_DIR_ENV, LayerFiles
from tests.probing.test_probe_fit import planted


def files_of(states: torch.Tensor, batches=(3, 0, 5)) -> LayerFiles:
    """``states`` (L, W, D) written to LayerFiles in batches of the given sizes (then the rest)."""
    files = LayerFiles(states.shape[0])
    start = 0
    for b in (*batches, states.shape[1]):
        stop = min(start + b, states.shape[1])
        files.append([layer[start:stop] for layer in states])
        start = stop
    return files.close()


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 4), W=st.integers(0, 30), D=st.integers(1, 6), seed=st.integers(0, 100))
def test_files_give_back_exactly_what_was_appended(L, W, D, seed):
    states = torch.randn(L, W, D, generator=torch.Generator().manual_seed(seed))
    files = files_of(states)
    assert files.shape == (L, W, D if W else files.dim)
    rows = np.random.default_rng(seed).integers(0, max(W, 1), size=7 if W else 0)
    np.testing.assert_array_equal(files.read([L - 1, 0], rows), states[[L - 1, 0]][:, rows].numpy())
    if W:
        assert all(torch.equal(t, s) for t, s in zip(files.tensors(), states))


def test_files_go_where_the_environment_says_and_are_removed_with_their_owner(tmp_path, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "states"))
    files = LayerFiles(2)
    files.append([torch.ones(3, 4), torch.zeros(3, 4)])
    where = files.dir
    assert where.parent == tmp_path / "states" and len(list(where.iterdir())) == 2
    del files
    gc.collect()
    assert not where.exists()


def test_append_refuses_mismatched_layers():
    files = LayerFiles(2)
    with pytest.raises(ValueError, match="2 layers"):
        files.append([torch.ones(3, 4)])
    with pytest.raises(ValueError, match="same"):
        files.append([torch.ones(3, 4), torch.ones(2, 4)])


def test_view_composes_word_and_layer_selections_without_reading():
    states = torch.randn(4, 20, 3)
    view = StateView(files_of(states), np.arange(20))
    picked = view.index_select(1, torch.tensor([5, 2, 9, 9]))[1:3]
    assert picked.shape == (2, 4, 3)
    torch.testing.assert_close(picked.materialize(), states[1:3][:, [5, 2, 9, 9]])
    torch.testing.assert_close(picked.gather(torch.tensor([1]), torch.tensor([3, 0])), states[[2]][:, [9, 5]])
    assert same_states(picked, view.index_select(1, [5, 2, 9, 9])[1:3]) and not same_states(picked, view)
    with pytest.raises(ValueError):
        view.index_select(0, [0])


def test_probes_fitted_from_disk_equal_those_fitted_in_memory():
    data = planted(3, n_sent=30)
    on_disk = ProbeData(states=StateView(files_of(data.states), np.arange(data.states.shape[1])),
                        lengths=data.lengths, heads=data.heads)
    fits = []
    for d in (data, on_disk):
        train, dev = d.subset(range(20)), d.subset(range(20, 30))
        fits.append(fit_probes([ProbeTask("distance", train, dev), ProbeTask("depth", train, dev)], seed=1))
    for a, b in zip(*fits):
        torch.testing.assert_close(a.B, b.B)
        np.testing.assert_allclose(a.best_dev_loss, b.best_dev_loss)
    test_mem, test_disk = data.subset(range(25, 30)), on_disk.subset(range(25, 30))
    for p, q in zip(fits[0][0].predict_distances(test_mem), fits[1][0].predict_distances(test_disk)):
        for x, y in zip(p, q):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_recorded_word_states_are_on_disk_and_match_their_tensors():
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    adapter = load_adapter("random:tiny-clip", "cpu")
    samples = make_synthetic(10, seed=0, image_size=32)
    acts = record(adapter, samples, 4, words=True)
    assert acts.word_files is not None and acts.word_files.shape[1] == sum(acts.word_counts)
    rows = np.arange(sum(acts.word_counts))
    for k, t in enumerate(acts.word_states):
        np.testing.assert_array_equal(acts.word_files.read([k], rows)[0], t.numpy())
    text_only = record(adapter, samples, 4, words=True, pooled=False)
    assert text_only.pooled == {} and text_only.embeds == {} and text_only.n == acts.n
    assert all(torch.equal(a, b) for a, b in zip(acts.word_states, text_only.word_states))
