"""What the plugin's hooks do: configure the run, build check contexts, record outcomes, write reports."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest

from mmdiag import gate
from mmdiag.api import CheckContext
from mmdiag.atomic import atomic_write_text
from mmdiag.collect import mm_model_is_builtin
from mmdiag.checkspec import CheckSpec, marker_spec
from mmdiag.errors import MMDiagError, SpecError
from mmdiag.models.base import optional
from mmdiag.options import from_pytest
from mmdiag.registry import builtin_checks_dir
from mmdiag.report.document import build_document
from mmdiag.session import MMSession
from mmdiag.stash import SESSION_KEY
from mmdiag.thresholds import Result, Threshold

CONTEXT_KEY = pytest.StashKey[CheckContext]()
#: JSON scalar types a parametrize argument must have to become one of a result's ``params``
PARAM_TYPES = (str, int, float, bool)


def configure(config: pytest.Config) -> Optional[MMSession]:
    """Validate options, point collection at the built-in checks, load the model."""
    if config.getoption("help", default=False) or config.getoption("version", default=False):
        return None
    cfg = from_pytest(config)
    early = gate.misspelt_builtin(cfg)  # what can be told before collection (also on an xdist controller)
    if early:
        raise MMDiagError(early)
    from mmdiag import heap

    # registered before pytest's own unraisable-exception cleanup, so it runs after its five gc passes
    config.add_cleanup(heap.thaw)
    session = MMSession(cfg)
    session.adapter_from_fixture = False
    if cfg.model and cfg.collect_checks:
        session.world = join_world(config, cfg)
    from mmdiag.report.progress import Progress

    session.progress = Progress(config)
    if cfg.collect_checks and not _explicit_args(config):
        config.args[:] = [str(builtin_checks_dir())]
    elif _explicit_args(config) and config.getoption("mm_checks", default=False):
        config.args.append(str(builtin_checks_dir()))  # your own check files and the built-in ones
    if cfg.collect_checks or cfg.allow_outside_data:
        # a captions file is read now: a path outside the data directory or an image that is a FIFO is a usage
        # error before the model loads (and the session keeps these samples, read with the run's settings)
        from mmdiag.data.load import file_samples_checked

        samples = file_samples_checked(cfg.data, cfg.samples, cfg.seed, cfg.allow_outside_data,
                                       cfg.skip_bad_samples, cfg.scene_regions, cfg.probe_punctuation,
                                       columns=cfg.data_columns)
        if samples is not None:
            session.samples = samples
    if cfg.model and cfg.collect_checks:
        session.load_model()
        check_model_limits(cfg, session.adapter)
    return session


def join_world(config: pytest.Config, cfg: Any) -> Any:
    """Under torchrun: this rank's :class:`~mmdiag.distributed.World` (its process group started)."""
    from mmdiag import distributed

    xdist = _is_xdist_worker(config) or bool(config.getoption("numprocesses", default=None))
    return distributed.world_from_env(cfg.device, cfg.device_map, xdist=xdist)


def sharded_forward(pytest_session: pytest.Session, session: Optional[MMSession]) -> Optional[bool]:
    """Under torchrun, before any check: every rank records its shard (rank 0 gathers them all).

    Rank 0 then runs the checks as usual (None: pytest's own loop runs); the other ranks stop here (True).
    """
    if session is None or not session.world.sharded or pytest_session.config.option.collectonly:
        return None
    if session.checks.selected and session.adapter is not None:
        try:
            session.activations(session.adapter)
        except Exception:  # noqa: BLE001 - kept by the session: on rank 0 each check reports it
            pass
    if session.world.reporter:
        return None
    part = session.world.shard(len(session.samples or []))
    reporter = pytest_session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"mmdiag: rank {session.world.rank} of {session.world.size} recorded samples "
                            f"{part.start}..{part.stop - 1}; rank 0 runs the checks and writes the reports")
    return True


