"""What the accumulators hand over at the end of a pass: per-stream attention and grounding statistics.

:class:`AttentionStats` (from :meth:`ShareAccumulator.result
<mmdiag.recording.attention.ShareAccumulator.result>`) and :class:`GroundingStats`
(from :meth:`GroundingAccumulator.result
<mmdiag.recording.grounding.GroundingAccumulator.result>`) are what
``Activations.attention[stream]`` and ``Activations.grounding[stream]`` hold.
They are frozen: checks read them, nothing edits them. :meth:`to_arrays` and
:meth:`from_arrays` turn them into and back from a flat ``{field: array}`` dict
(the activation cache stores that).

Shapes: ``L`` layers (attention blocks of the stream), ``H`` heads, ``A = 3``
token groups indexed by the ``GROUP_*`` ids of :mod:`mmdiag.tokens` (special 0,
text 1, image 2); a share ``[..., a, b]`` is from queries of group ``a`` to keys
of group ``b``. Every average is NaN where its count is 0.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, TypeVar

import numpy as np

__all__ = ["AttentionStats", "GroundingStats"]

_Stats = TypeVar("_Stats", bound="_Arrays")


class _Arrays:
    """``to_arrays``/``from_arrays`` for a dataclass whose fields are all numpy arrays."""

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{field name: array}`` for every field, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls: type[_Stats], arrays: Mapping[str, np.ndarray]) -> _Stats:
        """The inverse of :meth:`to_arrays`; a missing field is a ``KeyError`` (extra keys are an error too)."""
        names = [f.name for f in fields(cls)]
        missing, extra = [n for n in names if n not in arrays], sorted(set(arrays) - set(names))
        if missing or extra:
            raise KeyError(f"{cls.__name__}.from_arrays: missing {missing}, unexpected {extra}")
        return cls(**{n: np.asarray(arrays[n]) for n in names})


@dataclass(frozen=True, eq=False)
class AttentionStats(_Arrays):
    """Attention-modality statistics of one stream over the whole run (float64 numpy arrays).

    A tower of one modality (``shares=False`` accumulator) has only the
    entropies, ``n_queries`` and ``n_samples``; its share and count fields read NaN/0.
    """

    #: ``[L, H, A, A]`` mean share of a query's attention mass on each key group (= mass / count)
    share: np.ndarray
    #: ``[L, A, A]`` ``share`` averaged over heads (NaN heads ignored)
    share_mean: np.ndarray
    #: ``[L, H, A, A]`` mass / number of valid queries of the group: sums to 1 over key groups
    share_total: np.ndarray
    #: ``[L, H, A, A]`` (query, key-group) pairs counted in ``share``
    count: np.ndarray
    #: ``[L, H, A, A]`` ``share`` with each (sample, layer, head)'s sink keys removed
    share_nosink: np.ndarray
    #: ``[L, A, A]`` ``share_nosink`` averaged over heads
    share_mean_nosink: np.ndarray
    #: ``[L, H, A, A]`` ``share_total`` with sink keys removed
    share_total_nosink: np.ndarray
    #: ``[L, H, A, A]`` ``count`` with sink keys removed
    count_nosink: np.ndarray
    #: ``[L, H, A]`` mean row entropy (nats) of the valid queries of each group
    entropy: np.ndarray
    #: ``[L, A]`` ``entropy`` averaged over heads
    entropy_mean: np.ndarray
    #: ``[L, H, A]`` valid query rows counted per group
    n_queries: np.ndarray
    #: ``[L]`` samples seen per layer
    n_samples: np.ndarray
    #: ``[L, H]`` sink keys found per sample
    sinks_per_sample: np.ndarray


@dataclass(frozen=True, eq=False)
class GroundingStats(_Arrays):
    """Attention grounding of one stream over the run: averages over the valid phrases (float64 numpy)."""

    #: ``[L, H]`` mean share of a phrase's image attention (from its words) inside its own box
    share: np.ndarray
    #: ``[L, H]`` mean chance level: the box's share of the image keys
    chance: np.ndarray
    #: ``[L, H]`` fraction of phrases whose share exceeds chance
    above_chance: np.ndarray
    #: ``[L]`` ``share`` averaged over heads
    share_mean: np.ndarray
    #: ``[L]`` ``chance`` averaged over heads
    chance_mean: np.ndarray
    #: ``[L]`` ``above_chance`` averaged over heads
    above_chance_mean: np.ndarray
    #: ``[L]`` ``share_mean / chance_mean``
    lift_mean: np.ndarray
    #: ``[L, H]`` phrases counted
    n_phrases: np.ndarray
