"""Regression gating against a saved baseline (pytester, tiny preset)."""
import json

import pytest

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=10", "--mm-batch-size=10", "-p", "no:cacheprovider",
       "-k", "gap_norm or gap_l2i", "--color=no")


def _edit_baseline(path, check, value):
    doc = json.loads(path.read_text())
    for r in doc["results"]:
        if r["check"] == check:
            r["value"] = value
    path.write_text(json.dumps(doc))


def test_unchanged_model_passes_against_its_own_baseline(pytester):
    pytester.runpytest(*RUN, "--mm-save-baseline=base.json").assert_outcomes(passed=2)
    result = pytester.runpytest(*RUN, "--mm-baseline=base.json", "--mm-compare-fail=*:5%", "--mm-json=now.json")
    result.assert_outcomes(passed=2)
    assert "Δ baseline" in result.stdout.str()
    now = json.loads((pytester.path / "now.json").read_text())
    assert all(r["baseline"]["delta"] == pytest.approx(0.0, abs=1e-9) for r in now["results"])


def test_worse_than_baseline_beyond_tolerance_fails(pytester):
    pytester.runpytest(*RUN, "--mm-save-baseline=base.json")
    _edit_baseline(pytester.path / "base.json", "gap.norm", 0.5)  # the baseline had a much smaller gap
    result = pytester.runpytest(*RUN, "--mm-baseline=base.json", "--mm-compare-fail=gap.norm:5%",
                                "--mm-threshold=gap.norm=<=:10")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gap.norm regressed vs baseline*baseline 0.5*exceeds the allowed 5%*"])


def test_improvement_is_not_a_regression(pytester):
    pytester.runpytest(*RUN, "--mm-save-baseline=base.json")
    _edit_baseline(pytester.path / "base.json", "gap.norm", 5.0)  # the baseline gap was larger: we improved
    result = pytester.runpytest(*RUN, "--mm-baseline=base.json", "--mm-compare-fail=gap.norm:0.01",
                                "--mm-threshold=gap.norm=<=:10")
    result.assert_outcomes(passed=2)


def test_baseline_of_another_schema_is_a_usage_error(pytester):
    (pytester.path / "old.json").write_text(json.dumps({"schema": "mmdiag/0", "results": []}))
    result = pytester.runpytest(*RUN, "--mm-baseline=old.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has schema 'mmdiag/0'; this mmdiag reads 'mmdiag/1'*"])


def test_malformed_baseline_is_a_usage_error(pytester):
    (pytester.path / "bad.json").write_text("{not json")
    result = pytester.runpytest(*RUN, "--mm-baseline=bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad.json:1: malformed JSON*"])


def test_baseline_without_matching_checks_warns(pytester):
    (pytester.path / "other.json").write_text(json.dumps({"schema": "mmdiag/1", "results": [
        {"check": "probe.depth", "params": {"modality": "text", "layer": 3}, "value": 0.8}]}))
    result = pytester.runpytest(*RUN, "--mm-baseline=other.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*warning: the baseline*has no result matching this run's checks*"])


@pytest.mark.parametrize("rule,message", [
    ("gap.norm", "*expected CHECK:TOL*"),
    ("nope.check:5%", "*unknown check 'nope.check'*"),
])
def test_bad_compare_rules_are_usage_errors(pytester, rule, message):
    (pytester.path / "b.json").write_text(json.dumps({"schema": "mmdiag/1", "results": []}))
    result = pytester.runpytest(*RUN, "--mm-baseline=b.json", f"--mm-compare-fail={rule}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
