"""The runnable example of docs/writing-checks.md: a user's own checks are first-class.

They get thresholds (default and overridden), baseline comparison in their declared direction, the recordings
they declare, and their own parametrize arguments in ``params``.
"""
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "user_checks" / "test_mm_spread.py"
RUN = ("test_mm_spread.py", "--mm-model=random:tiny-clip", "--mm-samples=16", "--mm-batch-size=8", "--mm-no-cache", "-p",
       "no:cacheprovider", "--color=no")


@pytest.fixture
def project(pytester):
    pytester.makepyfile(test_mm_spread=EXAMPLE.read_text())
    return pytester


def _results(path):
    return json.loads(Path(path).read_text())["results"]


def test_user_checks_run_with_their_params_thresholds_and_recordings(project):
    result = project.runpytest(*RUN, "--mm-threshold=mine.spread=<:0.999", "--mm-json=r.json", "-v")
    results = _results(project.path / "r.json")
    spread = [r for r in results if r["check"] == "mine.spread"]
    assert sorted((r["params"]["modality"], r["params"]["k"]) for r in spread) == [
        ("image", 1), ("image", 4), ("text", 1), ("text", 4)]  # k is kept: four distinct results
    assert all(r["threshold"] == {"op": "<", "value": 0.999, "level": "fail"} for r in spread)
    assert all(0 < r["value"] <= 1 for r in spread)
    by_k = {(r["params"]["modality"], r["params"]["k"]): r["value"] for r in spread}
    assert by_k[("image", 4)] >= by_k[("image", 1)]  # more directions hold more variance
    focus = [r for r in results if r["check"] == "mine.attention_focus"]
    assert focus and all(r["status"] == "info" and 0 < r["value"] <= 1 for r in focus), focus
    assert {r["params"]["layer"] for r in focus} == {1, 2, 3}  # blocks of the tiny towers
    doc = json.loads((project.path / "r.json").read_text())
    assert set(doc["series"]["mine.spectrum"]) == {"image", "text"}
    assert doc["checks"]["mine.spread"]["higher_is_better"] is False
    assert "test_spread[image-1]" in result.stdout.str()  # pytest ids follow the params
    assert result.ret == 0


def test_a_user_check_is_gated_by_its_default_threshold(project):
    result = project.runpytest(*RUN, "--mm-threshold=mine.spread[text-4]=<:0.01", "--mm-json=r.json")
    failed = [r for r in _results(project.path / "r.json") if r["status"] == "fail"]
    assert [(r["check"], r["params"]) for r in failed] == [("mine.spread", {"modality": "text", "k": 4})]
    assert result.ret == 1


def test_a_user_check_is_compared_with_a_baseline_in_its_direction(project):
    project.runpytest(*RUN, "--mm-save-baseline=base.json")
    doc = json.loads((project.path / "base.json").read_text())
    for r in doc["results"]:
        if r["check"] == "mine.spread" and r["params"] == {"modality": "image", "k": 1}:
            r["value"] -= 0.2  # the baseline was better (lower) by 0.2: this run is a regression
    (project.path / "base.json").write_text(json.dumps(doc))
    result = project.runpytest(*RUN, "--mm-baseline=base.json", "--mm-compare-fail=mine.spread:0.05",
                               "--mm-json=r.json")
    regressed = [r for r in _results(project.path / "r.json") if "regressed" in r.get("message", "")]
    assert [(r["check"], r["params"]) for r in regressed] == [("mine.spread", {"modality": "image", "k": 1})]
    assert result.ret == 1


@pytest.mark.parametrize("option", ["--mm-threshold=mine.sprad=<:0.5", "--mm-compare-fail=mine.sprad:5%"])
def test_a_misspelt_user_check_is_a_usage_error(project, option):
    extra = ("--mm-baseline=none.json",) if "compare" in option else ()
    if extra:
        (project.path / "none.json").write_text(json.dumps({"schema": "mmdiag/1", "results": []}))
        extra = ("--mm-baseline=none.json",)
    result = project.runpytest(*RUN, option, *extra)
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*unknown check 'mine.sprad'*mine.spread*"])
