"""Streaming attention-grounding sums: the recorder's per-stream grounding accumulator.

:class:`GroundingAccumulator` adds up, per layer and head, the grounding share of
every phrase (:func:`mmdiag.metrics.grounding.phrase_grounding`: the share of a
phrase's image attention inside its own box), its chance level and whether it
beats chance; :func:`update_from_trace` feeds it the streams of a trace that
carry :class:`~mmdiag.models.base.PhraseMasks`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from mmdiag.metrics.attention import accumulator_dtype
from mmdiag.metrics.grounding import phrase_grounding
from mmdiag.models.base import PhraseMasks, Trace
from mmdiag.recording.stats import GroundingStats

__all__ = ["GroundingAccumulator", "update_from_trace"]


@dataclass(eq=False)
class GroundingAccumulator:
    """Streaming per-layer, per-head grounding sums over phrases.

    Sums (``L`` layers, ``H`` heads): ``share_sum``, ``chance_sum``,
    ``above_sum`` (phrases whose share exceeds chance) and ``n_phrases``, all over
    the valid phrases of :func:`mmdiag.metrics.grounding.phrase_grounding`.
    """

    n_layers: int
    n_heads: int
    share_sum: Optional[torch.Tensor] = field(default=None, repr=False)
    chance_sum: Optional[torch.Tensor] = field(default=None, repr=False)
    above_sum: Optional[torch.Tensor] = field(default=None, repr=False)
    n_phrases: Optional[torch.Tensor] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if int(self.n_layers) < 1 or int(self.n_heads) < 1:
            raise ValueError("n_layers and n_heads must be >= 1")

    def _alloc(self, device: torch.device) -> None:
        z = lambda: torch.zeros((self.n_layers, self.n_heads), dtype=accumulator_dtype(device), device=device)  # noqa: E731
        self.share_sum, self.chance_sum, self.above_sum, self.n_phrases = z(), z(), z(), z()

    def update(self, layer: int, attn: torch.Tensor, masks: PhraseMasks) -> None:
        """Add one batch of layer ``layer``'s ``(B, H, T, T)`` attention."""
        if not 0 <= int(layer) < self.n_layers:
            raise ValueError(f"layer {layer} out of range [0, {self.n_layers})")
        if attn.shape[1] != self.n_heads:
            raise ValueError(f"attn has {attn.shape[1]} heads, accumulator expects {self.n_heads}")
        if self.share_sum is None:
            self._alloc(attn.device)
        share, valid, chance = phrase_grounding(attn, masks)
        acc = self.share_sum.dtype
        v = valid.to(acc)
        chance_b = chance.unsqueeze(1).expand_as(share)
        li = int(layer)
        self.share_sum[li] += (torch.nan_to_num(share).to(acc) * v).sum((0, 2)).to(self.share_sum.device)
        self.chance_sum[li] += (torch.nan_to_num(chance_b).to(acc) * v).sum((0, 2)).to(self.share_sum.device)
        self.above_sum[li] += ((share > chance_b) & valid).to(acc).sum((0, 2)).to(self.share_sum.device)
        self.n_phrases[li] += v.sum((0, 2)).to(self.share_sum.device)

    def update_layers(self, attentions: Sequence[torch.Tensor], masks: PhraseMasks, first_layer: int = 0) -> None:
        for i, att in enumerate(attentions):
            self.update(first_layer + i, att, masks)

    def merge(self, other: "GroundingAccumulator") -> "GroundingAccumulator":
        if (other.n_layers, other.n_heads) != (self.n_layers, self.n_heads):
            raise ValueError("cannot merge accumulators of different (layers, heads)")
        if other.share_sum is None:
            return self
        if self.share_sum is None:
            self._alloc(other.share_sum.device)
        for name in ("share_sum", "chance_sum", "above_sum", "n_phrases"):
            mine = getattr(self, name)
            mine += getattr(other, name).to(device=mine.device, dtype=mine.dtype)
        return self

    def result(self) -> GroundingStats:
        """Averages over phrases as numpy (NaN where no phrase counted); fields and shapes: :class:`GroundingStats`.

        ``above_chance`` is the fraction of phrases with share > chance, ``lift_mean``
        = share_mean / chance_mean.
        """
        if self.share_sum is None:
            self._alloc(torch.device("cpu"))
        s, c, ab, n = (getattr(self, k).detach().to("cpu", torch.float64).numpy()
                       for k in ("share_sum", "chance_sum", "above_sum", "n_phrases"))
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n > 0, s / np.maximum(n, 1), np.nan)
            chance = np.where(n > 0, c / np.maximum(n, 1), np.nan)
            above = np.where(n > 0, ab / np.maximum(n, 1), np.nan)

            def head_mean(x: np.ndarray) -> np.ndarray:
                ok = ~np.isnan(x)
                return np.where(ok.any(1), np.where(ok, x, 0).sum(1) / np.maximum(ok.sum(1), 1), np.nan)

            share_mean, chance_mean = head_mean(share), head_mean(chance)
            lift = np.where(chance_mean > 0, share_mean / np.where(chance_mean > 0, chance_mean, 1), np.nan)
        return GroundingStats(share=share, chance=chance, above_chance=above, share_mean=share_mean,
                              chance_mean=chance_mean, above_chance_mean=head_mean(above), lift_mean=lift,
                              n_phrases=n)


def update_from_trace(accumulators: dict[str, GroundingAccumulator], trace: Trace) -> None:
    """Feed one batch's trace into per-stream accumulators (created on first use).

    Reads the streams of ``trace.attention`` whose ``grounding`` is set (adapters
    that know where phrases and boxes sit in a stream): their maps and :class:`PhraseMasks`.
    """
    for name, stream in trace.attention.items():
        masks, maps = stream.grounding, stream.maps
        if masks is None or not maps:
            continue
        acc = accumulators.get(name)
        if acc is None:
            acc = accumulators[name] = GroundingAccumulator(n_layers=len(maps), n_heads=maps[0].shape[1])
        acc.update_layers(maps, masks)
