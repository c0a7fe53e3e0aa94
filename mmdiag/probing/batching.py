"""Padded minibatches of probe data on the training device: word states and gold targets.

Sentences have different lengths; the probes of every layer are trained and
evaluated on minibatches of sentences padded to the longest one, (L, b, T, ·)
with a (b, T) word mask.  :class:`Words` holds a :class:`~mmdiag.probing.data.ProbeData`'s
states on the device (or a view of them on disk, :mod:`mmdiag.probing.states`) and cuts a :class:`Batch` out of them (gathering only the
batch's real words, so no work is spent on padding); :class:`Targets` cuts the
matching gold depths (b, T) or distances (b, T, T) and their 0/1 weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from mmdiag.probing.data import ProbeData
from mmdiag.probing.states import StateView

__all__ = ["EVAL_BATCH", "Batch", "Words", "Targets"]

#: sentences per minibatch when only evaluating (dev losses, predictions)
EVAL_BATCH = 100


@dataclass
class Batch:
    """A minibatch of sentences: ``sel`` (b,), lengths ``n`` (b,), word ``mask`` (b, T),
    the flat indices of its ``words`` (sum n,) and their positions ``slots`` in the (b * T) padding."""

    sel: torch.Tensor
    n: torch.Tensor
    mask: torch.Tensor
    words: torch.Tensor
    slots: torch.Tensor


class Words:
    """The states of a :class:`ProbeData` on a device, cut into padded minibatches."""

    def __init__(self, data: ProbeData, device: torch.device) -> None:
        self.data = data
        self.states = data.states.to(device)
        lengths = np.asarray(data.lengths, dtype=np.int64)
        self.n = torch.as_tensor(lengths, device=device)
        self.off = torch.as_tensor(data.offsets[:-1], device=device)
        self.ar = torch.arange(int(lengths.max()) if lengths.size else 0, device=device)

    def batch(self, sel: torch.Tensor) -> Batch:
        n = self.n[sel]
        T = int(n.max())
        mask = self.ar[None, :T] < n[:, None]
        words = (self.off[sel][:, None] + self.ar[None, :T])[mask]
        return Batch(sel, n, mask, words, mask.reshape(-1).nonzero().squeeze(1))

    def project(self, Bm: torch.Tensor, batch: Batch, layers: Optional[torch.Tensor]) -> torch.Tensor:
        """``P[l, s, t] = B_l h_{l, s, t}``: (La, R, D) probes -> (La, b, T, R), zero at padding.

        Only the batch's words are multiplied (no work on padding); the result is
        scattered into the padded layout, which the distance loss needs.
        """
        return self.pad(torch.bmm(self.gather(batch, layers), Bm.transpose(1, 2)), batch)

    def gather(self, batch: Batch, layers: Optional[torch.Tensor]) -> torch.Tensor:
        """The states of the batch's words, (La, sum n, D) float32 (read from disk for a :class:`StateView`)."""
        if isinstance(self.states, StateView):
            return self.states.gather(layers, batch.words)
        if layers is None:
            X = self.states.index_select(1, batch.words)
        else:
            X = self.states[layers[:, None], batch.words[None, :]]
        return X.float()

    @staticmethod
    def pad(P: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-word projections (La, sum n, R) -> (La, b, T, R), zero at padding."""
        b, T = batch.mask.shape
        padded = P.new_zeros(P.shape[0], b * T, P.shape[2]).index_copy(1, batch.slots, P)
        return padded.reshape(P.shape[0], b, T, P.shape[2])


class Targets:
    """Gold depths or distances of one probe task, cut to minibatches of :class:`Words`."""

    def __init__(self, data: ProbeData, kind: str, words: Words) -> None:
        self.kind = kind
        self.words = words
        device = words.n.device
        if kind == "depth":
            if data.depths is None:
                raise ValueError("depth probe: ProbeData has neither heads nor depths")
            self.target = data.depths.to(device)
        else:
            mats = data.gold_distances()
            self.target = torch.as_tensor(np.concatenate([m.ravel() for m in mats]), dtype=torch.float32,
                                          device=device)
            sq = np.asarray(data.lengths, dtype=np.int64) ** 2
            self.doff = torch.as_tensor(np.concatenate([[0], np.cumsum(sq)[:-1]]), device=device)

    def batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded targets and their 0/1 weights: (b, T) for depths, (b, T, T) for distances."""
        mask, n, sel = batch.mask, batch.n, batch.sel
        T = mask.shape[1]
        ar = self.words.ar[:T]
        if self.kind == "depth":
            idx = torch.where(mask, self.words.off[sel][:, None] + ar[None, :],
                              torch.zeros_like(mask, dtype=torch.long))
            return self.target[idx] * mask, mask.float()
        m2 = mask[:, :, None] & mask[:, None, :]
        idx = self.doff[sel][:, None, None] + ar[None, :, None] * n[:, None, None] + ar[None, None, :]
        idx = torch.where(m2, idx, torch.zeros_like(idx))
        m2 = m2 & (ar[:, None] != ar[None, :])  # the diagonal is 0 = 0 by construction
        return self.target[idx] * m2, m2.float()
