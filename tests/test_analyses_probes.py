"""mmdiag.analyses.probes: the joint fit gives the scores of separate fits."""
import numpy as np

from mmdiag.analyses.probes import ProbeSet, probe_scores
from mmdiag.metrics.probe_fit import ProbeData, control_distances, fit_distance_probes, split_indices
from mmdiag.metrics.probe_scores import dspr

from tests.metrics.test_probe_fit import planted


def test_control_task_scores_match_a_separate_fit():
    data = planted(5, n_sent=40)
    words = [tuple(f"w{(s + i) % 7}" for i in range(n)) for s, n in enumerate(data.lengths)]
    scores = probe_scores(ProbeSet(data, words), seed=2, rank=8, control=True)
    assert set(scores) >= {"nspr", "root_acc", "dspr", "uuas", "control_dspr", "example", "fit_s"}
    assert len(scores["control_dspr"]) == len(scores["dspr"]) == 3

    ctrl = ProbeData(states=data.states, lengths=data.lengths, distances=control_distances(words, 2))
    train, dev, test = (ctrl.subset(ix) for ix in split_indices(ctrl.n_sentences, 2))
    alone = fit_distance_probes(train, dev, rank=8, seed=2)
    expected = [dspr(p, test.gold_distances()) for p in alone.predict_distances(test)]
    np.testing.assert_allclose(scores["control_dspr"], expected, atol=1e-6)
    # the planted layers encode the real tree, not the per-type control trees
    assert scores["dspr"][0] - scores["control_dspr"][0] > 0.2
