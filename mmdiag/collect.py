"""Where the built-in checks live and how they are parametrised.

A check function carries ``@pytest.mark.mm(SPEC)`` (or ``@pytest.mark.mm("check.name",
over=("modality", "layer"))``); :func:`parametrize` registers the spec with the run and
expands its ``over`` axes from the model's layout into ids such as ``image-L07`` so
that ``-k`` selects naturally.
"""
from __future__ import annotations

import inspect
from typing import Any, Optional

import pytest

from mmdiag.checkspec import marker_spec
from mmdiag.errors import SpecError
from mmdiag.metrics.attention import DIRECTIONS
from mmdiag.models.base import IMAGE, MODALITIES, TEXT, optional
from mmdiag.registry import builtin_checks_dir


def _layer_ids(layout: Optional[dict[str, int]], modality: str, blocks: bool = False) -> list[Optional[int]]:
    if layout is None:
        return [None]
    n = layout.get(modality, 0)
    return list(range(1, n)) if blocks else list(range(n))


def expand(over: tuple[str, ...], layout: Optional[dict[str, int]], modalities: tuple[str, ...] = MODALITIES,
           blocks: bool = False):
    """(argnames, values, ids) for a check's ``over`` axes given the model layout.

    ``blocks``: layers are transformer blocks 1..L (attention), not hidden-state
    entries 0..L; block k produces hidden-state entry k, so ``L07`` names the
    same block in both.
    """
    if over == ("modality",):
        return ["modality"], list(modalities), list(modalities)
    if over == ("modality", "layer"):
        values, ids = [], []
        for m in modalities:
            for layer in _layer_ids(layout, m, blocks):
                values.append((m, layer))
                ids.append(m if layer is None else f"{m}-L{layer:02d}")
        return ["modality", "layer"], values, ids
    if over == ("direction",):
        return ["direction"], list(DIRECTIONS), list(DIRECTIONS)
    if over == ("direction", "layer"):
        counts = [layout[m] for m in modalities if layout and m in layout]
        layers = list(range(1, max(counts))) if counts else [None]
        values = [(d, k) for d in DIRECTIONS for k in layers]
        ids = [d if k is None else f"{d}-L{k:02d}" for d, k in values]
        return ["direction", "layer"], values, ids
    if over == ("layer",):
        n = max(layout.values()) if layout else None
        values = [None] if n is None else (list(range(1, n)) if blocks else list(range(n)))
        return ["layer"], values, ["all" if v is None else f"L{v:02d}" for v in values]
    raise ValueError(f"unsupported mm 'over' axes: {over}")


def parametrize(metafunc: Any, session: Any) -> None:
    """pytest_generate_tests body for functions marked ``mm``."""
    try:
        spec = marker_spec(metafunc.definition)
    except SpecError as exc:
        raise pytest.UsageError(f"mmdiag: {exc}") from None
    if spec is None:
        return
    if session is not None:
        try:
            session.checks.add(spec, metafunc.definition.nodeid)
        except SpecError as exc:
            raise pytest.UsageError(f"mmdiag: {exc}") from None
    over = spec.over
    if not over:
        return
    adapter = session.adapter if session is not None else None
    if adapter is None:
        adapter = user_adapter_at_collection(metafunc, session)
    if adapter is None and session is not None and session.config.model:
        adapter = session.load_model()
    layout = dict(adapter.layer_counts()) if adapter is not None else None
    modalities = tuple(getattr(adapter, "modalities", MODALITIES)) if adapter is not None else MODALITIES
    modalities = tuple(m for m in MODALITIES if m in modalities) or modalities
    joint = optional(adapter, "joint_attention") or (spec.cross_ok and optional(adapter, "extractor") is not None)
    if spec.needs_joint and adapter is not None and not joint:
        layout = None  # dual encoders: one (skipping) item instead of one per layer
    names, values, ids = expand(over, layout, modalities, blocks=spec.blocks)
    metafunc.parametrize(names if len(names) > 1 else names[0], values, ids=ids)


def _mm_model_fixture(node: Any) -> Any:
    """The ``mm_model`` fixture definition in force for ``node`` (an item or a function definition)."""
    manager = node.session._fixturemanager  # pytest offers no public lookup of a fixture's definition
    try:
        defs = manager.getfixturedefs("mm_model", node)
    except TypeError:  # pytest < 8.1 took a node id
        defs = manager.getfixturedefs("mm_model", node.nodeid)
    return defs[-1] if defs else None


def mm_model_is_builtin(node: Any) -> bool:
    """Whether ``node`` sees mmdiag's own ``mm_model`` fixture (no user override in a conftest.py)."""
    fixturedef = _mm_model_fixture(node)
    func = getattr(fixturedef, "func", None)
    return func is None or getattr(func, "__module__", "") == "mmdiag.plugin"


def user_adapter_at_collection(metafunc: Any, session: Any) -> Any:
    """An ``mm_model`` fixture override without arguments is called once at collection for the layout.

    The adapter it returns is kept by the session and reused at run time, so the
    model is built once. Overrides that need other fixtures are not called here;
    their per-layer checks then run all layers in one test each.
    """
    if session is None:
        return None
    fixturedef = _mm_model_fixture(metafunc.definition)
    func = getattr(fixturedef, "func", None)
    if func is None or getattr(func, "__module__", "") == "mmdiag.plugin":
        return None
    if inspect.signature(func).parameters:
        return None
    if session.adapter is None:
        session.adapter = func()
        session.adapter_from_fixture = True
    return session.adapter


__all__ = ["IMAGE", "TEXT", "builtin_checks_dir", "expand", "parametrize"]
