"""The figures of one bench run: the JSON-able dict (:func:`figures`) and the table printed from it.

Each key is described in docs/performance.md. The table is a rich table on a
terminal and aligned plain text otherwise (what a log or a test captures).
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Optional

from mmdiag.checkspec import FAMILY_ORDER
from mmdiag.devtools.bench.config import MEMORY_TARGET, RATIO_TARGET, BenchConfig


def figures(cfg: BenchConfig, floor: Optional[dict], suite: dict) -> dict[str, Any]:
    """The JSON-able figures of one bench run (see docs/performance.md for each key)."""
    timings = suite.get("timings", {})
    suite_s = suite["suite_s"]
    checks = {k: float(v) for k, v in (timings.get("checks_s") or {}).items()}
    mm_forward = timings.get("forward_s")
    mm_forward_cpu = timings.get("forward_cpu_s")
    mm_load = timings.get("load_s")
    accounted = sum(v for v in (mm_load, mm_forward) if v is not None) + sum(checks.values())
    fig: dict[str, Any] = {
        "model": cfg.model, "n": floor["n"] if floor else suite.get("run_n") or cfg.samples,
        "batch_size": cfg.batch_size, "device": floor["device"] if floor else suite.get("run_device") or cfg.device,
        "dtype": cfg.dtype, "data": cfg.data, "n_params": suite.get("run_n_params"),
        "families": list(cfg.families) if cfg.families else list(FAMILY_ORDER), "select": cfg.select,
        "suite_s": suite_s, "suite_cpu_s": suite.get("suite_cpu_s"), "suite_exit_code": suite["exit_code"],
        "suite_items": suite.get("items"),
        "statuses": suite.get("statuses", {}),
        "suite_load_s": mm_load, "mm_forward_s": mm_forward, "mm_forward_cpu_s": mm_forward_cpu,
        "mm_total_s": timings.get("total_s"),
        "checks_s": checks,
        "checks_pct": {k: 100.0 * v / suite_s for k, v in checks.items()} if suite_s > 0 else {},
        "suite_setup_s": suite.get("setup_s"),
        "suite_other_s": suite_s - accounted,
        "other_timings": {k: v for k, v in timings.items()
                          if k not in ("load_s", "forward_s", "forward_cpu_s", "total_s", "checks_s", "cache")},
        "suite_cache": timings.get("cache", "off" if cfg.no_cache else None),
        "suite_peak_rss_mb": suite["peak_rss_mb"], "suite_peak_gpu_mb": suite["peak_gpu_mb"],
        "rss_after_collection_mb": suite.get("rss_after_collection_mb"),
        "peak_rss_mb": suite["lifetime_peak_rss_mb"], "rss_phase_reset": bool(suite.get("rss_phase_reset")),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "torch_threads": _torch_threads()},
        "allocator_tuned": _allocator_tuned(),
        "plugins": "all installed" if cfg.all_plugins else "mmdiag only",
    }
    if floor is not None:
        fig.update({"forward_s": floor["forward_s"], "forward_cpu_s": floor.get("forward_cpu_s"),
                    "load_s": floor["load_s"], "n_params": floor.get("n_params"),
                    "forward_ms_per_sample": 1000.0 * floor["forward_s"] / max(floor["n"], 1),
                    "floor_peak_rss_mb": floor["peak_rss_mb"], "floor_peak_gpu_mb": floor["peak_gpu_mb"]})
        fig["ratio"] = suite_s / floor["forward_s"] if floor["forward_s"] > 0 else float("inf")
        if mm_load is not None:
            fig["ratio_without_load"] = (suite_s - mm_load) / floor["forward_s"]
        if mm_forward is not None:
            fig["mm_forward_ratio"] = mm_forward / floor["forward_s"]
        if mm_forward_cpu and floor.get("forward_cpu_s"):
            fig["mm_forward_cpu_ratio"] = mm_forward_cpu / floor["forward_cpu_s"]
        if floor.get("prepare_s") is not None:  # what the recorded forward does beyond the floor's forward
            fig["prepare_s"], fig["prepare_cpu_s"] = floor["prepare_s"], floor.get("prepare_cpu_s")
            if mm_forward is not None:
                fig["mm_forward_ratio_with_prepare"] = mm_forward / (floor["forward_s"] + floor["prepare_s"])
            if mm_forward_cpu and floor.get("forward_cpu_s") and floor.get("prepare_cpu_s") is not None:
                fig["mm_forward_cpu_ratio_with_prepare"] = mm_forward_cpu / (floor["forward_cpu_s"]
                                                                             + floor["prepare_cpu_s"])
        if floor.get("forward_cpu_s") and suite.get("suite_cpu_s") is not None:
            fig["cpu_ratio"] = suite["suite_cpu_s"] / floor["forward_cpu_s"]
        if "forward_attn_s" in floor:
            fig["forward_attn_s"] = floor["forward_attn_s"]
        if floor.get("forward_sdpa_s"):
            fig["forward_sdpa_s"] = floor["forward_sdpa_s"]
            fig["ratio_vs_sdpa"] = suite_s / floor["forward_sdpa_s"]
        if "forward_after_s" in floor:
            fig["forward_after_s"] = floor["forward_after_s"]
            fig["ratio_vs_floor_after"] = suite_s / floor["forward_after_s"]
    return fig


def _torch_threads() -> Optional[int]:
    """torch's intra-op thread count (the floor and the suite share it)."""
    try:
        import torch

        return torch.get_num_threads()
    except Exception:  # pragma: no cover - torch is a dependency
        return None


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """A figure for the table: ``-`` for None, floats to ``digits`` places."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _allocator_tuned() -> bool:
    from mmdiag import heap

    return heap.allocator_tuned()


def render_rows(fig: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows of the main table."""
    suite_s = fig["suite_s"]
    rows = [("model", fig["model"], f"{_fmt(fig.get('n_params'))} parameters"),
            ("samples / batch", f"{fig['n']} / {fig['batch_size']}",
             f"data {fig['data']}, {fig['device']}, {fig['dtype']}"),
            ("allocator", "tuned" if fig.get("allocator_tuned") else "default",
             "mmdiag.heap.tune_allocator, in effect for both phases" if fig.get("allocator_tuned")
             else "glibc defaults (not glibc, or MALLOC_*_ / MMDIAG_DEFAULT_MALLOC set)"),
            ("families", ",".join(fig["families"]), f"selected by {'-k' if fig['select'] == 'k' else 'files'}; "
                                                      f"{fig.get('suite_items')} items; "
                                                      f"pytest plugins: {fig.get('plugins')}")]
    if "forward_s" in fig:
        rows += [("(a) load", _fmt(fig["load_s"], " s"), "load_adapter, floor phase"),
                 ("(a) forward_s (floor)", _fmt(fig["forward_s"], " s", 3),
                  f"{_fmt(fig['forward_ms_per_sample'], ' ms', 1)}/sample, hidden states only")]
        if "forward_attn_s" in fig:
            rows.append(("(a) forward + attentions", _fmt(fig["forward_attn_s"], " s", 3),
                         "the same with output_attentions=True"))
        if "forward_sdpa_s" in fig:
            rows.append(("(a) forward, sdpa kernels", _fmt(fig["forward_sdpa_s"], " s", 3),
                         f"attn_implementation='sdpa'; suite / sdpa floor = {_fmt(fig['ratio_vs_sdpa'], 'x')}"))
    if "forward_after_s" in fig:
        rows.append(("(a') floor again, after (b)", _fmt(fig["forward_after_s"], " s", 3),
                     "differs from (a) by more than 20%: a noisy machine" if abs(
                         fig["forward_after_s"] / fig["forward_s"] - 1) > 0.2 else "within 20% of (a)"))
    rows.append(("(b) suite_s", _fmt(suite_s, " s"), f"pytest.main wall time, exit code {fig['suite_exit_code']}"))
    if "ratio" in fig:
        ok = "meets" if fig["ratio"] <= RATIO_TARGET else "misses"
        rows.append(("ratio suite_s / forward_s", _fmt(fig["ratio"], "x"), f"target <= {RATIO_TARGET} ({ok})"
                     + (f"; median of {len(fig['repeats'])} runs" if fig.get("repeats") else "")))
        for k, rep in enumerate(fig.get("repeats") or []):
            rows.append((f"  run {k + 1}", _fmt(rep["ratio"], "x"),
                         f"floor {_fmt(rep['forward_s'], ' s')}, suite {_fmt(rep['suite_s'], ' s')}, "
                         f"CPU-time ratio {_fmt(rep.get('cpu_ratio'), 'x')}"))
        if "ratio_without_load" in fig:
            rows.append(("ratio without model load", _fmt(fig["ratio_without_load"], "x"),
                         "(suite_s - suite load_s) / forward_s"))
        if "cpu_ratio" in fig:
            rows.append(("CPU-time ratio", _fmt(fig["cpu_ratio"], "x"),
                         f"suite {_fmt(fig['suite_cpu_s'], ' s', 1)} / floor {_fmt(fig['forward_cpu_s'], ' s', 1)} "
                         "CPU seconds (less sensitive to other processes)"))

    def share(v: Optional[float]) -> str:
        return "-" if v is None or suite_s <= 0 else f"{100.0 * v / suite_s:.1f}% of suite_s"

    rows += [("  suite: start-up to collected", _fmt(fig.get("suite_setup_s"), " s"),
              share(fig.get("suite_setup_s")) + " (incl. model load)"),
             ("  suite: model load", _fmt(fig.get("suite_load_s"), " s"), share(fig.get("suite_load_s"))),
             ("  suite: recorded forward", _fmt(fig.get("mm_forward_s"), " s"),
              share(fig.get("mm_forward_s")) + (f", {fig['mm_forward_ratio']:.2f}x the floor"
                                                if "mm_forward_ratio" in fig else "")
              + (f" ({fig['mm_forward_cpu_ratio']:.2f}x in CPU seconds)" if "mm_forward_cpu_ratio" in fig else ""))]
    if "mm_forward_ratio_with_prepare" in fig:
        rows.append(("  suite: recorded forward / (floor + prepare)", _fmt(fig["mm_forward_ratio_with_prepare"], "x"),
                     f"opening and preparing the batches took {_fmt(fig['prepare_s'], ' s')} in (a), outside its "
                     f"timing; CPU seconds {_fmt(fig.get('mm_forward_cpu_ratio_with_prepare'), 'x')}"))
    for family, seconds in sorted(fig["checks_s"].items(), key=lambda kv: -kv[1]):
        rows.append((f"  suite: checks {family}", _fmt(seconds, " s"), share(seconds)))
    for key, value in fig.get("other_timings", {}).items():
        if isinstance(value, (int, float)):
            rows.append((f"    of which {key}", _fmt(float(value), " s"), share(float(value))))
    rows.append(("  suite: everything else", _fmt(fig["suite_other_s"], " s"),
                 share(fig["suite_other_s"]) + " (pytest, plugins, cache write, reports)"))
    if fig.get("suite_cache"):
        rows.append(("  suite: activation cache", str(fig["suite_cache"]), "cold cache in a temporary rootdir"))
    if "floor_peak_rss_mb" in fig:
        rows.append(("peak RSS after (a)", _fmt(fig["floor_peak_rss_mb"], " MB", 0), "process peak so far"))
    reset = fig.get("rss_phase_reset")
    rows.append(("peak RSS during (b)", _fmt(fig["suite_peak_rss_mb"], " MB", 0),
                 "peak of phase (b) alone" if reset else "process-lifetime peak (no per-phase reset here)"))
    rows.append(("peak RSS (process)", _fmt(fig["peak_rss_mb"], " MB", 0), "ru_maxrss, whole process"))
    if fig.get("suite_peak_gpu_mb") is not None or fig.get("floor_peak_gpu_mb") is not None:
        rows.append(("peak GPU (a) / (b)", f"{_fmt(fig.get('floor_peak_gpu_mb'), ' MB', 0)} / "
                                           f"{_fmt(fig.get('suite_peak_gpu_mb'), ' MB', 0)}",
                     "torch.cuda.max_memory_allocated, reset per phase"))
    return rows


def scaling_rows(scaling: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows of the --memory-scaling table."""
    rows = []
    for entry in scaling:
        ok = "meets" if entry["ratio"] <= MEMORY_TARGET else "misses"
        rows.append((f"{','.join(entry['families'])}: N={entry['n_small']} / {entry['n_large']}",
                     f"{entry['peak_small_mb']:.0f} / {entry['peak_large_mb']:.0f} MB",
                     f"ratio {entry['ratio']:.2f} (target <= {MEMORY_TARGET}: {ok}); "
                     f"above collection {entry['working_small_mb']:.0f} / {entry['working_large_mb']:.0f} MB"))
    return rows


def print_table(title: str, rows: list[tuple[str, str, str]], stream: Any = None) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    stream = stream or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        Console = None
    if Console is not None and stream.isatty():
        table = Table(title=title, title_justify="left")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_column("note")
        for row in rows:
            table.add_row(*row)
        Console(file=stream).print(table)
        return
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(title, file=stream)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip(), file=stream)