def check_model_limits(cfg: Any, adapter: Any) -> None:
    """Refuse, right after the model loads, ``--mm-attention-head``/``--mm-probe-rank`` that no tower of it has
    (beyond the largest head count / hidden size of ``model.config`` and its text/vision sub-configs); skipped
    where the adapter has no such config."""
    try:
        config = getattr(getattr(adapter, "model", None), "config", None)
    except Exception:  # noqa: BLE001 - an adapter's property that fails: the sizes are unknown
        return
    configs = [c for c in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None))
               if c is not None]

    def sizes(name: str) -> list[int]:
        return [v for c in configs for v in [getattr(c, name, None)] if isinstance(v, int) and v > 0]

    heads, hidden = sizes("num_attention_heads"), sizes("hidden_size")
    if cfg.attention_head is not None and heads and cfg.attention_head >= max(heads):
        raise SpecError(f"--mm-attention-head={cfg.attention_head}: {cfg.model} has {max(heads)} attention heads "
                        f"(heads are numbered 0..{max(heads) - 1})")
    if cfg.probe_rank is not None and hidden and cfg.probe_rank > max(hidden):
        raise SpecError(f"--mm-probe-rank={cfg.probe_rank} is beyond the hidden size of {cfg.model} "
                        f"({max(hidden)}); give a rank of at most {max(hidden)}, or 0 for the regimen's default")


def note_collected(item: pytest.Item, session: Optional[MMSession]) -> None:
    """Every collected check item (before -k/-m deselection): the params that threshold keys may name."""
    if session is None:
        return
    spec = _spec(item)
    if spec is not None:
        session.checks.add(spec, item.nodeid)
        session.collected_items.append(item)


def note_selected(items: list, session: Optional[MMSession], config: Optional[pytest.Config] = None) -> None:
    """Remember which checks stayed selected (the forward pass records only what they need); refuse, before
    the forward pass, a gate that would check nothing or something else than it says."""
    if session is None:
        return
    selected = set()
    for item in items:
        spec = _spec(item)
        if spec is not None:
            session.checks.add(spec, item.nodeid)
            selected.add(spec.name)
    session.checks.selected = selected
    collected = gate.collected_params(session.collected_items, check_params, _spec)
    problems = [gate.unknown_checks(session), gate.unknown_params(session, collected),
                gate.baseline_mismatch(session, session.config.baseline_any)]
    first_check = next((item for item in items if _spec(item) is not None), None)
    if session.config.collect_checks and first_check is not None:
        problems.append(gate.no_model(session, mm_model_is_builtin(first_check)))
    problems = [p for p in problems if p]
    if problems and _is_xdist_worker(config if config is not None else (items[0].config if items else None)):
        # a worker cannot end the run with a usage error (xdist reports a crash): every check fails with it
        session.gate_problem = "; ".join(problems)
    elif problems:
        raise pytest.UsageError("\n".join(f"mmdiag: {p}" for p in problems))
    if session.checks.selected:  # a diagnostic run: settle the process for the forward pass and the checks
        from mmdiag import heap

        heap.tune_allocator()
        heap.freeze()


def report_header(config: pytest.Config, session: Optional[MMSession]) -> Optional[str]:
    """Say how to run the diagnostics when an ini file names a model that a plain ``pytest`` does not run."""
    if session is None or not session.config.model:
        return None
    if session.config.collect_checks:  # the model is loaded: what it says about itself (an assembled processor)
        info = getattr(session.adapter, "info", None)
        note = (getattr(info, "extra", None) or {}).get("processor_note")
        return f"mmdiag: {note}" if note else None
    return (f"mmdiag: mm_model = {session.config.model} is set in the ini file but a plain `pytest` runs no "
            "diagnostics; run `pytest --mm-checks` (the built-in checks on it) or "
            f"`pytest --mm-model={session.config.model}`")


def _spec(item: Any) -> Optional[CheckSpec]:
    try:
        return marker_spec(item)
    except SpecError as exc:
        raise pytest.UsageError(f"mmdiag: {exc}") from None


def check_params(item: Any) -> dict:
    """A result's ``params``: the item's parametrize arguments with scalar values (the ``over`` axes and the
    user's own), in parametrisation order; axes left open at collection (None) are omitted."""
    callspec = getattr(item, "callspec", None)
    return {k: v for k, v in (callspec.params.items() if callspec else []) if isinstance(v, PARAM_TYPES)}


def _explicit_args(config: pytest.Config) -> bool:
    return config.args_source == pytest.Config.ArgsSource.ARGS


def check_context(request: pytest.FixtureRequest, session: Optional[MMSession]) -> CheckContext:
    """Build the ``mm`` fixture value for the requesting check."""
    spec = _spec(request.node)
    if spec is None:
        raise pytest.UsageError(f"{request.node.nodeid}: the mm fixture needs @pytest.mark.mm('check.name')")
    if session is None:
        pytest.skip("mmdiag is not configured for this run")
    if session.gate_problem:
        pytest.fail(f"mmdiag: {session.gate_problem}", pytrace=False)
    if getattr(session, "adapter_from_fixture", False) and session.adapter is not None:
        adapter = session.adapter
    else:
        adapter = request.getfixturevalue("mm_model")
        session.adapter = adapter
    ctx = CheckContext(session, adapter, spec, check_params(request.node), request.node.nodeid)
    request.node.stash[CONTEXT_KEY] = ctx
    problem = None
    try:
        ctx.acts  # the shared forward pass runs in setup, so check timings measure the check alone
    except MMDiagError as exc:  # a user's data problem: say it plainly, no traceback
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"mmdiag: {problem}", pytrace=False)
    if spec.pairs:
        ctx.require_pairs()
    return ctx



