"""Fitted structural probes: the kept weights of every layer, their training record, and their predictions.

A :class:`ProbeFit` is what :func:`mmdiag.probing.fit.fit_probes` returns for
one task: the (L, rank, D) best-dev probe matrices and the bookkeeping of how
they were found.  It predicts depths ``||B_l h_i||^2`` or distances
``||B_l (h_i - h_j)||^2`` for new sentences, per layer and per sentence, as
the numpy arrays that :mod:`mmdiag.metrics.probe_scores` and
:mod:`mmdiag.metrics.probe_recovery` score.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmdiag.probing.batching import EVAL_BATCH, Words
from mmdiag.probing.data import ProbeData

__all__ = ["ProbeFit"]


@dataclass
class ProbeFit:
    """Probes fitted for every layer.

    ``B``: (L, rank, D) best-dev probe matrices (on the training device);
    ``kind``: ``"depth"`` or ``"distance"``; ``best_dev_loss``: (L,) the dev loss
    of the kept weights (Hewitt's loss, mean over dev sentences);
    ``best_epoch``: (L,) the 0-based epoch they come from; ``epochs``: (L,)
    epochs each layer trained before it stopped; ``seconds``: wall time of
    the fit (of the whole joint program when several probes were fitted
    together by :func:`~mmdiag.probing.fit.fit_probes`); ``regimen``: its
    name; ``history``: per epoch, the (L,) dev losses (NaN for layers
    already stopped).
    """

    B: torch.Tensor
    kind: str
    best_dev_loss: np.ndarray
    best_epoch: np.ndarray
    epochs: np.ndarray
    seconds: float
    regimen: str
    history: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.B.shape[0])

    def _projections(self, data: ProbeData):
        """Yield (sentence indices, batch, P (L, b, T, rank) on the device) batches."""
        words = Words(data, self.B.device)
        S = data.n_sentences
        for start in range(0, S, EVAL_BATCH):
            batch = words.batch(torch.arange(start, min(S, start + EVAL_BATCH), device=self.B.device))
            with torch.no_grad():
                P = words.project(self.B.float(), batch, None)
            yield range(start, min(S, start + EVAL_BATCH)), batch, P

    # Both predictions fill one buffer allocated before the loop and hand out views of it. Keeping a
    # small copy per sentence instead (as before) interleaved tens of thousands of long-lived blocks with
    # each batch's MB-sized temporaries, so glibc could not reuse the freed space: predicting the depths
    # of 8,000 test sentences (7 x 384) grew the resident set by 1.1 GB of freed-but-held heap.

    def predict_depths(self, data: ProbeData) -> list[list[np.ndarray]]:
        """``||B_l h_i||^2`` per layer l, per sentence: ``out[l][s]`` has shape (n_s,)."""
        _check_dim(self, data)
        lengths = np.asarray(data.lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.empty((self.n_layers, int(offsets[-1])), dtype=np.float64)
        for sents, batch, P in self._projections(data):
            with torch.no_grad():
                d = (P * P).sum(-1)[:, batch.mask]  # (L, words of the batch), in sentence order
            flat[:, offsets[sents.start]:offsets[sents.stop]] = d.double().cpu().numpy()
        return [[flat[l, offsets[s]:offsets[s + 1]] for s in range(len(lengths))] for l in range(self.n_layers)]

    def predict_distances(self, data: ProbeData) -> list[list[np.ndarray]]:
        """``||B_l (h_i - h_j)||^2`` per layer, per sentence: ``out[l][s]`` is (n_s, n_s).

        Computed from explicit differences (not the Gram expansion) so the
        diagonal is exactly 0 and the matrices are exactly symmetric.
        """
        _check_dim(self, data)
        lengths = np.asarray(data.lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths ** 2)])
        flat = np.empty((self.n_layers, int(offsets[-1])), dtype=np.float64)
        for sents, _, P in self._projections(data):
            with torch.no_grad():
                dist = torch.cdist(P, P, compute_mode="donot_use_mm_for_euclid_dist").pow(2).double()
                dist = (dist + dist.transpose(-1, -2)) / 2.0
                dist.diagonal(dim1=-2, dim2=-1).zero_()
            dist = dist.cpu().numpy()
            for k, s in enumerate(sents):
                m = lengths[s]
                flat[:, offsets[s]:offsets[s + 1]] = dist[:, k, :m, :m].reshape(self.n_layers, -1)
        return [[flat[l, offsets[s]:offsets[s + 1]].reshape(lengths[s], lengths[s]) for s in range(len(lengths))]
                for l in range(self.n_layers)]


def _check_dim(fit: ProbeFit, data: ProbeData) -> None:
    if data.states.shape[0] != fit.B.shape[0] or data.states.shape[2] != fit.B.shape[2]:
        raise ValueError(f"states of shape (L={data.states.shape[0]}, W, D={data.states.shape[2]}) "
                         f"do not fit probes of shape {tuple(fit.B.shape)}")
