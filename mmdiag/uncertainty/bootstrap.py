"""Seeded, vectorised nonparametric bootstrap over samples (Efron 1979; Efron & Tibshirani 1993).

The n samples of a result (image–caption pairs, sentences, ...) are treated as iid draws from
the population the check is about. A *resample* draws n of them with replacement; a statistic
evaluated on B resamples gives the bootstrap replicates θ*_1 … θ*_B, whose spread estimates the
sampling variability of the statistic θ̂ computed on the real data:

* ``se`` = std(θ*_b) with ddof = 1 (Efron & Tibshirani 1993, eq. 6.6);
* the **percentile** interval [q_{(1−level)/2}, q_{(1+level)/2}] of the replicates (ibid. §13.3),
  quantiles by linear interpolation (numpy's default);
* optionally **BCa**, the bias-corrected and accelerated percentile interval (Efron 1987,
  JASA 82:171; ibid. §14.3), as ``scipy.stats.bootstrap(method="BCa")`` computes it.

Why the percentile interval is the default: it respects the metric's range (every replicate is a
value of the metric, so a cone interval stays in [−1/(n−1), 1]), is invariant under monotone
reparametrisation, and costs nothing beyond the replicates. BCa is second-order accurate and
corrects the median bias of the bootstrap distribution (useful for the pairwise statistics, whose
resamples contain duplicated rows, see :mod:`mmdiag.uncertainty.batched`), but needs the
jackknife: n extra evaluations of the statistic on leave-one-out samples, which for n = 2048 is
about ten times the cost of B = 200 replicates. It is offered as ``method="bca"``.

What an interval covers: the variability of the result over the draw of the n evaluation
samples, the model held fixed. It does NOT cover the choice of the evaluation set's distribution,
run-to-run nondeterminism of the model, or training noise (another seed of the model).

The statistic protocol: ``statistic_batched(idx)`` takes a LongTensor ``idx`` of shape
``(b, m)`` (row k: the sample indices of resample k; m = n for the bootstrap, n − 1 for the
jackknife of BCa) and returns a tensor ``(b,)``: the statistic on each resample at once. The
resample indices are generated on the CPU from fixed blocks of :data:`ROW_BLOCK` rows, block k
seeded with ``SeedSequence([seed, k])``, then moved to the device: the same ``(n, seed)`` gives
the same resamples on every run, every device and for every chunk size.

Chunk rule: resamples are evaluated ``chunk`` rows at a time with
``chunk = clamp(memory_budget // bytes_per_resample, 1, B)``, where ``bytes_per_resample`` is the
statistic's own estimate of its working memory per resample (attribute of
:class:`BatchedStatistic`; ``32·n`` bytes for a plain callable) and ``memory_budget`` defaults to
:data:`MEMORY_BUDGET` = 256 MiB. Peak memory is therefore about the budget plus what the statistic
precomputed, whatever B is.

>>> import torch
>>> x = torch.arange(10, dtype=torch.float64)
>>> mean = lambda idx: x[idx].mean(dim=1)
>>> ci = bootstrap(mean, n=10, boot=2000, seed=0)
>>> bool(ci.low < 4.5 < ci.high), ci.method, ci.resamples
(True, 'bootstrap-percentile', 2000)
>>> ci == bootstrap(mean, n=10, boot=2000, seed=0)            # seeded: the same every time
True
>>> bootstrap(mean, n=10, boot=0, seed=0) is None              # B = 0: bootstrap off
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np
import torch

from mmdiag.uncertainty.interval import Interval

__all__ = [
    "ROW_BLOCK",
    "MEMORY_BUDGET",
    "METHODS",
    "BatchedStatistic",
    "resample_indices",
    "resample_counts",
    "chunk_size",
    "bootstrap_replicates",
    "jackknife_replicates",
    "bootstrap",
    "interval_from_replicates",
]

#: resample rows are generated in blocks of this many, each block from its own seeded generator
ROW_BLOCK = 64
#: default working-memory budget of one chunk of resamples, in bytes
MEMORY_BUDGET = 256 * 2**20
#: the interval methods :func:`bootstrap` offers, and the ``method`` string each one records
METHODS = {"percentile": "bootstrap-percentile", "bca": "bootstrap-bca"}

StatisticFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BatchedStatistic:
    """A statistic evaluated on many resamples at once, with what :func:`bootstrap` needs to know.

    ``fn(idx (b, m)) -> (b,)``; ``n``: the number of samples; ``device``: where ``fn`` computes
    (the indices are moved there); ``bytes_per_resample``: working memory per resample row, for
    the chunk rule; ``name``: for messages and the benchmark.
    """

    fn: StatisticFn = field(repr=False)
    n: int
    device: torch.device
    bytes_per_resample: int
    name: str = "statistic"

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.fn(idx.to(self.device))

    def point(self) -> float:
        """The statistic on the data themselves (the identity resample)."""
        idx = torch.arange(self.n, device=self.device)[None, :]
        return float(self.fn(idx)[0])


def _block_seed(seed: int, block: int) -> int:
    state = np.random.SeedSequence([int(seed), int(block)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))  # torch seeds are signed 64-bit


def resample_indices(n: int, boot: int, seed: int, device: Union[str, torch.device, None] = None,
                     start: int = 0) -> torch.Tensor:
    """Rows ``start … start+boot−1`` of the seeded stream of resamples: a LongTensor ``(boot, n)``.

    Each row holds n indices drawn uniformly from ``0 … n−1`` with replacement. Row r belongs to
    block ``r // ROW_BLOCK``, drawn by a CPU ``torch.Generator`` seeded from
    ``SeedSequence([seed, block])``, so a row does not depend on ``boot``, ``start`` or the
    device (the indices are moved to ``device`` afterwards). ``seed`` must be >= 0.

    >>> a = resample_indices(5, 3, seed=1)
    >>> a.shape, a.dtype, bool((a >= 0).all() and (a < 5).all())
    (torch.Size([3, 5]), torch.int64, True)
    >>> bool((resample_indices(5, 2, seed=1, start=1) == a[1:]).all())
    True
    """
    if n < 1:
        raise ValueError(f"resample_indices needs n >= 1, got {n}")
    if boot < 0 or start < 0:
        raise ValueError(f"resample_indices needs boot >= 0 and start >= 0, got {boot}, {start}")
    if seed < 0:
        raise ValueError(f"resample_indices needs seed >= 0, got {seed}")
    stop = start + boot
    blocks = []
    for block in range(start // ROW_BLOCK, (stop + ROW_BLOCK - 1) // ROW_BLOCK):
        gen = torch.Generator().manual_seed(_block_seed(seed, block))
        blocks.append(torch.randint(0, n, (ROW_BLOCK, n), generator=gen))
    rows = torch.cat(blocks) if blocks else torch.empty((0, n), dtype=torch.int64)
    offset = (start // ROW_BLOCK) * ROW_BLOCK
    out = rows[start - offset:stop - offset]
    return out.to(device) if device is not None else out


def resample_counts(idx: torch.Tensor, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """How often each sample occurs in each resample: ``(b, n)`` with ``counts[k, i] = #{j: idx[k, j] = i}``.

    Most batched statistics are weighted sums over the samples with these weights.

    >>> resample_counts(torch.tensor([[0, 0, 2]]), 3)
    tensor([[2., 0., 1.]], dtype=torch.float64)
    """
    out = torch.zeros((idx.shape[0], n), dtype=dtype, device=idx.device)
    return out.scatter_add_(1, idx, torch.ones(idx.shape, dtype=dtype, device=idx.device))


def chunk_size(statistic: StatisticFn, n: int, boot: int, memory_budget: int = MEMORY_BUDGET) -> int:
    """Resamples per chunk: ``clamp(memory_budget // bytes_per_resample, 1, boot)`` (module docstring)."""
    per = int(getattr(statistic, "bytes_per_resample", 32 * n))
    return max(1, min(max(boot, 1), int(memory_budget) // max(per, 1)))


def _device_of(statistic: StatisticFn, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device(getattr(statistic, "device", "cpu"))


def _evaluate(statistic: StatisticFn, rows: Callable[[int, int], torch.Tensor], total: int,
              chunk: int) -> torch.Tensor:
    out = []
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        values = statistic(rows(start, count))
        values = torch.as_tensor(values).reshape(-1)
        if values.shape[0] != count:
            raise ValueError(f"statistic returned {values.shape[0]} values for {count} resamples")
        out.append(values.detach().to("cpu", torch.float64))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def bootstrap_replicates(statistic_batched: StatisticFn, n: int, boot: int, seed: int,
                         device=None, chunk: Optional[int] = None,
                         memory_budget: int = MEMORY_BUDGET) -> torch.Tensor:
    """The B bootstrap replicates θ*_1 … θ*_B as a float64 CPU tensor ``(boot,)`` (NaN kept).

    Use it for diagnostics the interval does not show, e.g. the bootstrap bias estimate
    ``replicates.nanmean() − θ̂`` (Efron & Tibshirani 1993, eq. 10.2).
    """
    dev = _device_of(statistic_batched, device)
    step = chunk or chunk_size(statistic_batched, n, boot, memory_budget)
    return _evaluate(statistic_batched,
                     lambda s, c: resample_indices(n, c, seed, dev, start=s), boot, step)


def jackknife_replicates(statistic_batched: StatisticFn, n: int, device=None, chunk: Optional[int] = None,
                         memory_budget: int = MEMORY_BUDGET) -> torch.Tensor:
    """θ_(i), the statistic with sample i left out, i = 0 … n−1 (rows of ``idx`` have n − 1 entries)."""
    if n < 2:
        raise ValueError(f"the jackknife needs n >= 2 samples, got {n}")
    dev = _device_of(statistic_batched, device)
    step = chunk or chunk_size(statistic_batched, n, n, memory_budget)

    def rows(start: int, count: int) -> torch.Tensor:
        left_out = torch.arange(start, start + count, device=dev)[:, None]
        base = torch.arange(n - 1, device=dev)[None, :]
        return base + (base >= left_out).long()

    return _evaluate(statistic_batched, rows, n, step)


def _bca_levels(replicates: torch.Tensor, value: float, jack: torch.Tensor,
                level: float) -> Optional[tuple[float, float]]:
    """BCa's adjusted quantile levels (α₁, α₂); None when z₀ is infinite (θ̂ outside all replicates).

    z₀ = Φ⁻¹((#{θ* < θ̂} + #{θ* ≤ θ̂}) / 2B) (ties count half, as scipy);
    a = Σ U_i³ / (6 (Σ U_i²)^{3/2}), U_i = (n − 1)(θ̄_(·) − θ_(i)) (jackknife; 0 when all U_i = 0);
    α_{1,2} = Φ(z₀ + (z₀ + z_α)/(1 − a(z₀ + z_α))) at z_α = Φ⁻¹((1 ∓ level)/2).
    """
    from scipy.special import ndtr, ndtri

    b = replicates.numel()
    frac = (float((replicates < value).sum()) + float((replicates <= value).sum())) / (2 * b)
    z0 = float(ndtri(frac))
    if not math.isfinite(z0):
        return None
    j = jack[torch.isfinite(jack)].numpy()
    u = (j.size - 1) * (j.mean() - j) if j.size else np.zeros(1)
    den = float(np.sum(u ** 2))
    accel = float(np.sum(u ** 3)) / (6.0 * den ** 1.5) if den > 0 else 0.0
    out = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        za = float(ndtri(q))
        out.append(float(ndtr(z0 + (z0 + za) / (1 - accel * (z0 + za)))))
    return out[0], out[1]


def interval_from_replicates(replicates: torch.Tensor, level: float = 0.95, method: str = "percentile",
                             value: Optional[float] = None,
                             jackknife: Optional[torch.Tensor] = None) -> Interval:
    """The :class:`Interval` of a set of replicates; non-finite replicates are dropped first.

    With fewer than 2 finite replicates the interval is undefined (NaN bounds and se,
    ``resamples`` = the finite count). ``method="bca"`` needs ``value`` (θ̂) and the
    ``jackknife`` replicates; when z₀ is infinite it falls back to the percentile interval and
    records ``"bootstrap-percentile"``.

    >>> r = torch.arange(101, dtype=torch.float64)
    >>> ci = interval_from_replicates(r, level=0.9)
    >>> round(ci.low, 9), round(ci.high, 9), ci.resamples
    (5.0, 95.0, 101)
    """
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap interval method {method!r}; expected one of {sorted(METHODS)}")
    r = replicates.detach().to("cpu", torch.float64).reshape(-1)
    r = r[torch.isfinite(r)]
    if r.numel() < 2:
        return Interval(float("nan"), float("nan"), float("nan"), level=level, method=METHODS[method],
                        resamples=int(r.numel()))
    se = float(r.std(unbiased=True))
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    used = method
    if method == "bca":
        if value is None or jackknife is None:
            raise ValueError("method='bca' needs the point estimate (value) and the jackknife replicates")
        levels = _bca_levels(r, float(value), jackknife, level)
        if levels is None:
            used = "percentile"
        else:
            lo_q, hi_q = levels
    q = torch.quantile(r, torch.tensor([lo_q, hi_q], dtype=torch.float64))
    low, high = float(q[0]), float(q[1])
    return Interval(low, max(low, high), se, level=level, method=METHODS[used], resamples=int(r.numel()))


def bootstrap(statistic_batched: StatisticFn, n: int, boot: int, seed: int, level: float = 0.95,
              device=None, value: Optional[float] = None, method: str = "percentile",
              chunk: Optional[int] = None, memory_budget: int = MEMORY_BUDGET) -> Optional[Interval]:
    """Bootstrap interval and standard error of a statistic over n samples; None when ``boot == 0``.

    ``statistic_batched(idx (b, m)) -> (b,)`` (module docstring); ``boot``: the number of
    resamples B (0 = bootstrap off; B >= 200 for a stable se, >= 1000 for the 2.5% tails);
    ``seed``: resample stream (>= 0); ``level``: coverage; ``device``: where the indices go
    (default: the statistic's ``device`` attribute, else the CPU); ``value``: θ̂, only used by
    ``method="bca"`` (computed on the identity resample when missing); ``chunk``: resamples per
    evaluation (default: the chunk rule of the module docstring).
    """
    if boot == 0:
        return None
    if boot < 0:
        raise ValueError(f"bootstrap needs boot >= 0, got {boot}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap needs 0 < level < 1, got {level}")
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap interval method {method!r}; expected one of {sorted(METHODS)}")
    reps = bootstrap_replicates(statistic_batched, n, boot, seed, device, chunk, memory_budget)
    if method == "percentile":
        return interval_from_replicates(reps, level)
    dev = _device_of(statistic_batched, device)
    if value is None:
        value = float(statistic_batched(torch.arange(n, device=dev)[None, :])[0])
    jack = jackknife_replicates(statistic_batched, n, device, chunk, memory_budget)
    return interval_from_replicates(reps, level, "bca", value=value, jackknife=jack)
