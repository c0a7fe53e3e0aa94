"""Bench runs in fresh processes: ``--repeat`` (the median of N timing runs) and ``--memory-scaling``.

Each run is ``python -m mmdiag.bench ... --json FILE --quiet`` in a child
process, so that its peak RSS and its timings owe nothing to an earlier run
in the same process (allocator state, caches, imports).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from mmdiag.checkspec import FAMILY_ORDER
from mmdiag.devtools.bench.config import SCALING_FACTOR, SCALING_SETS, BenchConfig


def child_run(cfg: BenchConfig, path: Path, *extra: str) -> dict[str, Any]:
    """``python -m mmdiag.bench`` with ``cfg`` in a fresh process; its JSON figures."""
    cmd = [sys.executable, "-m", "mmdiag.bench", "--model", cfg.model, "-n", str(cfg.samples),
           "--batch-size", str(cfg.batch_size), "--device", cfg.device, "--dtype", cfg.dtype,
           "--data", cfg.data, "--seed", str(cfg.seed), "--families", ",".join(cfg.families or FAMILY_ORDER),
           "--select", cfg.select, "--json", str(path), "--quiet",
           *(["--floor-twice"] if cfg.floor_twice else []), *(["--floor-attentions"] if cfg.floor_attentions else []),
           *(["--floor-sdpa"] if cfg.floor_sdpa else []),
           *(["--no-cache"] if cfg.no_cache else []), *(["--all-plugins"] if cfg.all_plugins else []),
           *(f"--suite-arg={a}" for a in cfg.suite_args), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not path.is_file():
        raise RuntimeError(f"bench run failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return json.loads(path.read_text(encoding="utf-8"))


def repeated(cfg: BenchConfig, times: int) -> dict[str, Any]:
    """Phases (a) and (b) ``times`` times, each pair in a fresh process; the figures of the median run.

    On a shared or virtual machine one floor and one suite can each be off by
    10 % or more, which moves the ratio by as much; the run with the median
    ratio is reported whole (its keys stay consistent with each other) and
    ``repeats`` lists every run's ``forward_s``, ``suite_s``, ``ratio``,
    ``cpu_ratio``, ``mm_forward_s``, ``mm_forward_ratio`` and ``mm_forward_cpu_ratio``, with
    ``ratio_min``/``ratio_max``.
    """
    runs = []
    for _ in range(times):
        with tempfile.TemporaryDirectory(prefix="mmdiag-bench-") as tmp:
            runs.append(child_run(cfg, Path(tmp) / "fig.json"))
    ordered = sorted(runs, key=lambda fig: fig["ratio"])
    fig = dict(ordered[(len(ordered) - 1) // 2])
    keys = ("forward_s", "forward_cpu_s", "suite_s", "ratio", "cpu_ratio", "mm_forward_s", "mm_forward_ratio",
            "mm_forward_cpu_ratio", "prepare_s", "mm_forward_ratio_with_prepare", "mm_forward_cpu_ratio_with_prepare")
    fig["repeats"] = [{k: run.get(k) for k in keys} for run in runs]
    fig["ratio_min"], fig["ratio_max"] = ordered[0]["ratio"], ordered[-1]["ratio"]
    return fig


def memory_scaling(cfg: BenchConfig, sets: Sequence[Sequence[str]] = SCALING_SETS,
                   factor: int = SCALING_FACTOR) -> list[dict[str, Any]]:
    """Peak RSS of the suite on some families at N and factor*N, each in a fresh process."""
    out = []
    for families in sets:
        peaks = {}
        for n in (cfg.samples, cfg.samples * factor):
            with tempfile.TemporaryDirectory(prefix="mmdiag-bench-") as tmp:
                path = Path(tmp) / "fig.json"
                sub = BenchConfig(**{**cfg.__dict__, "samples": n, "families": tuple(families)})
                peaks[n] = child_run(sub, path, "--suite-only")
        small, large = peaks[cfg.samples], peaks[cfg.samples * factor]

        def working(fig: dict) -> float:
            base = fig.get("rss_after_collection_mb")
            return fig["peak_rss_mb"] - base if base is not None else float("nan")

        out.append({"families": list(families), "n_small": cfg.samples, "n_large": cfg.samples * factor,
                    "peak_small_mb": small["peak_rss_mb"], "peak_large_mb": large["peak_rss_mb"],
                    "ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
                    "working_small_mb": working(small), "working_large_mb": working(large),
                    "suite_s_small": small["suite_s"], "suite_s_large": large["suite_s"],
                    "peak_gpu_small_mb": small.get("suite_peak_gpu_mb"),
                    "peak_gpu_large_mb": large.get("suite_peak_gpu_mb")})
    return out
