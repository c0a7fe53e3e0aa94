"""mmdiag.analyses.probes: scores of the joint fit, and the control task at the best layer."""
import numpy as np
import pytest

from mmdiag.analyses.probes import ProbeSet, probe_scores
from mmdiag.metrics.probe_scores import dspr
from mmdiag.probing.control import control_distances
from mmdiag.probing.data import ProbeData
from mmdiag.probing.fit import fit_distance_probes
from mmdiag.probing.splits import split_indices

from tests.probing.test_probe_fit import planted


def test_control_task_is_scored_at_the_best_distance_layer():
    data = planted(5, n_sent=40)
    words = [tuple(f"w{(s + i) % 7}" for i in range(n)) for s, n in enumerate(data.lengths)]
    scores = probe_scores(ProbeSet(data, words), seed=2, rank=8, control=True)
    assert all(getattr(scores, name) is not None
               for name in ("nspr", "root_acc", "dspr", "uuas", "control_dspr", "control_layer", "example", "fit_s"))
    layer = scores.control_layer
    assert layer == int(np.nanargmax(scores.dspr))

    # the same as a control probe fitted alone on that layer's states
    ctrl = ProbeData(states=data.states[layer:layer + 1], lengths=data.lengths,
                     distances=control_distances(words, 2))
    train, dev, test = (ctrl.subset(ix) for ix in split_indices(ctrl.n_sentences, 2))
    alone = fit_distance_probes(train, dev, rank=8, seed=2)
    assert scores.control_dspr == pytest.approx(dspr(alone.predict_distances(test)[0], test.gold_distances()),
                                                   abs=1e-6)
    # the planted layers encode the real tree, not the per-type control trees
    assert scores.dspr[layer] - scores.control_dspr > 0.2


def test_scores_without_control_and_bad_requests():
    data = planted(6, n_sent=30)
    pset = ProbeSet(data, [tuple("ab"[i % 2] for i in range(n)) for n in data.lengths])
    scores = probe_scores(pset, seed=0, rank=4, kinds=("depth",))
    assert scores.nspr is not None and scores.dspr is None and scores.control_dspr is None
    with pytest.raises(ValueError, match="include 'distance'"):
        probe_scores(pset, seed=0, kinds=("depth",), control=True)


# -- intervals over the test sentences (boot > 0) ---------------------------------------------------------------

def _interval_scores(boot, seed=2, control=True):
    data = planted(5, n_sent=40)
    words = [tuple(f"w{(s + i) % 7}" for i in range(n)) for s, n in enumerate(data.lengths)]
    return probe_scores(ProbeSet(data, words), seed=seed, rank=8, control=control, boot=boot)


def test_boot_gives_per_layer_intervals_whose_point_is_the_score():
    from mmdiag.uncertainty.grouped import grouped_statistic

    scores = _interval_scores(boot=200)
    L = len(scores.layers)
    for name in ("nspr_ci", "dspr_ci", "root_acc_ci", "uuas_ci"):
        cis = getattr(scores, name)
        assert cis is not None and len(cis) == L, name
        assert all(ci.defined and ci.se >= 0 and ci.resamples == 200 and ci.method == "bootstrap-percentile"
                   for ci in cis), name
    assert all(ci.se > 0 for ci in scores.nspr_ci + scores.dspr_ci)   # root accuracy may be 1 on every resample
    for items, values in ((scores.nspr_items, scores.nspr), (scores.dspr_items, scores.dspr)):
        assert items.values.shape == (L, scores.n_test) and items.groups.shape == (scores.n_test,)
        for k in range(L):
            # the statistic the interval resamples, on the test sentences themselves, is the reported score
            assert grouped_statistic(items.values[k], items.groups).point() == pytest.approx(values[k], rel=1e-12,
                                                                                             abs=1e-12)
    for k, ci in enumerate(scores.dspr_ci):
        assert ci.low - 0.05 <= scores.dspr[k] <= ci.high + 0.05  # a percentile interval need not hold θ̂
    c = scores.control_items
    assert c.values.shape == (scores.n_test,)
    assert grouped_statistic(c.values, scores.dspr_items.groups).point() == pytest.approx(scores.control_dspr,
                                                                                          rel=1e-12, abs=1e-12)
    assert all(0 <= ci.low <= ci.high <= 1 for ci in scores.uuas_ci + scores.root_acc_ci)


def test_intervals_are_deterministic_by_seed_and_absent_without_boot():
    a, b = _interval_scores(boot=100), _interval_scores(boot=100)
    assert a.dspr_ci == b.dspr_ci and a.nspr_ci == b.nspr_ci and a.uuas_ci == b.uuas_ci
    # the point scores do not depend on boot
    none = _interval_scores(boot=0)
    assert none.dspr == a.dspr and none.nspr == a.nspr and none.control_dspr == a.control_dspr
    assert all(getattr(none, f) is None for f in ("nspr_ci", "dspr_ci", "root_acc_ci", "uuas_ci", "nspr_items",
                                                 "dspr_items", "control_items"))


def test_scoring_in_chunks_of_test_sentences_gives_the_scores_of_one_pass(monkeypatch):
    """The test split is scored SCORE_CHUNK sentences at a time (bounded memory): the same DSpr, UUAS, intervals
    and example as all sentences at once, also with a chunk of one sentence."""
    import mmdiag.analyses.probes as probes
    from mmdiag.metrics.probe_recovery import uuas_by_layer

    whole = _interval_scores(boot=50)
    monkeypatch.setattr(probes, "SCORE_CHUNK", 1)
    chunked = _interval_scores(boot=50)
    np.testing.assert_allclose(chunked.dspr, whole.dspr)
    np.testing.assert_allclose(chunked.uuas, whole.uuas)
    assert [(c.low, c.high) for c in chunked.dspr_ci] == [(c.low, c.high) for c in whole.dspr_ci]
    assert [(c.low, c.high) for c in chunked.uuas_ci] == [(c.low, c.high) for c in whole.uuas_ci]
    assert chunked.example == whole.example
    # and the pooled UUAS is the reference tree-by-tree computation on the whole split
    data = planted(5, n_sent=40)
    fits = probes.fit_probes([probes.ProbeTask("distance", *(data.subset(ix) for ix in split_indices(40, 2)[:2]))],
                             rank=8, seed=2)
    test = data.subset(split_indices(40, 2)[2])
    np.testing.assert_allclose(uuas_by_layer(fits[0].predict_distances(test), test.heads, test.upos), whole.uuas)
