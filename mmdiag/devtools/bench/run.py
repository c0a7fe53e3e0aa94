"""The two measured phases of ``python -m mmdiag.bench``, in this process.

(a) :func:`run_floor`: the adapter's bare forward pass with hidden states, on
batches prepared beforehand; (b) :func:`run_suite`: ``pytest.main`` on the
built-in checks in an empty rootdir, timed as a whole. :func:`run` does both,
sharing the allocator and a warm-up batch, and returns the figures.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from mmdiag.devtools.bench.config import BenchConfig
from mmdiag.devtools.bench.memory import PeakTracker, status_mb
from mmdiag.devtools.bench.report import figures


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


def time_sdpa(adapter: Any, batches: Sequence[Any]) -> Optional[float]:
    """Wall seconds of the bare forward with ``attn_implementation="sdpa"`` (then eager again); None where the
    model cannot switch (no ``set_attn_implementation``, or no sdpa kernels for it)."""
    model = getattr(adapter, "model", None)
    switch = getattr(model, "set_attn_implementation", None)
    if switch is None:
        return None
    try:
        switch("sdpa")
    except (ValueError, ImportError, NotImplementedError):
        return None
    try:
        return time_forward(adapter, batches)[0]
    finally:
        switch("eager")


def run_floor(cfg: BenchConfig, peaks: PeakTracker) -> dict[str, Any]:
    """Phase (a): load the adapter, prepare the batches, time the bare forward pass."""
    from mmdiag.models.load import load_adapter

    peaks.start()
    start = time.perf_counter()
    adapter = load_adapter(cfg.model, cfg.device, cfg.dtype, cfg.seed)
    load_s = time.perf_counter() - start
    samples = load_inputs(adapter, cfg.data, cfg.samples, cfg.seed)
    cpu0, start = cpu_seconds(), time.perf_counter()
    batches = prepare_batches(adapter, samples, cfg.batch_size)  # timed apart: the recorded forward includes it
    prepare_s, prepare_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu0
    if hasattr(adapter, "output_attentions"):
        adapter.output_attentions = False
    forward_s, forward_cpu_s = time_forward(adapter, batches)
    out: dict[str, Any] = {"load_s": load_s, "forward_s": forward_s, "forward_cpu_s": forward_cpu_s,
                           "prepare_s": prepare_s, "prepare_cpu_s": prepare_cpu_s,
                           "n": len(samples), "device": str(getattr(adapter, "device", cfg.device)),
                           "n_params": getattr(getattr(adapter, "info", None), "n_params", None)}
    if cfg.floor_attentions and hasattr(adapter, "output_attentions"):
        adapter.output_attentions = True
        out["forward_attn_s"] = time_forward(adapter, batches)[0]
        adapter.output_attentions = False
    if cfg.floor_sdpa:
        out["forward_sdpa_s"] = time_sdpa(adapter, batches)
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
        self.rss_at_collection_mb = status_mb("VmRSS")
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
        out["summary"] = last_line(log_path) if not cfg.show_pytest else None
    return out


def last_line(path: Path) -> Optional[str]:
    """The last non-blank line of a text file (pytest's summary line), or None."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


# -- both phases ---------------------------------------------------------------
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
        suite["log_tail"] = last_line(Path(log)) if log else None
    if floor is not None and cfg.floor_twice:
        again = run_floor(BenchConfig(**{**cfg.__dict__, "floor_attentions": False}), PeakTracker())
        floor["forward_after_s"] = again["forward_s"]
        del again
    fig = figures(cfg, floor, suite)
    fig["suite_summary"] = suite.get("log_tail")
    return fig