def record_outcome(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport,
                   session: Optional[MMSession]) -> None:
    """Give every mm check a result: skips and unexpected errors are recorded too."""
    spec = _spec(item) if session is not None else None
    if spec is None:
        return
    _record_outcome(item, call, report, session, spec)
    junit_properties(item, session)
    if _is_xdist_worker(item.config):
        new = [r.to_json() for r in session.results if r.nodeid == item.nodeid and not getattr(r, "_shipped", False)]
        for r in session.results:
            if r.nodeid == item.nodeid:
                r._shipped = True  # type: ignore[attr-defined]
        series = {k: v for k, v in session.series.items() if k not in session.series_shipped}
        session.series_shipped.update(series)
        if new or series:
            report.user_properties.append(("mmdiag", {"results": new, "series": series, "spec": spec.to_json(),
                                                      "timings": dict(session.timings),
                                                      "n": len(session.samples or []),
                                                      "flags": session.recorded_flags}))


def junit_properties(item: pytest.Item, session: MMSession) -> None:
    """Each new result of the item as JUnit XML properties (``mmdiag.check``, ``mmdiag.value``, ...; pinned)."""
    for r in session.results:
        if r.nodeid != item.nodeid or getattr(r, "_junit", False):
            continue
        r._junit = True  # type: ignore[attr-defined]
        ci = getattr(r, "ci", None) or {}
        for name, value in (("check", r.check), ("params", json.dumps(r.params, sort_keys=True)),
                            ("value", "" if r.value is None else repr(r.value)),
                            ("ci_low", "" if ci.get("low") is None else repr(ci["low"])),
                            ("ci_high", "" if ci.get("high") is None else repr(ci["high"])),
                            ("threshold", r.threshold.describe() if r.threshold else ""),
                            ("status", r.status)):
            item.user_properties.append((f"mmdiag.{name}", value))


def _is_xdist_worker(config: Optional[pytest.Config]) -> bool:
    return config is not None and hasattr(config, "workerinput")


