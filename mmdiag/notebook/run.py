"""``mmdiag.diagnose()``: the pytest plugin's built-in checks, run in-process, as a Python call.

The run is an ordinary ``pytest.main`` over the built-in checks with the plugin, its output captured, its
reports written to a temporary directory and read back into :class:`~mmdiag.notebook.results.Results`;
so a notebook gets exactly the checks, thresholds and statuses of ``pytest --mm-model=...``. Each call has
its own pytest config, session, rootdir and report directory (nothing carries over between calls); the
activation cache is off unless ``cache_dir=`` is given. A model object is handed to the run's session by
a plugin object registered for that one call.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import pytest

from mmdiag.errors import MMDiagError, SpecError
from mmdiag.notebook.keywords import option_args, readable_error
from mmdiag.notebook.model import ModelChoice, choose_model
from mmdiag.notebook.results import Results


def known_checks() -> tuple[list[str], list[str]]:
    """(check names, families) of the built-in checks, in catalogue order."""
    from mmdiag.registry import builtin_specs

    names = [spec.name for spec in builtin_specs()]
    families = list(dict.fromkeys(spec.family for spec in builtin_specs()))
    return names, families


def select_checks(checks: Union[None, str, Iterable[str]]) -> Optional[set[str]]:
    """The check names ``checks`` selects (family names expand to their checks); None: every check.

    An unknown name is a :class:`SpecError` listing the known checks and families.
    """
    if checks is None:
        return None
    wanted = [checks] if isinstance(checks, str) else list(checks)
    names, families = known_checks()
    chosen: set[str] = set()
    for item in wanted:
        if not isinstance(item, str):
            raise SpecError(f"checks={checks!r}: give check names or families as strings")
        item = item.strip()
        if item in names:
            chosen.add(item)
        elif item in families:
            chosen.update(n for n in names if n.split(".", 1)[0] == item)
        else:
            raise SpecError(f"checks: unknown check or family {item!r}; families: {', '.join(families)}; "
                            f"checks: {', '.join(names)}")
    if not chosen:
        raise SpecError("checks=[] selects nothing; give check names or families, or leave checks= out")
    return chosen


class _RunPlugin:
    """Registered for one diagnose() call: hands its adapter to the session and deselects other checks."""

    def __init__(self, adapter: Any, selected: Optional[set[str]]) -> None:
        self.adapter, self.selected = adapter, selected

    @pytest.hookimpl(trylast=True)  # after mmdiag's own configure made the session
    def pytest_configure(self, config: Any) -> None:
        from mmdiag.runner import check_model_limits
        from mmdiag.stash import SESSION_KEY

        session = config.stash.get(SESSION_KEY, None)
        if session is None or self.adapter is None:
            return
        session.adapter, session.adapter_from_fixture = self.adapter, True
        try:
            check_model_limits(session.config, self.adapter)
        except MMDiagError as exc:
            raise pytest.UsageError(f"mmdiag: {exc}") from None

    def pytest_collection_modifyitems(self, config: Any, items: list) -> None:
        if self.selected is None:
            return
        from mmdiag.checkspec import marker_spec

        keep, drop = [], []
        for item in items:
            spec = marker_spec(item)
            (keep if spec is not None and spec.name in self.selected else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


@contextlib.contextmanager
def _isolated_environment() -> Any:
    """No PYTEST_ADDOPTS or GitHub step summary of the caller's shell leaks into the in-process run."""
    saved = {name: os.environ.pop(name) for name in ("PYTEST_ADDOPTS", "GITHUB_STEP_SUMMARY") if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _pytest_args(choice: ModelChoice, work: Path, options: dict) -> list[str]:
    from mmdiag.registry import builtin_checks_dir

    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    args = [str(builtin_checks_dir()), "-c", str(work / "pytest.ini"), "--rootdir", str(work),
            "-p", "no:cacheprovider", "--color=no", "-q", "--mm-checks",
            f"--mm-report-dir={work / 'report'}", f"--mm-markdown={work / 'verdict.md'}"]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        args += ["-p", "mmdiag.plugin"]
    if choice.spec is not None:
        args.append(f"--mm-model={choice.spec}")
    if "cache_dir" not in options:
        args.append("--mm-no-cache")
    return args + option_args(options)


def resolved(options: dict) -> dict:
    """``options`` with a relative ``cache_dir`` made absolute against the working directory (the plugin resolves
    it against the rootdir, which is this call's temporary directory)."""
    cache = options.get("cache_dir")
    if isinstance(cache, (str, Path)) and str(cache):
        options = {**options, "cache_dir": str(Path(cache).expanduser().absolute())}
    return options


def _usage_message(log: str) -> str:
    lines = [line.strip().removeprefix("ERROR: ") for line in log.splitlines() if "mmdiag:" in line]
    return "\n".join(line.removeprefix("mmdiag: ") for line in lines if line) or log.strip()[-2000:]


def diagnose(model_or_spec: Any, data: Optional[str] = None, samples: Optional[int] = None,
             checks: Union[None, str, Iterable[str]] = None, *, processor: Any = None, tokenizer: Any = None,
             **options: Any) -> Results:
    """Run mmdiag's built-in checks on a model and return the :class:`Results`.

    ``model_or_spec``: a ``--mm-model`` spec (``"random:tiny-clip"``, ``"zoo:shapes-clip"``, a
    save_pretrained directory, a hub id), an HF model object with ``processor=`` (or a ``(model,
    processor)`` pair), or an adapter object. ``data``/``samples``: ``--mm-data``/``--mm-samples``.
    ``checks``: check names and/or families (``"gap"``, ``["cone.layer", "probe"]``); default all.
    Other keywords are the plugin's options without ``--mm-`` (``batch_size=8``, ``seed=1``,
    ``threshold={"gap.norm": "<=:1.0"}``, ``no_cache=True``). Bad values raise
    :class:`mmdiag.errors.SpecError` before the forward pass, naming the keyword.
    """
    named = resolved({"data": data, "samples": samples, **options})
    device = options.get("device")
    choice = choose_model(model_or_spec, processor, tokenizer, None if device in (None, "auto") else device,
                          options.get("dtype"))
    selected = select_checks(checks)
    with tempfile.TemporaryDirectory(prefix="mmdiag-diagnose-") as tmp:
        work = Path(tmp)
        args = _pytest_args(choice, work, named)
        if choice.adapter is not None and "device" not in options:
            args.append(f"--mm-device={getattr(choice.adapter, 'device', 'cpu')}")
        buffer = io.StringIO()
        with _isolated_environment(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            code = int(pytest.main(args, plugins=[_RunPlugin(choice.adapter, selected)]))
        log = buffer.getvalue()
        if code == int(pytest.ExitCode.USAGE_ERROR):
            raise SpecError(readable_error(_usage_message(log), named))
        report = work / "report"
        if code not in (int(pytest.ExitCode.OK), int(pytest.ExitCode.TESTS_FAILED)) or \
                not (report / "results.json").is_file():
            raise MMDiagError(f"mmdiag.diagnose(): the run ended with pytest exit code {code} and no results; "
                              f"its output ends:\n{log[-3000:]}")
        doc = json.loads((report / "results.json").read_text(encoding="utf-8"))
        page = (report / "report.html").read_text(encoding="utf-8") if (report / "report.html").is_file() else ""
        verdict = work / "verdict.md"
        markdown = verdict.read_text(encoding="utf-8") if verdict.is_file() else ""
    return Results(doc, page, markdown, log, code)


__all__ = ["diagnose", "known_checks", "select_checks"]
