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
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

#: check families of the built-in suite (one checks/test_mm_<family>.py each)
FAMILIES = ("cone", "gap", "geometry", "probe", "attention")
#: families measured by --memory-scaling, each set in its own pair of processes
SCALING_SETS = (("geometry", "attention"), ("probe",))
SCALING_FACTOR = 8
#: targets the issue sets (printed beside the figures, never asserted)
RATIO_TARGET = 1.5
MEMORY_TARGET = 1.3


@dataclass
class BenchConfig:
    """What to benchmark (the CLI options)."""

    model: str = "random:clip-vit-base-patch32"
    samples: int = 256
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "fp32"
    data: str = "synthetic"
    seed: int = 0
    families: Optional[tuple[str, ...]] = None  # None: every family
    select: str = "k"  # "k": -k expression; "files": the families' check files as arguments
    floor_attentions: bool = False
    floor_twice: bool = False  # time the floor again after the suite (a check on machine noise)
    show_pytest: bool = False
    profile: Optional[Path] = None  # cProfile the suite phase into this file (its timings are then inflated)
    no_cache: bool = False  # pass --mm-no-cache (default: a cold activation cache in a temporary rootdir)
    suite_args: tuple[str, ...] = ()  # extra pytest arguments of the suite, e.g. --mm-probe-rank=128
    all_plugins: bool = False  # load every installed pytest plugin in the suite (default: mmdiag's only)


# -- memory -------------------------------------------------------------------
def _status_mb(field_name: str) -> Optional[float]:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB (kB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024.0 * 1024.0) if sys.platform == "darwin" else value / 1024.0


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs`` 5); False if unsupported.

    After a reset both ``VmHWM`` and ``ru_maxrss`` count from the current RSS,
    so each phase gets its own peak instead of the process-lifetime one.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakTracker:
    """Peak RSS (and CUDA memory) per phase, plus the process-lifetime peak."""

    def __init__(self) -> None:
        self.lifetime_mb = maxrss_mb()
        self.resettable = False

    def start(self) -> None:
        """Begin a phase: fold the peak so far into the lifetime peak, then reset it."""
        gc.collect()
        self.lifetime_mb = max(self.lifetime_mb, maxrss_mb())
        self.resettable = reset_peak_rss()
        cuda = _cuda()
        if cuda is not None:
            cuda.empty_cache()
            cuda.reset_peak_memory_stats()

    def stop(self) -> dict[str, Optional[float]]:
        """End a phase: its peak RSS (MB), the lifetime peak so far, and its peak CUDA allocation (MB)."""
        phase = maxrss_mb()
        self.lifetime_mb = max(self.lifetime_mb, phase)
        cuda = _cuda()
        gpu = cuda.max_memory_allocated() / 2**20 if cuda is not None else None
        return {"peak_rss_mb": phase, "lifetime_peak_rss_mb": self.lifetime_mb, "peak_gpu_mb": gpu}


