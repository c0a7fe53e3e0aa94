"""The check API: one CheckSpec per check, built-in checks on the public API only, docs that follow the specs."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import mmdiag
from mmdiag import CheckSpec, PlotSpec, Threshold
from mmdiag.catalogue import PINNED_CHECKS, drifted
from mmdiag.checkspec import AXES, FAMILY_ORDER, RECORDINGS, spec_from_marker
from mmdiag.errors import SpecError
from mmdiag.registry import CheckRegistry, builtin_checks_dir, builtin_specs

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT.parent / "shared" / "DESIGN.md"


def test_the_public_api_is_exported_from_the_package_root():
    from mmdiag import Adapter, CheckContext, MMDiagWarning, Trace  # noqa: F401

    assert {"CheckContext", "CheckSpec", "Trace", "Adapter", "MMDiagWarning"} <= set(mmdiag.__all__)
    with pytest.raises(AttributeError):
        mmdiag.NotAThing  # noqa: B018


def test_every_pinned_check_has_one_spec_with_its_facts():
    specs = builtin_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert set(PINNED_CHECKS) <= set(names)
    for spec in specs:
        assert spec.title and spec.meaning and spec.source, spec.name
        assert spec.family in FAMILY_ORDER
        assert spec.over in ((), *AXES)
    families = [s.family for s in specs]
    assert families == sorted(families, key=FAMILY_ORDER.index)  # catalogue order


@pytest.mark.skipif(not DESIGN.is_file(), reason="../shared/DESIGN.md is not beside this checkout")
def test_the_pinned_list_is_the_design_contracts():
    section = DESIGN.read_text().split("## 4.", 1)[1].split("## 5.", 1)[0].split("Parameters go in", 1)[0]
    assert set(re.findall(r"`([a-z]+\.[a-z_0-9]+)`", section)) == set(PINNED_CHECKS)


def _session_touches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.name}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("session", "_session")]


def test_built_in_checks_use_only_the_public_api():
    files = sorted(builtin_checks_dir().glob("test_mm_*.py"))
    assert files
    touches = [hit for path in files for hit in _session_touches(path)]
    assert touches == [], f"built-in checks reach into the session: {touches}"


def test_the_session_touch_detector_can_fail(tmp_path):
    bad = tmp_path / "test_mm_bad.py"
    bad.write_text("def test_x(mm):\n    mm.session.series['x'] = 1\n")
    assert _session_touches(bad) == ["test_mm_bad.py:2"]


def test_readme_and_docs_follow_the_specs():
    assert drifted(ROOT) == [], "run: python -m mmdiag.catalogue"


def test_drift_is_detected(tmp_path):
    (tmp_path / "README.md").write_text("<!-- catalogue:thresholds -->\n| stale |\n<!-- /catalogue:thresholds -->\n")
    assert drifted(tmp_path) == ["README.md"]


def test_a_spec_validates_what_it_declares():
    spec = CheckSpec("mine.spread", threshold="<=:1.5:warn", needs="attentions", series="mine.s")
    assert spec.threshold == Threshold("<=", 1.5, "warn") and spec.needs == frozenset({"attentions"})
    assert spec.series == ("mine.s",) and spec.family == "mine" and spec.worse_direction == 0
    assert CheckSpec("a.b", higher_is_better=True).worse_direction == -1
    for bad, match in [({"name": "Spread"}, "family.metric"), ({"over": ("k",)}, "not one of"),
                       ({"threshold": "<:nan"}, "NaN"), ({"threshold": "~:1"}, "OP:VALUE"),
                       ({"needs": ("pixels",)}, "unknown needs"), ({"uncertainty": "vibes"}, "accepted"),
                       ({"higher_is_better": "yes"}, "True, False or None")]:
        with pytest.raises(SpecError, match=match):
            CheckSpec(**{"name": "mine.x", **bad})
    assert set(RECORDINGS) == {"words", "regions", "attentions"}


def test_a_spec_round_trips_through_results_json():
    plot = PlotSpec("mine-plot", ("mine", "curve"), "cone_plot", "a caption")
    spec = CheckSpec("mine.spread", title="T", over=("modality",), threshold="<:0.5", higher_is_better=False,
                     plots=(plot,), meaning="m", healthy="h", source="s", uncertainty="none", tolerance="0.02")
    back = CheckSpec.from_json(spec.name, spec.to_json())
    assert back.to_json() == spec.to_json()


def test_a_marker_gives_a_spec_either_way():
    spec = CheckSpec("mine.spread", over=("modality",))
    assert spec_from_marker((spec,), {}, "here") is spec
    assert spec_from_marker(("mine.spread",), {"over": ("modality",)}, "here") == spec
    with pytest.raises(SpecError, match="unknown keywords colour"):
        spec_from_marker(("mine.spread",), {"colour": "red"}, "here")
    with pytest.raises(SpecError, match="takes no keywords"):
        spec_from_marker((spec,), {"over": ()}, "here")


def test_the_registry_knows_built_in_and_collected_checks():
    registry = CheckRegistry()
    assert "cone.final" in registry and "mine.spread" not in registry
    registry.add(CheckSpec("mine.spread", needs=("attentions",)))
    registry.add(CheckSpec("mine.spread", needs=("attentions",)))  # the same spec twice is fine
    with pytest.raises(SpecError, match="declared twice"):
        registry.add(CheckSpec("mine.spread"))
    assert registry.names()[-1] == "mine.spread"
    registry.selected = {"mine.spread"}
    assert registry.needs("attentions") and not registry.needs("words")
    registry.selected = set()
    assert not registry.needs("attentions")
