"""The checks a run knows: the built-in catalogue plus every check collected (built-in and user).

Thresholds, compare rules, the recorder and the reports ask the registry, never
a hand-kept table. The built-in catalogue is read from the ``@pytest.mark.mm``
markers of the built-in check files themselves, so a check's spec is written once,
next to the check.
"""
from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mmdiag.checkspec import FAMILY_ORDER, CheckSpec, spec_from_marker
from mmdiag.errors import SpecError


def builtin_checks_dir() -> Path:
    """The built-in checks: inside the installed package, or ``checks/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "checks", here.parent / "checks"):
        if (candidate / "test_mm_cone.py").is_file():
            return candidate
    raise FileNotFoundError("mmdiag's built-in checks are missing from this installation")


def specs_of_module(module: object) -> list[CheckSpec]:
    """The specs of the ``@pytest.mark.mm`` functions of an imported check module, in file order."""
    found = []
    for name, func in vars(module).items():
        if not name.startswith("test") or not callable(func):
            continue
        for mark in getattr(func, "pytestmark", []):
            if getattr(mark, "name", None) == "mm":
                found.append(spec_from_marker(tuple(mark.args), mark.kwargs, f"{module.__name__}.{name}"))
    return found


@lru_cache(maxsize=1)
def builtin_specs() -> tuple[CheckSpec, ...]:
    """Every built-in check's spec, in family order then file order."""
    specs: list[CheckSpec] = []
    for path in sorted(builtin_checks_dir().glob("test_mm_*.py")):
        name = f"_mmdiag_builtin_checks.{path.stem}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        specs.extend(specs_of_module(module))
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return tuple(sorted(specs, key=lambda s: order.get(s.family, len(order))))


class CheckRegistry:
    """Specs by name: the built-ins (read lazily) and the checks collected in this run."""

    def __init__(self, builtins: Optional[Iterable[CheckSpec]] = None) -> None:
        self._builtins = None if builtins is None else {s.name: s for s in builtins}
        self.collected: dict[str, CheckSpec] = {}
        #: names of the collected checks that stayed selected (None until collection ends)
        self.selected: Optional[set[str]] = None

    @property
    def builtins(self) -> dict[str, CheckSpec]:
        if self._builtins is None:
            self._builtins = {s.name: s for s in builtin_specs()}
        return self._builtins

    def add(self, spec: CheckSpec, where: str = "") -> None:
        """Register a collected check; two different specs under one name are a usage error."""
        known = self.collected.get(spec.name)
        if known is not None and known != spec:
            raise SpecError(f"{where or spec.name}: check {spec.name!r} is declared twice with different specs; "
                            "declare the CheckSpec once and pass the same object to every @pytest.mark.mm")
        self.collected[spec.name] = spec

    def get(self, name: str) -> Optional[CheckSpec]:
        return self.collected.get(name) or self.builtins.get(name)

    def names(self) -> list[str]:
        """Every known check name: built-ins in catalogue order, then collected user checks."""
        return [*self.builtins, *(n for n in self.collected if n not in self.builtins)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[CheckSpec]:
        for name in self.names():
            yield self.get(name)  # type: ignore[misc]

    def active(self) -> list[CheckSpec]:
        """The specs of the selected checks (every collected one before selection is known)."""
        names = self.selected if self.selected is not None else set(self.collected)
        return [self.collected[n] for n in self.collected if n in names]

    def needs(self, recording: str) -> bool:
        """Whether a selected check declared ``recording`` (all recordings when nothing is known yet)."""
        if self.selected is None and not self.collected:
            return True
        return any(recording in spec.needs for spec in self.active())

    def unknown(self, name: str) -> str:
        """The usage-error text for a name no check has."""
        return f"unknown check {name!r}; valid checks: {', '.join(self.names())}"


__all__ = ["CheckRegistry", "builtin_checks_dir", "builtin_specs", "specs_of_module"]