class WorkerResults:
    """Registered on every run; on an xdist controller it gathers the workers' results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        config = self.config
        if hasattr(config, "workerinput") or not config.pluginmanager.has_plugin("dsession"):
            return
        merge_worker_report(report, config.stash.get(SESSION_KEY, None))


def merge_worker_report(report: pytest.TestReport, session: Optional[MMSession]) -> None:
    """On the xdist controller: collect the results a worker attached to its report."""
    if session is None:
        return
    for name, payload in getattr(report, "user_properties", []):
        if name != "mmdiag":
            continue
        for r in payload["results"]:
            if r["check"] not in session.checks.collected and payload.get("spec"):
                session.checks.add(CheckSpec.from_json(r["check"], payload["spec"]))
            t = r.get("threshold")
            threshold = Threshold(t["op"], t["value"], t["level"]) if t else None
            result = Result(r["check"], r["params"], r["value"], r["status"], threshold, r.get("details"),
                            r.get("message", ""), report.nodeid, r.get("baseline"), r.get("ci"), r.get("se"))
            session.add(result)
        session.series.update(payload["series"])
        session.timings.update({k: v for k, v in payload["timings"].items() if k not in session.timings})
        session.worker_n = payload.get("n")
        if payload.get("flags") is not None:
            session.recorded_flags = payload["flags"]


def _record_outcome(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport,
                    session: MMSession, spec: CheckSpec) -> None:
    if report.when == "call":
        family = spec.family
        session.family_seconds[family] = session.family_seconds.get(family, 0.0) + report.duration
        if item.config.pluginmanager.hasplugin("html") and item.config.getoption("htmlpath", None):
            from mmdiag.report.html_extras import attach

            attach(report, family, session)
    if report.when == "teardown" or (report.when == "setup" and report.passed):
        return
    ctx = item.stash.get(CONTEXT_KEY, None)
    if ctx is not None and ctx.reported and not (report.failed and call.excinfo is not None
                                                 and not call.excinfo.errisinstance(pytest.fail.Exception)):
        return
    params = dict(ctx.params) if ctx is not None else check_params(item)
    check = spec.name
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        session.add(Result(check, params, None, "skip", session.thresholds.lookup(check, params), {}, reason,
                           item.nodeid))
    elif report.failed:
        message, status = _error_message(call), "error"
        if _nonfinite_where(session) and "non-finite activations" in message:
            status = "fail"
        session.add(Result(check, params, None, status, session.thresholds.lookup(check, params), {}, message,
                           item.nodeid))


def plain_problem(exc: BaseException, session: Optional[MMSession]) -> Optional[str]:
    """The message for an error the user can act on (None: a bug, keep the traceback)."""
    if isinstance(exc, MMDiagError):
        return f"mmdiag: {exc}"
    where = _nonfinite_where(session) if session is not None else ""
    if where:
        return (f"mmdiag: non-finite activations ({where}): {exc}. The model overflowed or produced NaN; "
                "run with --mm-dtype=fp32 (or bf16 instead of fp16)")
    return None


def _nonfinite_where(session: MMSession) -> str:
    """Where the forward pass produced non-finite values, e.g. ``image L03 (12 values)``."""
    acts = session._activations.get("model")
    if acts is None:
        return ""
    bad = [f"{m} L{k:02d} ({n} values)" for (m, k), n in sorted(acts.nonfinite.items()) if n]
    return ", ".join(bad[:6]) + (" ..." if len(bad) > 6 else "")


def _error_message(call: pytest.CallInfo) -> str:
    if call.excinfo is None:
        return "error"
    exc = call.excinfo.value
    if call.excinfo.errisinstance(pytest.fail.Exception):
        return str(exc.msg if hasattr(exc, "msg") else exc)
    return f"{type(exc).__name__}: {exc}".strip()


def terminal_summary(reporter: Any, session: Optional[MMSession]) -> None:
    """Print the rich table after pytest's own summary."""
    if session is None or not session.results:
        return
    from mmdiag.report.terminal import render

    writer = reporter._tw
    doc_model = session.config.model or getattr(optional(session.adapter, "info"), "spec", None) or "user model"
    title = f"mmdiag · {doc_model} · data {session.config.data} (n={len(session.samples or [])})"
    comparison = session.comparison
    reporter.write_sep("=", "mmdiag summary")
    reporter.write(render(session.results, title, writer.fullwidth, writer.hasmarkup, comparison is not None,
                          table=session.config.table))
    if comparison is not None and comparison.matched == 0:
        reporter.write_line(f"mmdiag: warning: the baseline {session.config.baseline} has no result matching this "
                            "run's checks (another model family, other checks, or other params?)", yellow=True)
    for path in getattr(session, "written", []):
        reporter.write_line(f"mmdiag: wrote {path}")
    if session.empty_problem:
        reporter.write_line(f"mmdiag: {session.empty_problem} (exit {int(pytest.ExitCode.USAGE_ERROR)})", red=True)


def finish(pytest_session: pytest.Session, session: Optional[MMSession]) -> None:
    """Write results.json / report.html / baseline for whatever ran (also after failures)."""
    if session is not None:
        from mmdiag.distributed import close

        close(session.world)
    if session is None or not session.results or _is_xdist_worker(pytest_session.config):
        return
    if session.samples is None and session.adapter is not None:
        try:  # the xdist controller ran no check itself: data for the fingerprint, cached activations for maps
            session.load_data(session.adapter)
            session.cached_activations(session.adapter)
        except Exception:
            pass
    session.written = []
    doc = build_document(session)
    cfg = session.config
    from mmdiag.report.jsonio import write_json

    targets = [p for p in (cfg.json, cfg.save_baseline) if p is not None]
    for path in targets:
        session.written.append(write_json(doc, Path(path)))
    if cfg.html is not None:
        from mmdiag.report.html import write_html

        session.written.append(write_html(doc, Path(cfg.html)))
    if cfg.markdown is not None:
        from mmdiag.report.markdown import render_markdown

        text = render_markdown(doc) + "\n"
        if cfg.markdown_append:  # GitHub's step summary collects the Markdown of every step of the job
            with open(cfg.markdown, "a", encoding="utf-8") as handle:
                handle.write(text)
            session.written.append(Path(cfg.markdown))
        else:
            session.written.append(atomic_write_text(cfg.markdown, text))
    session.empty_problem = gate.nothing_checked(session.results)
    if session.empty_problem and pytest_session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        pytest_session.exitstatus = pytest.ExitCode.USAGE_ERROR
