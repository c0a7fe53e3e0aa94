"""Cost of the bootstrap: B replicates of each batched statistic against one plain metric call.

Run ``python -m mmdiag.uncertainty.bench`` (defaults: B = 200, n = 256 and 2048, d = 512, CPU,
float64, torch's default threads); ``--only rankme`` restricts to some statistics, ``--n``,
``--d``, ``--boot``, ``--device`` change the sizes. Not imported by the plugin. Prints one line per
(statistic, n): the plain metric's time (best of 3), the bootstrap's time (once, including the
statistic's precomputation) and their ratio, i.e. how many plain evaluations the B replicates
cost (B = 200 evaluated one by one would be 200).

>>> row = measure("cone", n=32, d=8, boot=20)
>>> row.name, row.n, row.ratio > 0
('cone', 32, True)
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mmdiag.metrics.cone import mean_pairwise_cosine
from mmdiag.metrics.gap import gap_l2i, gap_norm
from mmdiag.metrics.geometry import alignment, linear_cka, rankme, uniformity
from mmdiag.metrics.isotropy import isotropy
from mmdiag.uncertainty.batched import (batched_alignment, batched_cone, batched_gap_l2i, batched_gap_norm,
                                        batched_uniformity)
from mmdiag.uncertainty.batched_spectral import batched_isotropy, batched_linear_cka, batched_rankme
from mmdiag.uncertainty.bootstrap import bootstrap

#: name -> (plain metric, batched factory, number of embedding sets it takes)
STATISTICS: dict[str, tuple[Callable, Callable, int]] = {
    "cone": (mean_pairwise_cosine, batched_cone, 1),
    "gap_norm": (gap_norm, batched_gap_norm, 2),
    "gap_l2i": (gap_l2i, batched_gap_l2i, 2),
    "alignment": (alignment, batched_alignment, 2),
    "uniformity": (uniformity, batched_uniformity, 1),
    "rankme": (rankme, batched_rankme, 1),
    "linear_cka": (linear_cka, batched_linear_cka, 2),
    "isotropy": (isotropy, batched_isotropy, 1),
}


@dataclass(frozen=True)
class Timing:
    """One line of the benchmark."""

    name: str
    n: int
    d: int
    boot: int
    plain_s: float
    bootstrap_s: float

    @property
    def ratio(self) -> float:
        return self.bootstrap_s / self.plain_s if self.plain_s > 0 else float("inf")

    def line(self) -> str:
        return (f"{self.name:<11} n={self.n:<5d} plain {self.plain_s * 1e3:9.2f} ms   "
                f"B={self.boot} {self.bootstrap_s:8.3f} s   ratio {self.ratio:8.1f}")


def _inputs(n: int, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.3
    txt = 0.5 * img + torch.randn(n, d, generator=gen, dtype=torch.float64) - 0.3
    return img.to(device), txt.to(device)


def measure(name: str, n: int, d: int = 512, boot: int = 200, device: str = "cpu") -> Timing:
    """Time one plain call (best of 3) and one B-replicate bootstrap of statistic ``name``."""
    plain, factory, arity = STATISTICS[name]
    args = _inputs(n, d, device)[:arity]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        plain(*args)
        best = min(best, time.perf_counter() - start)
    start = time.perf_counter()
    bootstrap(factory(*args), n, boot, seed=0)
    if device != "cpu":
        torch.cuda.synchronize()
    return Timing(name, n, d, boot, best, time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdiag.uncertainty.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", choices=sorted(STATISTICS), default=list(STATISTICS))
    args = parser.parse_args(argv)
    print(f"# bootstrap cost, B={args.boot}, d={args.d}, {args.device}, float64, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n in args.n:
        for name in args.only:
            print(measure(name, n, args.d, args.boot, args.device).line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
