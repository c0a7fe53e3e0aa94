"""The family registry: one declaration per model family, looked up by a config's ``model_type``.

A :class:`Family` says which ``model_type`` values it covers, how to build its
adapter (ONE signature for every family: :data:`AdapterFactory`), how to build
its ``random:`` presets offline (:data:`RandomBuilder`), which class loads its
checkpoints, and what it needs from the preprocessing files (``needs``).

Three ways a family gets in, looked up in this order of precedence (a later one
replaces an earlier one of the same name):

1. the built-in declarations (:mod:`mmdiag.models.builtin_families`);
2. the entry-point group ``mmdiag.families`` (pinned): another package declares
   ``[project.entry-points."mmdiag.families"] myfam = "mypkg.mmdiag_family:FAMILY"``
   where the object is a :class:`Family`, a list of them, or a no-argument
   callable returning either;
3. :func:`register_family` at runtime (a ``conftest.py``).

An architecture that no family covers is a usage error listing the supported
ones (:func:`family_for`).
"""
from __future__ import annotations

from importlib import metadata
from typing import Any, Iterable, Optional

from mmdiag.errors import SpecError
from mmdiag.models.builtin_families import BUILTIN
from mmdiag.models.decoder_vlm import generic_family, is_generic_decoder
from mmdiag.models.family import NEEDS, AdapterFactory, Family, RandomBuilder  # noqa: F401  (re-exported)

#: the entry-point group through which another package adds a family (pinned)
ENTRY_POINT_GROUP = "mmdiag.families"

_runtime: dict[str, Family] = {}
_cache: dict[str, dict[str, Family]] = {}


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` at runtime (e.g. from a ``conftest.py``); a name already taken needs ``replace=True``."""
    if not isinstance(family, Family):
        raise SpecError(f"register_family takes a mmdiag.models.families.Family, not {type(family).__name__}")
    if family.name in families() and not replace:
        raise SpecError(f"a model family named {family.name!r} is already registered "
                        f"({families()[family.name].origin}); pass replace=True to replace it")
    _runtime[family.name] = _with_origin(family, "register_family")
    _cache.clear()
    return family


def unregister_family(name: str) -> None:
    """Drop a family added with :func:`register_family` (tests)."""
    _runtime.pop(name, None)
    _cache.clear()


def _with_origin(family: Family, origin: str) -> Family:
    from dataclasses import replace

    return replace(family, origin=origin)


def _as_families(obj: Any, where: str) -> list[Family]:
    if callable(obj) and not isinstance(obj, Family):
        obj = obj()
    items = [obj] if isinstance(obj, Family) else list(obj) if isinstance(obj, (list, tuple)) else None
    if items is None or not all(isinstance(f, Family) for f in items):
        raise SpecError(f"{where} must give a mmdiag.models.families.Family, a list of them, or a callable "
                        f"returning either (got {type(obj).__name__})")
    return items


def entry_point_families() -> list[Family]:
    """The families other packages declare in the ``mmdiag.families`` entry-point group."""
    out: list[Family] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r}"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001  (a broken plugin package is the user's to fix: name it)
            raise SpecError(f"{where} cannot be loaded ({type(exc).__name__}: {exc})") from None
        out.extend(_with_origin(f, f"entry point {ep.name}") for f in _as_families(obj, where))
    return out


def families() -> dict[str, Family]:
    """Every registered family by name: built-ins, then entry points, then runtime registrations."""
    if "all" not in _cache:
        table: dict[str, Family] = {f.name: f for f in BUILTIN}
        table.update({f.name: f for f in entry_point_families()})
        table.update(_runtime)
        _cache["all"] = table
    return _cache["all"]


def by_model_type() -> dict[str, Family]:
    """``model_type`` -> family (a later family claiming a type takes it over)."""
    return {t: f for f in families().values() for t in f.model_types}


def supported() -> str:
    """``family (type/type), ...`` for error messages."""
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in families().values())


def lookup(model_type: str) -> Optional[Family]:
    return by_model_type().get(model_type)


def family_for(model_type: str, spec: str, config: Any = None) -> Family:
    """The family of ``model_type``; an image-text-to-text config with an image token falls back on the generic
    decoder family; anything else is a usage error listing the supported families."""
    family = lookup(model_type)
    if family is not None:
        return family
    if config is not None:
        if is_generic_decoder(config):
            return generic_family(model_type)
    raise SpecError(
        f"--mm-model={spec!r} is a {model_type!r} model, which no built-in adapter supports and no registered "
        f"model family covers (families: "
        f"{supported()}). Declare one (mmdiag.models.families.register_family, or the {ENTRY_POINT_GROUP!r} "
        "entry-point group), or wrap it in an adapter object and override the `mm_model` fixture in your "
        "conftest.py (see the README, 'Bring your own model').")


def presets_of(items: Iterable[Family]) -> dict[str, Any]:
    """``name -> Preset`` over the families' presets."""
    return {p.name: p for f in items for p in f.presets}


def family_of_preset(name: str) -> Optional[Family]:
    for family in families().values():
        if any(p.name == name for p in family.presets):
            return family
    return None
