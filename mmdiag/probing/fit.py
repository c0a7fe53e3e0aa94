"""The training loop of structural probes: every layer's probe fitted at once (Hewitt & Manning 2019).

One tensor program trains one probe per layer for all L layers together:
``B`` has shape (L, rank, D); a minibatch of sentences is padded to
(L, S, Tmax, D) with a mask (:mod:`mmdiag.probing.batching`); each layer has
its own Adam moments (:mod:`mmdiag.probing.adam`), learning rate, plateau
schedule, early stopping and best-dev snapshot (:mod:`mmdiag.probing.schedule`)
— Adam is elementwise, so summing the per-layer losses
(:mod:`mmdiag.probing.loss`) keeps the layers independent.  Several probes on
the same states (a modality's depth and distance probes, or a control task's)
train side by side in the same way (:func:`fit_probes`): one gather of the
states and one matrix product per minibatch serve them all.  The numbers
(batch size, learning rate, epochs, patience, init, default rank) are the
regimen's (:mod:`mmdiag.probing.regimens`).

Chance with a fitted probe: on random Gaussian states (D = 16, trees of 4-10
words, ~30 training sentences) the fast regimen reaches test DSpr 0.39, UUAS
0.28, NSpr -0.06, root accuracy 0.10; on the same trees embedded exactly
(``||h_i - h_j||^2`` = tree distance): DSpr 0.97, UUAS 1.0, NSpr 0.95, root
accuracy 1.0 (``tests/probing/test_probe_fit.py``).  NSpr/DSpr stay below 1
even for an almost exact fit: gold depths and distances are full of ties,
which any real-valued prediction breaks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from mmdiag.probing.adam import BatchedAdam
from mmdiag.probing.batching import EVAL_BATCH, Targets, Words
from mmdiag.probing.data import ProbeData
from mmdiag.probing.fitted import ProbeFit
from mmdiag.probing.loss import KINDS, predictions, sentence_loss
from mmdiag.probing.regimens import get_regimen
from mmdiag.probing.schedule import LayerSchedule
from mmdiag.probing.states import same_states

__all__ = ["ProbeTask", "fit_probes", "fit_depth_probes", "fit_distance_probes"]


@dataclass(frozen=True)
class ProbeTask:
    """One probe to fit for every layer: its ``kind`` (``"depth"`` or ``"distance"``)
    and its ``train``/``dev`` data (gold targets from their heads, depths or distances)."""

    kind: str
    train: ProbeData
    dev: ProbeData


def _same_words(a: ProbeData, b: ProbeData) -> bool:
    return a.lengths == b.lengths and same_states(a.states, b.states)


def _init_scale(B: torch.Tensor, words: Words, targets: Targets, n_train: int) -> torch.Tensor:
    """Per-layer factor for B so that the mean prediction equals the mean gold value
    on the first training sentences (the fast regimen's init); 1 where undefined."""
    batch = words.batch(torch.arange(min(n_train, EVAL_BATCH), device=B.device))
    with torch.no_grad():
        y, m = targets.batch(batch)
        pred = predictions(words.project(B, batch, None), targets.kind)
        pred_sum = (pred * m).sum(tuple(range(1, pred.ndim)))
        scale = torch.sqrt((y * m).sum() / pred_sum)
    ok = torch.isfinite(scale) & (scale > 0)
    return torch.where(ok, scale, torch.ones_like(scale))


def _dev_losses(B: torch.Tensor, words: Words, targets: Sequence[Targets], rank: int,
                layers: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over dev sentences of each task's per-sentence loss, per layer: (K, La) float64."""
    S = words.data.n_sentences
    Bm = B if layers is None else B.index_select(0, layers)
    total = torch.zeros(len(targets), Bm.shape[0], device=B.device, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, S, EVAL_BATCH):
            batch = words.batch(torch.arange(start, min(S, start + EVAL_BATCH), device=B.device))
            P = words.project(Bm, batch, layers)
            for k, t in enumerate(targets):
                y, m = t.batch(batch)
                Pk = P[..., k * rank:(k + 1) * rank]
                total[k] += sentence_loss(Pk, y, m, batch.n.float(), t.kind).sum(1).double()
    return total / S


def fit_probes(tasks: Sequence[ProbeTask], rank: Optional[int] = None, regimen: str = "fast", seed: int = 0,
               device: Optional[Union[str, torch.device]] = None, progress: Optional[Any] = None,
               label: str = "probe fitting") -> list[ProbeFit]:
    """Fit several probes on the same word states in one batched program: one :class:`ProbeFit` per task.

    The tasks must share their words (same states and lengths in train, and in
    dev); they differ in kind and gold targets, e.g. the depth probe, the
    distance probe and the control task's distance probe of one modality.  Each
    task's result is that of fitting it alone with the same arguments (same init
    draw, same minibatches, its own per-layer Adam moments, plateau schedule,
    early stopping and best-dev snapshot): the probes of all tasks sit side by
    side in one ``(L, K * rank, D)`` tensor, so the states are gathered once per
    minibatch and projected by one matrix product, and the summed loss keeps the
    tasks' gradients apart.  A probe that has stopped early keeps its weights
    (learning rate 0) while the others train on.

    ``progress``: an object with ``start(total, label, unit)`` that is then called with the number of
    training sentences just done (:class:`mmdiag.report.progress.Progress`); its total is the regimen's
    most epochs times the training sentences, and an early stop jumps to the end.
    """
    t0 = time.perf_counter()
    cfg = get_regimen(regimen)
    if not tasks:
        raise ValueError("fit_probes: no tasks")
    for t in tasks:
        if t.kind not in KINDS:
            raise ValueError(f"probe kind must be one of {KINDS}, got {t.kind!r}")
    train, dev = tasks[0].train, tasks[0].dev
    if train.states.shape[0] != dev.states.shape[0] or train.states.shape[2] != dev.states.shape[2]:
        raise ValueError("train and dev states differ in number of layers or width")
    if any(not _same_words(t.train, train) or not _same_words(t.dev, dev) for t in tasks[1:]):
        raise ValueError("fit_probes: the tasks must share their train and dev states (they differ only in targets)")
    if train.n_sentences == 0 or dev.n_sentences == 0:
        raise ValueError("probe fitting needs at least one train and one dev sentence")
    dev_ = torch.device(device) if device is not None else train.states.device
    L, _, D = train.states.shape
    r, K = cfg.rank_for(D, rank), len(tasks)
    wtrain, wdev = Words(train, dev_), Words(dev, dev_)
    ytrain = [Targets(t.train, t.kind, wtrain) for t in tasks]
    ydev = [Targets(t.dev, t.kind, wdev) for t in tasks]

    gen = torch.Generator().manual_seed(int(seed))
    B0 = ((torch.rand(L, r, D, generator=gen) * 2 - 1) * cfg.init_range).to(dev_)
    blocks = [B0 * _init_scale(B0, wtrain, y, train.n_sentences)[:, None, None] if cfg.scaled_init else B0
              for y in ytrain]
    B = torch.cat(blocks, 1).contiguous()  # task k's probes are rows k*r .. (k+1)*r - 1

    adam = BatchedAdam.zeros(B)
    book = LayerSchedule.start(K, L, cfg.lr_for(D), cfg.plateau_factor, cfg.stop_patience)
    active = book.active  # (K, L), updated in place by the schedule
    best_B = B.clone()
    S = train.n_sentences
    batch_size = cfg.batch_for(S)

    if progress is not None:
        progress.start(cfg.max_epochs * S, f"{label} ({S} sentences, {cfg.max_epochs} epochs at most)",
                       "sentence passes")
    for epoch in range(cfg.max_epochs):
        on = active.any(0)
        everyone = bool(on.all())
        act = None if everyone else torch.as_tensor(np.flatnonzero(on), device=dev_)
        weight = torch.as_tensor(active[:, on].T, dtype=torch.float32, device=dev_)               # (La, K)
        step_lr = torch.as_tensor((book.lr * active)[:, on].T, dtype=torch.float32, device=dev_)  # (La, K)
        step_lr = step_lr.repeat_interleave(r, dim=1)[:, :, None]                                 # (La, K*r, 1)
        perm = torch.randperm(S, generator=gen).to(dev_)
        for start in range(0, S, batch_size):
            batch = wtrain.batch(perm[start:start + batch_size])
            X = wtrain.gather(batch, act)
            Bm = B if everyone else B.index_select(0, act)
            with torch.no_grad():
                flat = torch.bmm(X, Bm.transpose(1, 2)).requires_grad_(True)  # (La, words, K*r)
            P = wtrain.pad(flat, batch)
            n = batch.n.float()
            loss = sum((sentence_loss(P[..., k * r:(k + 1) * r], *y.batch(batch), n, y.kind).mean(1)
                        * weight[:, k]).sum() for k, y in enumerate(ytrain) if active[k].any())
            # autograd as far as the projections; the gradient of B, dP^T X, by hand so that it comes out
            # contiguous in B's layout (autograd's is a transposed view, which slows every Adam operation)
            (dflat,) = torch.autograd.grad(loss, flat)
            g = torch.bmm(dflat.transpose(1, 2), X)
            adam.step(g, step_lr, act, None if everyone else Bm)
            if progress is not None:
                progress(int(batch.n.shape[0]))
        losses = np.full((K, L), np.nan)
        losses[:, on] = _dev_losses(B, wdev, ydev, r, act).cpu().numpy()
        for k, l in book.end_epoch(epoch, losses):
            best_B[l, k * r:(k + 1) * r] = B[l, k * r:(k + 1) * r]
        if not active.any():
            if progress is not None and epoch + 1 < cfg.max_epochs:
                progress((cfg.max_epochs - epoch - 1) * S)  # stopped early: the rest is not needed
            break

    seconds = time.perf_counter() - t0
    return [ProbeFit(B=best_B[:, k * r:(k + 1) * r].contiguous(), kind=t.kind, best_dev_loss=book.best[k].copy(),
                     best_epoch=book.best_epoch[k].copy(), epochs=book.epochs[k].copy(), seconds=seconds,
                     regimen=cfg.name, history=[h.copy() for h in book.history[k]]) for k, t in enumerate(tasks)]


def fit_depth_probes(train: ProbeData, dev: ProbeData, rank: Optional[int] = None,
                     regimen: str = "fast", seed: int = 0,
                     device: Optional[Union[str, torch.device]] = None) -> ProbeFit:
    """Fit a depth probe ``d_i = ||B_l h_i||^2`` for every layer l (Hewitt & Manning 2019).

    Loss per sentence ``sum_i |d_i - depth_i| / n``; ``rank`` defaults to the
    regimen's (D for ``paper``, min(D, 128) for ``fast``); ``regimen`` is
    ``"fast"`` or ``"paper"`` (see :mod:`mmdiag.probing.regimens`); ``device``
    defaults to the device of ``train.states``.  Deterministic for a given
    ``seed`` on a given device.
    """
    return fit_probes([ProbeTask("depth", train, dev)], rank, regimen, seed, device)[0]


def fit_distance_probes(train: ProbeData, dev: ProbeData, rank: Optional[int] = None,
                        regimen: str = "fast", seed: int = 0,
                        device: Optional[Union[str, torch.device]] = None) -> ProbeFit:
    """Fit a distance probe ``d_ij = ||B_l (h_i - h_j)||^2`` for every layer l.

    Loss per sentence ``sum_ij |d_ij - dist_ij| / n^2`` (Hewitt & Manning 2019);
    other arguments as :func:`fit_depth_probes`.
    """
    return fit_probes([ProbeTask("distance", train, dev)], rank, regimen, seed, device)[0]
