"""pytest hooks of mmdiag: wiring only; the work happens in the modules they call."""
from __future__ import annotations

from typing import Any, Generator

import pytest

from mmdiag import options
from mmdiag.errors import MMDiagError
from mmdiag.stash import SESSION_KEY


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list) -> Any:
    """Under torchrun, a rank other than 0 writes its output to a log file, before pytest starts capturing."""
    from mmdiag.distributed import quiet_rank_early

    quiet_rank_early(early_config.known_args_namespace, args)
    return (yield)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mm(check, over=()): an mmdiag diagnostic check")
    from mmdiag.runner import configure

    try:
        config.stash[SESSION_KEY] = configure(config)
    except MMDiagError as exc:
        raise pytest.UsageError(f"mmdiag: {exc}") from None
    from mmdiag.runner import WorkerResults

    config.pluginmanager.register(WorkerResults(config), "mmdiag-worker-results")


def _session(config: pytest.Config) -> Any:
    return config.stash.get(SESSION_KEY, None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from mmdiag.collect import parametrize

    parametrize(metafunc, _session(metafunc.config))


def pytest_itemcollected(item: pytest.Item) -> None:
    from mmdiag.runner import note_collected

    note_collected(item, _session(item.config))


def pytest_report_header(config: pytest.Config) -> Any:
    from mmdiag.runner import report_header

    return report_header(config, _session(config))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    from mmdiag.runner import note_selected

    note_selected(items, _session(config), config)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """A user-caused error in a check body (a malformed treebank, activations that overflowed) fails it plainly."""
    problem = None
    try:
        return (yield)
    except (MMDiagError, ValueError) as exc:
        if pyfuncitem.get_closest_marker("mm") is None:
            raise
        from mmdiag.runner import plain_problem

        problem = plain_problem(exc, _session(pyfuncitem.config))
        if problem is None:
            raise
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def mm_model(pytestconfig: pytest.Config) -> Any:
    """The adapter under test; override this fixture to diagnose your own model."""
    session = _session(pytestconfig)
    adapter = None if session is None else session.load_model()
    if adapter is None:
        raise pytest.skip.Exception("no model: pass --mm-model=SPEC, or override the mm_model fixture in your "
                                    "conftest.py", _use_item_location=True)  # reported at the check, not here
    return adapter


@pytest.fixture(scope="session")
def mm_session(pytestconfig: pytest.Config) -> Any:
    """The run's :class:`mmdiag.session.MMSession`."""
    return _session(pytestconfig)


@pytest.fixture
def mm(request: pytest.FixtureRequest, mm_session: Any) -> Any:
    """The :class:`mmdiag.api.CheckContext` of an ``@pytest.mark.mm`` check."""
    from mmdiag.runner import check_context

    return check_context(request, mm_session)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    """Under torchrun every rank records its shard first; only rank 0 goes on to run the checks."""
    from mmdiag.runner import sharded_forward

    return sharded_forward(session, _session(session.config))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, Any]:
    report = yield
    from mmdiag.runner import record_outcome

    record_outcome(item, call, report, _session(item.config))
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from mmdiag.runner import terminal_summary

    terminal_summary(terminalreporter, _session(config))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from mmdiag.runner import finish

    finish(session, _session(session.config))
