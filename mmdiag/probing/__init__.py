"""Training of structural probes (Hewitt & Manning, NAACL 2019) for every layer of a model at once.

A structural probe is a linear map fitted on a layer's word states so that
squared norms approximate tree depths and squared distances approximate tree
distances (:mod:`mmdiag.probing.loss`).  This package fits them; the scores
(NSpr, DSpr, root accuracy, UUAS) are pure functions of arrays in
:mod:`mmdiag.metrics.probe_scores` and :mod:`mmdiag.metrics.probe_recovery`.
Imports go one way: this package reads :mod:`mmdiag.metrics`, never the
reverse.

* :mod:`~mmdiag.probing.data` — :class:`ProbeData`, the states and gold structure of a set of sentences;
* :mod:`~mmdiag.probing.splits` — :func:`split_indices`, the 60/20/20 split by seed;
* :mod:`~mmdiag.probing.control` — control tasks (Hewitt & Liang 2019);
* :mod:`~mmdiag.probing.regimens` — the ``paper`` and ``fast`` regimens' settings;
* :mod:`~mmdiag.probing.batching` — padded minibatches of states and targets;
* :mod:`~mmdiag.probing.loss` — predictions and Hewitt's L1 loss;
* :mod:`~mmdiag.probing.adam` — Adam with per-layer steps and learning rates;
* :mod:`~mmdiag.probing.schedule` — plateau schedule, checkpoint, early stopping;
* :mod:`~mmdiag.probing.fit` — the training loop (:func:`fit_probes`);
* :mod:`~mmdiag.probing.fitted` — :class:`ProbeFit`, the fitted probes and their predictions.
"""
from __future__ import annotations

from mmdiag.probing.control import control_depths, control_distances, control_heads
from mmdiag.probing.data import ProbeData
from mmdiag.probing.fit import ProbeTask, fit_depth_probes, fit_distance_probes, fit_probes
from mmdiag.probing.fitted import ProbeFit
from mmdiag.probing.regimens import FAST_REGIMEN, PAPER_REGIMEN, Regimen
from mmdiag.probing.splits import split_indices

__all__ = [
    "ProbeData",
    "ProbeFit",
    "Regimen",
    "PAPER_REGIMEN",
    "FAST_REGIMEN",
    "fit_depth_probes",
    "fit_distance_probes",
    "fit_probes",
    "ProbeTask",
    "split_indices",
    "control_depths",
    "control_heads",
    "control_distances",
]
