"""Stateful accumulators the recorder (:mod:`mmdiag.record`) feeds batch by batch.

The formulas they sum are pure functions in :mod:`mmdiag.metrics`; here live the
running sums per layer and head that a pass over the data builds up:
:mod:`mmdiag.recording.attention` (attention-modality shares, sinks, entropies)
and :mod:`mmdiag.recording.grounding` (the share of a phrase's attention inside
its own box). Their results are the frozen dataclasses of
:mod:`mmdiag.recording.stats` (:class:`~mmdiag.recording.stats.AttentionStats`,
:class:`~mmdiag.recording.stats.GroundingStats`).
"""
