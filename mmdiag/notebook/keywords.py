"""``mmdiag.diagnose(**options)``: keyword options mapped onto the plugin's ``--mm-*`` command-line options.

A keyword is the option's name without ``--mm-`` and with underscores (``batch_size=8`` is
``--mm-batch-size=8``); the option list is read from :data:`mmdiag.options.OPTIONS`, so a new option is a
new keyword without a change here. Values are validated by the plugin itself, exactly as on the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mmdiag.errors import SpecError
from mmdiag.options import OPTIONS, REPEATABLE

#: on/off options (``--mm-no-cache``): a keyword set to True adds the flag
FLAGS = ("baseline_any", "no_cache", "skip_bad_samples", "allow_outside_data")
#: options that diagnose() itself sets: where the reports go (use Results.save) and what runs
RESERVED = {"model": "pass the model (or its spec) as the first argument",
            "json": "use results.save(DIR)", "html": "use results.save(DIR)",
            "report_dir": "use results.save(DIR)", "markdown": "read results.markdown",
            "checks": "use checks=[...] to select checks by name or family"}


def keyword(option: str) -> str:
    """``--mm-batch-size`` -> ``batch_size``."""
    return option[len("--mm-"):].replace("-", "_")


def _valued() -> dict[str, str]:
    return {keyword(option): option for option, *_ in OPTIONS}


def _repeatable() -> dict[str, str]:
    return {keyword(option): option for option, _ in REPEATABLE}


def known_keywords() -> list[str]:
    """Every keyword option diagnose() accepts, sorted."""
    return sorted({*_valued(), *_repeatable(), *FLAGS} - set(RESERVED))


def _scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        raise SpecError(f"{name}={value!r}: a value is expected (for example a number or a path), not True/False")
    if isinstance(value, (str, int, float, Path)):
        return str(value)
    raise SpecError(f"{name}={value!r}: expected a string, a number or a path, not {type(value).__name__}")


def option_args(options: Mapping[str, Any]) -> list[str]:
    """The ``--mm-*`` arguments for ``options``; an unknown or reserved keyword is a :class:`SpecError`
    naming the accepted ones. ``None`` leaves an option at its default."""
    valued, repeatable = _valued(), _repeatable()
    args: list[str] = []
    for name, value in options.items():
        if name in RESERVED:
            raise SpecError(f"mmdiag.diagnose(): {name}= is set by diagnose() itself; {RESERVED[name]}")
        if value is None:
            continue
        if name in FLAGS:
            if not isinstance(value, bool):
                raise SpecError(f"{name}={value!r}: give True or False")
            if value:
                args.append("--mm-" + name.replace("_", "-"))
        elif name in repeatable:
            items: list[Any]
            if isinstance(value, Mapping):  # threshold={"gap.norm": "<=:1.0"}
                items = [f"{k}={v}" for k, v in value.items()]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                items = [value]
            args.extend(f"{repeatable[name]}={_scalar(name, item)}" for item in items)
        elif name in valued:
            if name == "controls" and isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            args.append(f"{valued[name]}={_scalar(name, value)}")
        else:
            raise SpecError(f"mmdiag.diagnose(): unknown option {name}=; accepted: {', '.join(known_keywords())} "
                            "(each is a --mm-* option of the pytest plugin, e.g. batch_size= is --mm-batch-size)")
    return args


def readable_error(message: str, options: Mapping[str, Any]) -> str:
    """A plugin usage error in the keywords the caller wrote: ``--mm-batch-size='x'`` -> ``batch_size='x'``."""
    names = {**_valued(), **_repeatable()}
    for name in options:
        option = names.get(name)
        if option is not None:
            message = message.replace(option + "=", f"{name}=")
    return message


__all__ = ["FLAGS", "known_keywords", "option_args", "readable_error"]
