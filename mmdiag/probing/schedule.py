"""Per-probe bookkeeping of probe training: plateau schedule, best-dev checkpoint and early stopping.

After every epoch each (task, layer) probe is judged on its own dev loss,
as Hewitt & Manning's training loop (john-hewitt/structural-probes) judges
its single probe:

* learning rate: ``ReduceLROnPlateau(mode="min", factor, patience=0,
  threshold=1e-4 relative)`` — multiplied by ``plateau_factor`` whenever the
  dev loss is not below ``(1 - 1e-4)`` x the best seen by the schedule;
* checkpoint: the weights are kept when the dev loss improves on the best by
  more than 1e-4 (absolute);
* early stopping: a probe stops when its last kept epoch is ``stop_patience``
  or more epochs old; a stopped probe keeps its best weights and is no
  longer trained or evaluated.

Only numbers are kept here; the caller copies the weights of the probes that
:meth:`LayerSchedule.end_epoch` reports as improved.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LayerSchedule"]

#: ReduceLROnPlateau's relative threshold
PLATEAU_THRESHOLD = 1e-4
#: the dev-loss gain that counts as an improvement for checkpointing and early stopping
STOP_THRESHOLD = 1e-4


@dataclass
class LayerSchedule:
    """The state of K tasks x L layers of probes: all arrays are (K, L).

    ``lr``: current learning rates; ``best``: best dev loss of the kept weights;
    ``sched_best``: the plateau schedule's best; ``best_epoch``: epoch of the
    kept weights (-1 before the first); ``epochs``: epochs trained;
    ``active``: still training; ``history``: per task, per epoch the (L,)
    dev losses (NaN for probes already stopped).
    """

    lr: np.ndarray
    plateau_factor: float
    stop_patience: int
    best: np.ndarray
    sched_best: np.ndarray
    best_epoch: np.ndarray
    epochs: np.ndarray
    active: np.ndarray
    history: list[list[np.ndarray]] = field(default_factory=list)

    @classmethod
    def start(cls, n_tasks: int, n_layers: int, lr: float, plateau_factor: float,
              stop_patience: int) -> "LayerSchedule":
        """Every probe active at learning rate ``lr``, nothing seen yet."""
        shape = (n_tasks, n_layers)
        return cls(lr=np.full(shape, lr), plateau_factor=plateau_factor, stop_patience=stop_patience,
                   best=np.full(shape, np.inf), sched_best=np.full(shape, np.inf),
                   best_epoch=np.full(shape, -1, dtype=np.int64), epochs=np.zeros(shape, dtype=np.int64),
                   active=np.ones(shape, dtype=bool), history=[[] for _ in range(n_tasks)])

    def end_epoch(self, epoch: int, losses: np.ndarray) -> list[tuple[int, int]]:
        """Record epoch ``epoch`` (0-based) with dev ``losses`` (K, L) (read only where active).

        Counts the epoch for the active probes, updates their learning rates,
        checkpoints and stops them; returns the (task, layer) pairs whose
        weights are to be kept as their new best.
        """
        self.epochs[self.active] += 1
        improved: list[tuple[int, int]] = []
        for k in range(self.lr.shape[0]):
            self.history[k].append(np.where(self.active[k], losses[k], np.nan))
            for l in np.flatnonzero(self.active[k]):
                v = float(losses[k, l])
                if v < self.sched_best[k, l] * (1 - PLATEAU_THRESHOLD):
                    self.sched_best[k, l] = v
                else:
                    self.lr[k, l] *= self.plateau_factor
                if v < self.best[k, l] - STOP_THRESHOLD:
                    self.best[k, l] = v
                    self.best_epoch[k, l] = epoch
                    improved.append((k, int(l)))
                elif self.best_epoch[k, l] < epoch - (self.stop_patience - 1):
                    self.active[k, l] = False
        return improved
