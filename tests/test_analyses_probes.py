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