def _cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def synchronize(device: Any) -> None:
    """Wait for queued CUDA work (a no-op on CPU)."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# -- (a) the floor ------------------------------------------------------------
def load_inputs(adapter: Any, data: str, n: int, seed: int) -> list:
    """The samples a suite run would use (as :meth:`MMSession.load_data` builds them)."""
    from mmdiag.data.load import load_samples

    tok = getattr(adapter, "tokenizer", None)
    vocab = len(tok) if tok is not None else 1000
    special = getattr(tok, "all_special_ids", []) if tok is not None else []
    return load_samples(data, n, seed, vocab, special)


def prepare_batches(adapter: Any, samples: Sequence, batch_size: int) -> list:
    """Open the images and ``adapter.prepare`` every batch (outside the timed region)."""
    from dataclasses import replace

    from mmdiag.data.images import open_image

    out = []
    for start in range(0, len(samples), batch_size):
        chunk = [s if s.image is None else replace(s, image=open_image(s.image))
                 for s in samples[start:start + batch_size]]
        out.append(adapter.prepare(chunk))
    return out


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_forward(adapter: Any, batches: Sequence[Any]) -> tuple[float, float]:
    """(wall, CPU) seconds for ``adapter.forward`` over every batch, after one untimed warm-up batch."""
    device = getattr(adapter, "device", None)
    adapter.forward(batches[0])  # warm-up: allocator, thread pools, kernel selection
    synchronize(device)
    cpu0, start = cpu_seconds(), time.perf_counter()
    for batch in batches:
        adapter.forward(batch)  # the trace is dropped at once, as the recorder does after reducing it
    synchronize(device)
    return time.perf_counter() - start, cpu_seconds() - cpu0


def run_floor(cfg: BenchConfig, peaks: PeakTracker) -> dict[str, Any]:
    """Phase (a): load the adapter, prepare the batches, time the bare forward pass."""
    from mmdiag.models.load import load_adapter

    peaks.start()
    start = time.perf_counter()
    adapter = load_adapter(cfg.model, cfg.device, cfg.dtype, cfg.seed)
    load_s = time.perf_counter() - start
    samples = load_inputs(adapter, cfg.data, cfg.samples, cfg.seed)
    batches = prepare_batches(adapter, samples, cfg.batch_size)
    if hasattr(adapter, "output_attentions"):
        adapter.output_attentions = False
    forward_s, forward_cpu_s = time_forward(adapter, batches)
    out: dict[str, Any] = {"load_s": load_s, "forward_s": forward_s, "forward_cpu_s": forward_cpu_s,
                           "n": len(samples), "device": str(getattr(adapter, "device", cfg.device)),
                           "n_params": getattr(getattr(adapter, "info", None), "n_params", None)}
    if cfg.floor_attentions and hasattr(adapter, "output_attentions"):
        adapter.output_attentions = True
        out["forward_attn_s"] = time_forward(adapter, batches)[0]
        adapter.output_attentions = False
    out["adapter"] = adapter  # reused for the suite's warm-up batch, then dropped
    out["warmup_batch"] = batches[0]
    out.update(peaks.stop())
    return out


# -- (b) the suite ------------------------------------------------------------
def family_args(families: Optional[Sequence[str]], select: str) -> list[str]:
    """pytest arguments that pick the families: a ``-k`` expression or their check files."""
    from mmdiag.collect import builtin_checks_dir

    checks = builtin_checks_dir()
    if not families:
        return [str(checks)]
    if select == "files":
        return [str(checks / f"test_mm_{f}.py") for f in families]
    return ["-k", " or ".join(families), str(checks)]


def suite_args(cfg: BenchConfig, json_path: Path, ini_path: Path) -> list[str]:
    """The ``pytest.main`` argument list of the suite phase.

    ``-c`` points at an empty ini in a temporary directory so that no project
    configuration (tox.ini addopts, conftest.py, pyproject thresholds) of the
    current directory changes what is measured; the activation cache, relative
    to that rootdir, is therefore always cold (a miss, then written). Unless
    ``all_plugins``, plugin autoloading is off (:func:`run_suite`) and mmdiag's
    plugin is loaded with ``-p``: the other pytest plugins installed here (hypothesis,
    anyio, pytest-html, xdist: ~0.7 s of imports on this machine) are not mmdiag's cost.
    """
    return [f"--mm-model={cfg.model}", f"--mm-samples={cfg.samples}", f"--mm-batch-size={cfg.batch_size}",
            f"--mm-device={cfg.device}", f"--mm-dtype={cfg.dtype}", f"--mm-data={cfg.data}",
            f"--mm-seed={cfg.seed}", f"--mm-json={json_path}", "-q", "-p", "no:cacheprovider",
            "-c", str(ini_path), "--rootdir", str(ini_path.parent), *(["--mm-no-cache"] if cfg.no_cache else []),
            *([] if cfg.all_plugins else ["-p", "mmdiag.plugin"]),
            *cfg.suite_args, *family_args(cfg.families, cfg.select)]


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of a block."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class _Probe:
    """A pytest plugin that notes when collection ends (model loaded, nothing run yet)."""

    def __init__(self) -> None:
        self.collected_at: Optional[float] = None
        self.rss_at_collection_mb: Optional[float] = None
        self.n_items = 0

    def pytest_collection_finish(self, session: Any) -> None:
        self.collected_at = time.perf_counter()
        self.rss_at_collection_mb = _status_mb("VmRSS")
        self.n_items = len(session.items)


def run_suite(cfg: BenchConfig, peaks: PeakTracker, workdir: Path) -> dict[str, Any]:
    """Phase (b): ``pytest.main`` on the built-in checks, timed as a whole."""
    import pytest

    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    json_path = workdir / "results.json"
    log_path = workdir / "pytest.log"
    peaks.start()
    probe = _Probe()
    args = suite_args(cfg, json_path, ini)
    with contextlib.ExitStack() as stack:
        if not cfg.all_plugins:
            stack.enter_context(_env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1"))
        if not cfg.show_pytest:
            log = stack.enter_context(open(log_path, "w", encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(log))
        profiler = None
        if cfg.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu0, start = cpu_seconds(), time.perf_counter()
        code = pytest.main(args, plugins=[probe])
        suite_s = time.perf_counter() - start
        suite_cpu_s = cpu_seconds() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(cfg.profile))
    out: dict[str, Any] = {"suite_s": suite_s, "suite_cpu_s": suite_cpu_s, "exit_code": int(code),
                           "pytest_args": args, "items": probe.n_items,
                           "log": None if cfg.show_pytest else str(log_path)}
    if probe.collected_at is not None:
        out["setup_s"] = probe.collected_at - start
        out["rss_after_collection_mb"] = probe.rss_at_collection_mb
    out.update(peaks.stop())
    if json_path.is_file():
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        timings = doc.get("run", {}).get("timings", {})
        out["timings"] = timings
        out["run_device"] = doc.get("run", {}).get("device")
        out["run_n"] = doc.get("data", {}).get("n")
        out["run_n_params"] = doc.get("model", {}).get("n_params")
        statuses: dict[str, int] = {}
        for result in doc.get("results", []):
            statuses[result.get("status", "?")] = statuses.get(result.get("status", "?"), 0) + 1
        out["statuses"] = statuses
    else:
        out["timings"] = {}
        out["statuses"] = {}
        out["summary"] = _last_line(log_path) if not cfg.show_pytest else None
    return out


def _last_line(path: Path) -> Optional[str]:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


# -- figures ------------------------------------------------------------------
def figures(cfg: BenchConfig, floor: Optional[dict], suite: dict) -> dict[str, Any]:
    """The JSON-able figures of one bench run (see docs/performance.md for each key)."""
    timings = suite.get("timings", {})
    suite_s = suite["suite_s"]
    checks = {k: float(v) for k, v in (timings.get("checks_s") or {}).items()}
    mm_forward = timings.get("forward_s")
    mm_load = timings.get("load_s")
    accounted = sum(v for v in (mm_load, mm_forward) if v is not None) + sum(checks.values())
    fig: dict[str, Any] = {
        "model": cfg.model, "n": floor["n"] if floor else suite.get("run_n") or cfg.samples,
        "batch_size": cfg.batch_size, "device": floor["device"] if floor else suite.get("run_device") or cfg.device,
        "dtype": cfg.dtype, "data": cfg.data, "n_params": suite.get("run_n_params"),
        "families": list(cfg.families) if cfg.families else list(FAMILIES), "select": cfg.select,
        "suite_s": suite_s, "suite_cpu_s": suite.get("suite_cpu_s"), "suite_exit_code": suite["exit_code"],
        "suite_items": suite.get("items"),
        "statuses": suite.get("statuses", {}),
        "suite_load_s": mm_load, "mm_forward_s": mm_forward, "mm_total_s": timings.get("total_s"),
        "checks_s": checks,
        "checks_pct": {k: 100.0 * v / suite_s for k, v in checks.items()} if suite_s > 0 else {},
        "suite_setup_s": suite.get("setup_s"),
        "suite_other_s": suite_s - accounted,
        "other_timings": {k: v for k, v in timings.items()
                          if k not in ("load_s", "forward_s", "total_s", "checks_s", "cache")},
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
        if floor.get("forward_cpu_s") and suite.get("suite_cpu_s") is not None:
            fig["cpu_ratio"] = suite["suite_cpu_s"] / floor["forward_cpu_s"]
        if "forward_attn_s" in floor:
            fig["forward_attn_s"] = floor["forward_attn_s"]
        if "forward_after_s" in floor:
            fig["forward_after_s"] = floor["forward_after_s"]
            fig["ratio_vs_floor_after"] = suite_s / floor["forward_after_s"]
    return fig


def _torch_threads() -> Optional[int]:
    try:
        import torch

        return torch.get_num_threads()
    except Exception:  # pragma: no cover - torch is a dependency
        return None


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
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
                                                if "mm_forward_ratio" in fig else ""))]
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


# -- memory scaling -----------------------------------------------------------
def _child_run(cfg: BenchConfig, path: Path, *extra: str) -> dict[str, Any]:
    """``python -m mmdiag.bench`` with ``cfg`` in a fresh process; its JSON figures."""
    cmd = [sys.executable, "-m", "mmdiag.bench", "--model", cfg.model, "-n", str(cfg.samples),
           "--batch-size", str(cfg.batch_size), "--device", cfg.device, "--dtype", cfg.dtype,
           "--data", cfg.data, "--seed", str(cfg.seed), "--families", ",".join(cfg.families or FAMILIES),
           "--select", cfg.select, "--json", str(path), "--quiet",
           *(["--floor-twice"] if cfg.floor_twice else []), *(["--floor-attentions"] if cfg.floor_attentions else []),
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
    ``cpu_ratio`` and ``mm_forward_ratio``, with ``ratio_min``/``ratio_max``.
    """
    runs = []
    for _ in range(times):
        with tempfile.TemporaryDirectory(prefix="mmdiag-bench-") as tmp:
            runs.append(_child_run(cfg, Path(tmp) / "fig.json"))
    ordered = sorted(runs, key=lambda fig: fig["ratio"])
    fig = dict(ordered[(len(ordered) - 1) // 2])
    fig["repeats"] = [{k: run.get(k) for k in ("forward_s", "suite_s", "ratio", "cpu_ratio", "mm_forward_ratio")}
                      for run in runs]
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
                peaks[n] = _child_run(sub, path, "--suite-only")
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


# -- command line -------------------------------------------------------------
def parse_families(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """``cone,gap`` -> ("cone", "gap"); None or ``all`` -> None (every family)."""
    if text is None or text.strip() in ("", "all"):
        return None
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown families {', '.join(unknown)} (accepted: {', '.join(FAMILIES)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmdiag.bench",
                                description="Time mmdiag's full suite against the model's bare forward pass.")
    p.add_argument("--model", default=BenchConfig.model, help="--mm-model spec (default %(default)s)")
    p.add_argument("-n", "--samples", type=int, default=BenchConfig.samples, help="samples (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=BenchConfig.batch_size, help="default %(default)s")
    p.add_argument("--device", default=BenchConfig.device, help="auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--dtype", default=BenchConfig.dtype, help="fp32 or bf16 (default %(default)s)")
    p.add_argument("--data", default=BenchConfig.data, help="--mm-data spec (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--families", type=parse_families, default=None,
                   help=f"comma list of {','.join(FAMILIES)} (default: all)")
    p.add_argument("--select", choices=("k", "files"), default="k",
                   help="pick families by a -k expression (default) or by passing their check files")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--memory-scaling", action="store_true",
                   help=f"peak RSS of geometry+attention and of probe (or of --families) at N and "
                        f"{SCALING_FACTOR}N, each in its own process, instead of the timing run")
    p.add_argument("--floor-attentions", action="store_true",
                   help="also time the floor with output_attentions=True")
    p.add_argument("--floor-twice", action="store_true",
                   help="time the floor again after the suite (shows how noisy the machine is)")
    p.add_argument("--suite-only", action="store_true", help="skip the floor (used by --memory-scaling)")
    p.add_argument("--show-pytest", action="store_true", help="let the suite's pytest output through")
    p.add_argument("--suite-arg", action="append", default=[], metavar="ARG",
                   help="extra pytest argument for the suite, e.g. --suite-arg=--mm-probe-rank=128 (repeatable)")
    p.add_argument("--no-cache", action="store_true",
                   help="run the suite with --mm-no-cache (default: cold activation cache, written)")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE",
                   help="cProfile the suite phase into FILE and print its top functions (inflates timings)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run both phases N times, each in a fresh process, and report the run with the median ratio "
                        "(with every run's figures): for noisy machines")
    p.add_argument("--all-plugins", action="store_true",
                   help="load every installed pytest plugin in the suite, as a plain pytest run in this environment "
                        "does (default: mmdiag's plugin only)")
    p.add_argument("--quiet", action="store_true", help="print nothing (with --json)")
    return p


def run(cfg: BenchConfig, suite_only: bool = False) -> dict[str, Any]:
    """Phases (a) then (b) in this process; returns the figures."""
    from mmdiag import heap

    heap.tune_allocator()  # what a run does at collection; here before (a), so both phases share the allocator
    peaks = PeakTracker()
    floor = None
    if not suite_only:
        floor = run_floor(cfg, peaks)
        adapter, batch = floor.pop("adapter"), floor.pop("warmup_batch")
        adapter.forward(batch)  # (b)'s untimed warm-up batch, then the floor's model is dropped
        synchronize(getattr(adapter, "device", None))
        del adapter, batch
    with tempfile.TemporaryDirectory(prefix="mmdiag-bench-") as tmp:
        suite = run_suite(cfg, peaks, Path(tmp))
        suite["rss_phase_reset"] = peaks.resettable
        log = suite.get("log")
        suite["log_tail"] = _last_line(Path(log)) if log else None
    if floor is not None and cfg.floor_twice:
        again = run_floor(BenchConfig(**{**cfg.__dict__, "floor_attentions": False}), PeakTracker())
        floor["forward_after_s"] = again["forward_s"]
        del again
    fig = figures(cfg, floor, suite)
    fig["suite_summary"] = suite.get("log_tail")
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    if args.samples < 1 or args.batch_size < 1 or args.repeat < 1:
        print("mmdiag.bench: --samples, --batch-size and --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.repeat > 1 and (args.profile is not None or args.memory_scaling):
        print("mmdiag.bench: --repeat runs the timing phases only (not with --profile or --memory-scaling)",
              file=sys.stderr)
        return 2
    cfg = BenchConfig(model=args.model, samples=args.samples, batch_size=args.batch_size, device=args.device,
                      dtype=args.dtype, data=args.data, seed=args.seed, families=args.families,
                      select=args.select, floor_attentions=args.floor_attentions, floor_twice=args.floor_twice,
                      show_pytest=args.show_pytest,
                      profile=args.profile, no_cache=args.no_cache, suite_args=tuple(args.suite_arg),
                      all_plugins=args.all_plugins)
    from mmdiag.errors import MMDiagError

    try:
        if args.memory_scaling:
            scaling = memory_scaling(cfg, (cfg.families,) if cfg.families else SCALING_SETS)
            doc: dict[str, Any] = {"model": cfg.model, "n": cfg.samples, "factor": SCALING_FACTOR,
                                   "device": cfg.device, "batch_size": cfg.batch_size, "memory_scaling": scaling}
            if not args.quiet:
                print_table(f"mmdiag bench --memory-scaling · {cfg.model} · peak RSS per process",
                            scaling_rows(scaling))
        else:
            doc = repeated(cfg, args.repeat) if args.repeat > 1 and not args.suite_only else run(
                cfg, suite_only=args.suite_only)
            if not args.quiet:
                print_table(f"mmdiag bench · {cfg.model} · n={doc['n']}", render_rows(doc))
                if doc["suite_exit_code"] not in (0, 1):
                    print(f"mmdiag.bench: the suite did not run to the end (pytest exit code {doc['suite_exit_code']}"
                          f"{'; its output: ' + str(doc.get('suite_summary')) if doc.get('suite_summary') else ''})",
                          file=sys.stderr)
                if doc.get("suite_summary"):
                    print(f"suite: {doc['suite_summary']}")
                if cfg.profile is not None:
                    import pstats

                    print(f"cProfile of phase (b) in {cfg.profile} (timings above include its overhead):")
                    pstats.Stats(str(cfg.profile)).sort_stats("cumulative").print_stats(30)
    except MMDiagError as exc:
        print(f"mmdiag.bench: {exc}", file=sys.stderr)
        return 2
    failed = not args.memory_scaling and doc.get("suite_exit_code") not in (0, 1)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
        if not args.quiet:
            print(f"mmdiag.bench: wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
