"""The optimisation settings of structural-probe training: the ``paper`` and ``fast`` regimens.

Both fit the same model with the same loss and the same per-layer bookkeeping
(:mod:`mmdiag.probing.fit`); they differ only in the numbers here.

* ``"paper"`` — Hewitt & Manning's (NAACL 2019, john-hewitt/structural-probes):
  init ``U(-0.05, 0.05)``, batches of 20 sentences, Adam lr 1e-3, at most 40
  epochs, lr x0.1 when the dev loss does not improve (``ReduceLROnPlateau``,
  patience 0, relative threshold 1e-4), stop a layer after 5 epochs without a
  dev improvement of more than 1e-4, keep each layer's best-dev weights.
* ``"fast"`` (default) — same loss, model and per-layer bookkeeping (plateau
  schedule, early stopping, best-dev snapshot); the ``U(-0.05, 0.05)`` init is
  rescaled per layer so that the mean prediction equals the mean gold value
  on the first training sentences; batches of 50 sentences (fewer when that
  leaves under 10 steps per epoch), Adam lr 1e-2 × min(1, √(64/D)) for
  states of width D, at most 8 epochs, stop a layer after 2 epochs without dev
  improvement.  The width scaling was added after lr 1e-2 diverged on
  768-wide ViT-B/32 region states with ~70 training sentences (image NSpr
  -0.30, root accuracy 0; with it 0.76 and 1.0; ``python -m mmdiag.bench_probes``).
  Unless a rank is given, ``fast`` fits rank-min(D, 128) probes (Hewitt & Manning
  2019 found probe quality saturating well below full rank): on ViT-B/32 states of
  256 synthetic scenes, rank 128 scored at least as well as full rank on every
  metric (text DSpr 0.812 vs 0.806, image DSpr 0.693 vs 0.599) in a quarter of
  the time (3.5 s vs 13.7 s).  Measured on synthetic
  BERT-like states (1,500 random trees of 3-30 words, 60/20/20 split,
  D = 256, 3 layers, anisotropic noise, an offset dimension; CPU, 1 thread;
  measured with lr 1e-2, before the width scaling):
  best-layer test DSpr paper 0.973 / fast 0.973 (layers 0.576/0.942/0.973 vs
  0.547/0.940/0.973) in 165 s / 18 s of CPU time; best-layer NSpr paper
  0.962 / fast 0.963 in 138 s / 17-26 s (``tests/probing/test_probe_fit.py``
  checks the agreement on a small planted case).  The time ratio depends on
  when the paper regimen stops early.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

__all__ = ["Regimen", "PAPER_REGIMEN", "FAST_REGIMEN", "REGIMENS", "get_regimen"]


@dataclass(frozen=True)
class Regimen:
    """Optimisation settings of a probe-training regimen."""

    name: str
    batch_size: int
    lr: float
    max_epochs: int
    stop_patience: int          # stop a layer after this many epochs without dev gain
    scaled_init: bool           # rescale the init so mean prediction = mean gold
    min_steps_per_epoch: int = 0  # shrink the batch on small training sets
    plateau_factor: float = 0.1
    init_range: float = 0.05
    #: scale the learning rate by min(1, sqrt(64 / D)) for states of width D (wide states need smaller steps)
    width_scaled_lr: bool = False
    #: default probe rank when none is asked for: min(D, max_rank); 0 = D (full rank, Hewitt's default)
    max_rank: int = 0

    def batch_for(self, n_train: int) -> int:
        """Sentences per step: ``batch_size``, smaller when that would leave fewer
        than ``min_steps_per_epoch`` steps per epoch."""
        if self.min_steps_per_epoch <= 0:
            return self.batch_size
        return max(1, min(self.batch_size, math.ceil(n_train / self.min_steps_per_epoch)))

    def rank_for(self, D: int, rank: Optional[int] = None) -> int:
        """The probe rank to fit on states of width ``D``: ``rank`` when given, else
        ``min(D, max_rank)`` (``D`` when ``max_rank`` is 0)."""
        r = (min(D, self.max_rank) if self.max_rank else D) if rank is None else int(rank)
        if r < 1:
            raise ValueError("rank must be >= 1")
        return r

    def lr_for(self, D: int) -> float:
        """Adam's initial learning rate on states of width ``D``: ``lr``, times
        ``min(1, sqrt(64 / D))`` when ``width_scaled_lr``."""
        return self.lr * min(1.0, math.sqrt(64.0 / D)) if self.width_scaled_lr else self.lr


PAPER_REGIMEN = Regimen("paper", batch_size=20, lr=1e-3, max_epochs=40, stop_patience=5,
                        scaled_init=False)
FAST_REGIMEN = Regimen("fast", batch_size=50, lr=1e-2, max_epochs=8, stop_patience=2,
                       scaled_init=True, min_steps_per_epoch=10, width_scaled_lr=True, max_rank=128)
#: the regimens by name
REGIMENS = {"paper": PAPER_REGIMEN, "fast": FAST_REGIMEN}


def get_regimen(name: str) -> Regimen:
    """The regimen called ``name``; ``ValueError`` for an unknown name."""
    if name not in REGIMENS:
        raise ValueError(f"regimen must be one of {sorted(REGIMENS)}, got {name!r}")
    return REGIMENS[name]
