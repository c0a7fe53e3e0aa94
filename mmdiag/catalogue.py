"""The check tables of README.md, docs/checks.md and docs/contract.md, generated from the checks' specs, and the
model-family table of docs/adapters.md, generated from the family registry.

Each document holds generated blocks between ``<!-- catalogue:NAME -->`` and
``<!-- /catalogue:NAME -->``. ``python -m mmdiag.catalogue`` rewrites them from
the built-in :class:`~mmdiag.checkspec.CheckSpec` declarations;
``python -m mmdiag.catalogue --check`` exits 1 when a document has drifted (the
test suite runs the same comparison).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from mmdiag.checkspec import FAMILIES, CheckSpec
from mmdiag.registry import builtin_specs

#: The check names pinned by the design contract (../shared/DESIGN.md §4); the rest are mmdiag's additions.
PINNED_CHECKS = (
    "cone.final", "cone.layer", "cone.narrowing",
    "gap.norm", "gap.l2i", "gap.rmg", "gap.separability", "gap.shift_optimum",
    "geometry.alignment", "geometry.uniformity", "geometry.rankme", "geometry.cka", "geometry.mknn",
    "probe.depth", "probe.distance", "probe.selectivity", "probe.text_retention", "probe.scene_vs_raw",
    "attention.share", "attention.entropy",
)
_PARAMS = {("modality",): "modality", ("modality", "layer"): "modality-Lk", ("direction",): "direction",
           ("direction", "layer"): "direction-Lk", ("layer",): "Lk"}
_DIRECTION = {True: "higher", False: "lower", None: "either way"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def display_name(spec: CheckSpec) -> str:
    """``cone.layer[modality-Lk]``: the check with the shape of its parametrisation."""
    params = _PARAMS.get(spec.over)
    return f"`{spec.name}[{params}]`" if params else f"`{spec.name}`"


def checks_table(specs: Iterable[CheckSpec]) -> str:
    """One row per check: what it measures, the healthy range, which way is better, its default gate."""
    lines = ["| check | what it measures | healthy | better | default threshold | source |",
             "|---|---|---|---|---|---|"]
    for spec in specs:
        gate = f"`{spec.threshold.describe()}`" if spec.threshold else "not gated"
        lines.append(f"| {display_name(spec)} | {_cell(spec.meaning)} | {_cell(spec.healthy)} | "
                     f"{_DIRECTION[spec.higher_is_better]} | {gate} | {_cell(spec.source)} |")
    return "\n".join(lines)


def families_table(specs: Sequence[CheckSpec]) -> str:
    """One row per family: its title and its checks."""
    lines = ["| family | checks |", "|---|---|"]
    for family, title in FAMILIES.items():
        names = ", ".join(display_name(s) for s in specs if s.family == family)
        if names:
            lines.append(f"| {title} (`{family}`) | {names} |")
    return "\n".join(lines)


def thresholds_table(specs: Iterable[CheckSpec]) -> str:
    """The gated checks with their default threshold and its rationale."""
    specs = list(specs)
    lines = ["| check | default | rationale |", "|---|---|---|"]
    for spec in specs:
        if spec.threshold is not None:
            lines.append(f"| `{spec.name}` | `{spec.threshold.op} {spec.threshold.value:g}` ({spec.threshold.level}) "
                         f"| {_cell(spec.threshold.rationale)} |")
    ungated = sum(1 for s in specs if s.threshold is None)
    lines.append(f"| the other {ungated} checks | reported, not gated | their healthy ranges depend on the model "
                 "family; set your own from a baseline run |")
    return "\n".join(lines)


def added_checks(specs: Iterable[CheckSpec]) -> str:
    """The built-in checks beyond the pinned names, for docs/contract.md."""
    return "\n".join(f"- {display_name(s)}: {s.meaning} ({s.source})" for s in specs if s.name not in PINNED_CHECKS)


def series_keys(specs: Iterable[CheckSpec]) -> str:
    """The ``series`` keys of results.json that the built-in checks publish or plot."""
    keys: dict[str, None] = {}
    for spec in specs:
        for key in (*spec.series, *(p.series[0] for p in spec.plots)):
            keys.setdefault(key, None)
    return ", ".join(f"`{k}`" for k in keys)


_NEEDS = {"tokenizer": "tokenizer", "image_processor": "tokenizer + image processor",
          "processor": "processor (image processor, tokenizer, chat template)"}


def model_families(specs: Sequence[CheckSpec] = ()) -> str:
    """One row per built-in model family of :mod:`mmdiag.models.builtin_families` (docs/adapters.md): the model
    types it covers, the preset the family matrix test saves and runs, what it loads, how tokens map to modalities."""
    from mmdiag.models.builtin_families import BUILTIN

    lines = ["| family | model types | verified by the matrix with | loads | tokens -> modalities |",
             "|---|---|---|---|---|"]
    for family in BUILTIN:
        preset = f"`random:{family.matrix_preset}`" if family.matrix_preset else "-"
        types = ", ".join(f"`{t}`" for t in family.model_types)
        tokens = _cell(family.tokens).replace("<", "&lt;")
        loads = _NEEDS[family.needs] + "".join(f"; needs `{m}`" for m, _ in family.requires)
        lines.append(f"| `{family.name}` | {types} | {preset} | {loads} | {tokens} |")
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[Sequence[CheckSpec]], str]] = {
    "families": families_table, "checks": checks_table, "thresholds": thresholds_table,
    "added-checks": added_checks, "series": series_keys, "model-families": model_families,
}
DOCUMENTS = ("README.md", "docs/checks.md", "docs/contract.md", "docs/adapters.md")
_BLOCK = re.compile(r"(<!-- catalogue:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /catalogue:(?P=name) -->)", re.S)


def render(text: str, specs: Sequence[CheckSpec]) -> str:
    """``text`` with every catalogue block regenerated from ``specs``."""
    def block(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"unknown catalogue block {name!r}; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name](specs) + "\n" + match.group(4)
    return _BLOCK.sub(block, text)


def drifted(root: Path, specs: Optional[Sequence[CheckSpec]] = None) -> list[str]:
    """The documents under ``root`` whose catalogue blocks differ from the specs."""
    specs = list(builtin_specs()) if specs is None else list(specs)
    stale = []
    for name in DOCUMENTS:
        path = root / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if render(text, specs) != text:
                stale.append(name)
    return stale


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmdiag.catalogue", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: .)")
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any document drifted")
    args = parser.parse_args(argv)
    specs = list(builtin_specs())
    if args.check:
        stale = drifted(args.root, specs)
        for name in stale:
            print(f"{name}: check tables differ from the specs; run python -m mmdiag.catalogue", file=sys.stderr)
        return 1 if stale else 0
    for name in DOCUMENTS:
        path = args.root / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            new = render(text, specs)
            if new != text:
                path.write_text(new, encoding="utf-8")
                print(f"updated {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
