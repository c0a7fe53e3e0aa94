"""The structural probes' predictions and Hewitt's training loss, on padded minibatches.

A structural probe (Hewitt & Manning, NAACL 2019, john-hewitt/structural-probes;
used for multimodal BERTs by Milewski et al., ACL 2022, arXiv:2203.09306) is a
linear map ``B`` (rank x D) such that

* depth probe:    ``d_i  = ||B h_i||^2``          approximates the tree depth of word i;
* distance probe: ``d_ij = ||B (h_i - h_j)||^2``  approximates the tree distance of i, j.

Loss (Hewitt's): L1 between prediction and gold, summed over a sentence's words
(depth) or word pairs (distance), divided by the sentence length n (depth) or
n^2 (distance); the training loop (:mod:`mmdiag.probing.fit`) averages it over
the sentences of a batch.  Both functions take the projections ``P = B h`` of
every layer at once, (La, b, T, rank), zero at padding.
"""
from __future__ import annotations

import torch

__all__ = ["KINDS", "predictions", "sentence_loss"]

#: the two kinds of structural probe
KINDS = ("depth", "distance")


def predictions(P: torch.Tensor, kind: str) -> torch.Tensor:
    """Probe predictions from projections P (La, b, T, rank): (La, b, T) depths or (La, b, T, T) distances.

    Distances use ``||p_i||^2 + ||p_j||^2 - 2 p_i.p_j`` (clamped at 0) so that no
    (La, b, T, T, rank) difference tensor is built.
    """
    sq = (P * P).sum(-1)
    if kind == "depth":
        return sq
    G = torch.matmul(P, P.transpose(-1, -2))
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * G).clamp_min(0.0)


def sentence_loss(P: torch.Tensor, y: torch.Tensor, m: torch.Tensor, n: torch.Tensor, kind: str) -> torch.Tensor:
    """Hewitt's normalised L1 loss of each sentence for each layer: (La, b)."""
    err = (predictions(P, kind) - y).abs() * m
    if kind == "depth":
        return err.sum(-1) / n
    return err.sum((-1, -2)) / (n * n)
