"""Statistical core of a release gate: bootstrap intervals of the results and noise-aware baseline comparison.

Pure modules, one job each (nothing here reads pytest, the session or the report):

* :mod:`~mmdiag.uncertainty.interval` — :class:`Interval`, the ``"ci"`` and ``"se"`` of a result;
* :mod:`~mmdiag.uncertainty.bootstrap` — the seeded, vectorised, chunked bootstrap (percentile, BCa);
* :mod:`~mmdiag.uncertainty.batched`, :mod:`~mmdiag.uncertainty.batched_spectral` — the built-in
  metrics on many resamples at once, and :func:`per_resample` for any other metric;
* :mod:`~mmdiag.uncertainty.grouped` — probe scores bootstrapped over test sentences;
* :mod:`~mmdiag.uncertainty.regression` — the baseline test, Holm / Benjamini–Hochberg, :func:`judge`.

``python -m mmdiag.uncertainty.bench`` times them (not imported here). See ``docs/uncertainty.md``.
"""
from mmdiag.uncertainty.batched import (NOT_RESAMPLED, batched_alignment, batched_cone, batched_gap_l2i,
                                        batched_gap_norm, batched_item_mean, batched_uniformity, no_interval,
                                        per_resample)
from mmdiag.uncertainty.batched_spectral import batched_isotropy, batched_linear_cka, batched_rankme
from mmdiag.uncertainty.bootstrap import (BatchedStatistic, bootstrap, bootstrap_replicates, interval_from_replicates,
                                          resample_indices)
from mmdiag.uncertainty.grouped import (bootstrap_grouped, bootstrap_grouped_difference, bootstrap_grouped_layers,
                                        bootstrap_ratio, dspr_items, nspr_items, root_accuracy_items, uuas_items)
from mmdiag.uncertainty.interval import Interval
from mmdiag.uncertainty.regression import (Comparand, Verdict, benjamini_hochberg, holm, judge,
                                           regression_p_value, samples_to_decide, tolerance_for, worse_change)

__all__ = [
    "Interval", "BatchedStatistic", "resample_indices", "bootstrap", "bootstrap_replicates",
    "interval_from_replicates", "batched_cone", "batched_gap_norm", "batched_gap_l2i", "batched_item_mean", "batched_alignment",
    "batched_uniformity", "batched_rankme", "batched_linear_cka", "batched_isotropy", "per_resample",
    "NOT_RESAMPLED", "no_interval", "bootstrap_grouped", "bootstrap_grouped_layers",
    "bootstrap_grouped_difference", "bootstrap_ratio", "nspr_items", "dspr_items",
    "uuas_items", "root_accuracy_items", "worse_change", "tolerance_for", "regression_p_value", "holm",
    "benjamini_hochberg", "Comparand", "Verdict", "judge", "samples_to_decide",
]
