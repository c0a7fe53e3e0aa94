"""``python -m mmdiag.bench``: what a full mmdiag run costs over the model's bare forward pass.

In one process, on the same model spec, data and batch size:

(a) the *floor*: the adapter's forward pass with hidden states and nothing else
    (batches prepared beforehand, one untimed warm-up batch, only
    ``adapter.forward`` timed, plus a CUDA synchronise on GPU);
(b) the *suite*: ``pytest.main`` on the built-in checks, in this process, wall
    time of the whole call (start-up, model load, collection, mmdiag's own
    forward pass with its reductions, every check, the reports).

It prints ``suite_s / forward_s`` and where the suite's time goes (mmdiag's own
``results.json`` timings: load, recorded forward, seconds per check family),
plus peak memory per phase. ``--memory-scaling`` runs some families at N and 8N
samples in separate processes and compares their peak RSS. A command that
prints figures, never a timed test: see docs/performance.md.

The modules, one job each: :mod:`.config` (what to measure), :mod:`.memory`
(peak RSS per phase), :mod:`.run` (the two measured phases), :mod:`.report`
(the figures and their table), :mod:`.processes` (runs in fresh processes:
``--repeat`` and ``--memory-scaling``), :mod:`.cli` (the command line).
"""
from __future__ import annotations

from mmdiag.devtools.bench.cli import build_parser, main, parse_families
from mmdiag.devtools.bench.config import BenchConfig
from mmdiag.devtools.bench.memory import PeakTracker, maxrss_mb, reset_peak_rss, status_mb
from mmdiag.devtools.bench.processes import memory_scaling, repeated
from mmdiag.devtools.bench.report import figures, print_table, render_rows, scaling_rows
from mmdiag.devtools.bench.run import family_args, run, run_floor, run_suite, suite_args

__all__ = ["BenchConfig", "PeakTracker", "build_parser", "family_args", "figures", "main", "maxrss_mb",
           "memory_scaling", "parse_families", "print_table", "render_rows", "repeated", "reset_peak_rss", "run",
           "run_floor", "run_suite", "scaling_rows", "status_mb", "suite_args"]
