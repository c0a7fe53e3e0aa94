"""Refusals that keep the release gate honest: never green while checking nothing.

Each function returns the one-line problem (or None); the runner turns it into a
usage error (exit 4) before the forward pass, or into the run's exit status at the end.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from mmdiag.report.baseline import mismatch
from mmdiag.report.verdict import Verdict
from mmdiag.thresholds import check_of, param_id


def misspelt_builtin(config: Any) -> Optional[str]:
    """Before collection: a threshold or compare rule naming a built-in family's check that does not exist.

    Checks of other families may be a user's own, known only after collection.
    """
    from mmdiag.checkspec import FAMILIES
    from mmdiag.registry import CheckRegistry

    registry = CheckRegistry()
    names = [(t.rationale or key, check_of(key)) for layer in config.threshold_layers for key, t in layer.items()]
    names += [(f"--mm-compare-fail={r.text}", r.check) for r in config.compare_rules if r.check != "*"]
    problems = [f"{where}: {registry.unknown(name)}" for where, name in names
                if name.split(".", 1)[0] in FAMILIES and name not in registry]
    return "; ".join(problems) or None


def unknown_checks(session: Any) -> Optional[str]:
    """Threshold overrides and compare rules must name a check this run knows, built in or collected."""
    known = session.checks.__contains__
    problems = [f"{where}: {session.checks.unknown(name)}" for where, name in session.thresholds.unknown_checks(known)]
    if session.comparison is not None:
        problems += [f"--mm-compare-fail: {session.checks.unknown(name)}"
                     for name in session.comparison.unknown_checks(known)]
    return "; ".join(problems) or None


def collected_params(items: Iterable[Any], params_of: Any, spec_of: Any) -> dict[str, Optional[set[str]]]:
    """Per check, the parametrisation ids collected (None for a check whose axes were left open at collection,
    because its model's layout was unknown: its params cannot be checked then)."""
    found: dict[str, Optional[set[str]]] = {}
    for item in items:
        spec = spec_of(item)
        if spec is None:
            continue
        params = params_of(item)
        ids = found.setdefault(spec.name, set())
        if ids is None or any(axis not in params for axis in spec.over):
            found[spec.name] = None
        else:
            ids.add(param_id(params))
    return found


def unknown_params(session: Any, collected: dict[str, Optional[set[str]]]) -> Optional[str]:
    """A threshold or compare rule naming a parametrisation that no collected check has (``[imgae-L01]``)."""
    keyed = [(t.rationale or key, key) for key, t in session.thresholds.overrides.items() if "[" in key]
    if session.comparison is not None:
        keyed += [(f"--mm-compare-fail={r.text}", f"{r.check}[{r.params}]") for r in session.comparison.rules
                  if r.params is not None]
    problems = []
    for where, key in keyed:
        check, wanted = check_of(key), key.split("[", 1)[1].rstrip("]")
        ids = collected.get(check)
        if check == "*" or ids is None or check not in collected:
            continue  # layout unknown at collection, or a check not collected in this run: nothing to check
        if wanted not in ids:
            listed = ", ".join(sorted(ids)[:12]) + (" ..." if len(ids) > 12 else "")
            problems.append(f"{where}: {check} has no parametrisation {wanted!r} in this run; it has: {listed}")
    return "; ".join(problems) or None


def model_identity(adapter: Any, data_spec: str) -> dict:
    """What a baseline must share with this run: the model family, its layer counts, the data set."""
    layers = dict(adapter.layer_counts()) if adapter is not None else None
    return {"family": getattr(adapter, "family", None), "layers": layers, "data": data_spec}


def baseline_mismatch(session: Any, allow: bool) -> Optional[str]:
    """A baseline measured on another model family, architecture or data set is refused unless ``allow``."""
    comparison = session.comparison
    if comparison is None or allow or session.adapter is None:
        return None
    problems = mismatch(comparison.source, model_identity(session.adapter, session.config.data))
    if not problems:
        return None
    return (f"--mm-baseline={str(comparison.source.path)!r} was measured on something else ({'; '.join(problems)}); "
            "compare like with like, or pass --mm-baseline-any to compare anyway")


def nothing_checked(results: list) -> Optional[str]:
    """A run in which no check produced a value must not pass."""
    verdict = Verdict.of(results)
    if results and verdict.outcome == "empty":
        reasons = list(dict.fromkeys(r.message for r in results if r.message))[:3]
        return (f"no mmdiag check produced a value ({verdict.count('skip')} skipped): " + " | ".join(reasons))
    return None


def no_model(session: Any, fixture_is_builtin: bool) -> Optional[str]:
    """``--mm-checks`` without ``--mm-model`` and without an ``mm_model`` fixture override checks nothing."""
    if session.config.model or session.adapter is not None or not fixture_is_builtin:
        return None
    return ("--mm-checks collects the built-in checks but there is no model: pass --mm-model=SPEC "
            "(random:PRESET, zoo:NAME, a directory or a hub id), or override the mm_model fixture in your conftest.py")
