"""A release gate you can trust: never green while checking nothing, visible to CI tools (pytester, tiny presets)."""
import json
import xml.etree.ElementTree as ET

import pytest

TINY = ("--mm-model=random:tiny-clip", "--mm-samples=10", "--mm-batch-size=10", "-p", "no:cacheprovider",
        "--mm-no-cache", "--color=no")
USAGE = pytest.ExitCode.USAGE_ERROR


def _one_line_usage_error(result, pattern):
    assert result.ret == USAGE, result.stdout.str()[-2000:]
    result.stderr.fnmatch_lines([f"ERROR: mmdiag: {pattern}"])
    assert "Traceback" not in result.stderr.str()


# -- never green while checking nothing ------------------------------------------------------------------------

def test_checks_without_a_model_are_a_usage_error(pytester):
    _one_line_usage_error(pytester.runpytest("--mm-checks", "-p", "no:cacheprovider"),
                          "--mm-checks collects the built-in checks but there is no model*--mm-model=SPEC*")


def test_an_empty_model_option_is_a_usage_error(pytester):
    _one_line_usage_error(pytester.runpytest("--mm-model=", "-p", "no:cacheprovider"),
                          "--mm-model is empty*unset variable*")


def test_an_ini_model_says_how_to_run_the_checks(pytester):
    pytester.makeini("[pytest]\nmm_model = random:tiny-clip\n")
    pytester.makepyfile("def test_other():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["mmdiag: mm_model = random:tiny-clip is set in the ini file*pytest --mm-checks*"])
    assert result.ret == 0


@pytest.mark.parametrize("option,pattern", [
    ("--mm-threshold=cone.layer[imgae-L01]=<:0.5", "*cone.layer has no parametrisation 'imgae-L01'*image-L00*"),
    ("--mm-threshold=cone.layer[image-L11]=<:0.5", "*cone.layer has no parametrisation 'image-L11'*image-L03*"),
])
def test_a_threshold_naming_params_no_check_has_is_a_usage_error(pytester, option, pattern):
    _one_line_usage_error(pytester.runpytest(*TINY, option), pattern)


def test_a_nan_threshold_is_a_usage_error(pytester):
    _one_line_usage_error(pytester.runpytest(*TINY, "--mm-threshold=gap.norm=<:nan"), "*must be a finite number*")


def test_a_baseline_of_another_architecture_is_refused_unless_asked(pytester):
    pytester.runpytest(*TINY, "-k", "gap_norm", "--mm-save-baseline=base.json")
    doc = json.loads((pytester.path / "base.json").read_text())
    assert doc["model"]["layers"] == {"image": 4, "text": 4}
    doc["model"]["family"], doc["model"]["layers"] = "vilt", {"joint": 12}
    (pytester.path / "base.json").write_text(json.dumps(doc))
    refused = pytester.runpytest(*TINY, "-k", "gap_norm", "--mm-baseline=base.json")
    _one_line_usage_error(refused, "*was measured on something else (family 'vilt' in the baseline, 'clip' in this "
                                   "run; layers*--mm-baseline-any*")
    allowed = pytester.runpytest(*TINY, "-k", "gap_norm", "--mm-baseline=base.json", "--mm-baseline-any")
    assert allowed.ret == 0


def test_a_non_numeric_baseline_value_is_refused(pytester):
    pytester.runpytest(*TINY, "-k", "gap_norm", "--mm-save-baseline=base.json")
    doc = json.loads((pytester.path / "base.json").read_text())
    doc["results"][0]["value"] = True
    (pytester.path / "base.json").write_text(json.dumps(doc))
    _one_line_usage_error(pytester.runpytest(*TINY, "--mm-baseline=base.json"),
                          "*results[[]0[]] (gap.norm) has value True; a baseline value is a number or null*")


def test_a_run_in_which_nothing_produced_a_value_does_not_pass(pytester):
    result = pytester.runpytest(*TINY, "-k", "text_retention")  # skips: no --mm-text-reference
    assert result.ret == USAGE
    result.stdout.fnmatch_lines(["mmdiag: no mmdiag check produced a value (1 skipped)*--mm-text-reference*"])


# -- visible to CI ------------------------------------------------------------------------------------------

def test_junit_xml_carries_each_result_as_properties(pytester):
    pytester.runpytest(*TINY, "-k", "gap_norm or cone_final", "--junitxml=junit.xml")
    root = ET.parse(pytester.path / "junit.xml").getroot()
    cases = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in root.iter("testcase")}
    gap = cases["test_gap_norm"]
    assert gap["mmdiag.check"] == "gap.norm" and gap["mmdiag.status"] in ("pass", "warn")
    assert float(gap["mmdiag.value"]) > 0 and gap["mmdiag.threshold"] == "<= 1.19 (warn)"
    assert json.loads(gap["mmdiag.params"]) == {}
    assert {"mmdiag.ci_low", "mmdiag.ci_high"} <= set(gap)
    assert json.loads(cases["test_cone_final[image]"]["mmdiag.params"]) == {"modality": "image"}


def test_markdown_verdict_to_a_file_and_to_the_github_step_summary(pytester, monkeypatch):
    summary = pytester.path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest(*TINY, "-k", "cone_final or gap_norm", "--mm-markdown=verdict.md")
    text = (pytester.path / "verdict.md").read_text()
    assert text.startswith("## ") and "mmdiag: FAIL" in text and "random:tiny-clip" in text
    assert "### Needs attention" in text and "`cone.final`" in text and "### By family" in text
    assert summary.read_text() == "earlier step\n"  # an explicit path wins over the step summary
    pytester.runpytest(*TINY, "-k", "gap_norm")
    appended = summary.read_text()
    assert appended.startswith("earlier step\n") and ("mmdiag: PASS" in appended or "mmdiag: WARN" in appended)
    assert result.ret == 1


def test_a_diagnostic_run_writes_its_reports_by_default(pytester):
    result = pytester.runpytest(*TINY, "-k", "gap_norm or rankme")
    doc = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert (pytester.path / "reports" / "report.html").is_file()
    result.stdout.fnmatch_lines(["mmdiag: wrote */reports/results.json", "mmdiag: wrote */reports/report.html"])
    statuses = {r["check"]: r["status"] for r in doc["results"]}
    assert statuses["geometry.rankme"] == "info"  # no threshold: reported, not a green pass
    result.stdout.fnmatch_lines(["*gated results*info (no threshold)*"])


def _mmdiag(pytester, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mmdiag.cli", *args], cwd=pytester.path, capture_output=True,
                          text=True, timeout=300)


def test_the_console_script_is_pytest_in_the_current_directory(pytester):
    pytester.makepyprojecttoml('[tool.mmdiag.thresholds]\n"gap.norm" = "<:0.001"\n')
    common = ("random:tiny-clip", "--mm-samples=10", "--mm-no-cache", "--color=no")
    first = _mmdiag(pytester, *common, "-k", "gap_norm or cone_final")
    assert first.returncode == 1, first.stdout[-2000:]  # the project's own threshold applies
    assert "gap.norm=" in first.stdout and "breaches < 0.001 (fail)" in first.stdout
    again = _mmdiag(pytester, *common, "--lf")  # pytest's cache works: only the failed checks run again
    assert again.returncode == 1 and "test_gap_norm" in again.stdout and "test_cone_layer" not in again.stdout
    assert "run-last-failure" in again.stdout or "rerun previous" in again.stdout
    version = _mmdiag(pytester, "--version")
    assert version.returncode == 0 and version.stdout.startswith("mmdiag ")


@pytest.mark.slow
def test_under_xdist_a_refusal_fails_every_check_instead_of_crashing_the_run(pytester):
    pytest.importorskip("xdist")
    typo = pytester.runpytest(*TINY, "-n", "2", "--mm-threshold=gap.nrom=<:1")
    _one_line_usage_error(typo, "*unknown check 'gap.nrom'*")  # built-in names: refused before collection
    result = pytester.runpytest(*TINY, "-n", "2", "-k", "gap_norm or cone_final",
                                "--mm-threshold=cone.layer[imgae-L01]=<:0.5")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*cone.layer has no parametrisation 'imgae-L01'*"])
    assert "INTERNALERROR" not in result.stdout.str()


@pytest.mark.slow
def test_junit_properties_under_xdist(pytester):
    pytest.importorskip("xdist")
    pytester.runpytest(*TINY, "-n", "2", "-k", "gap_norm or cone_final", "--junitxml=junit.xml")
    root = ET.parse(pytester.path / "junit.xml").getroot()
    checks = sorted(p.get("value") for p in root.iter("property") if p.get("name") == "mmdiag.check")
    assert checks == ["cone.final", "cone.final", "gap.norm"]
    values = [p.get("value") for p in root.iter("property") if p.get("name") == "mmdiag.ci_low"]
    assert all(float(v) > 0 for v in values)  # the worker's intervals reach the controller's XML


def test_a_breach_within_the_noise_is_inconclusive_not_a_failure(pytester):
    pytester.runpytest(*TINY, "-k", "gap_norm", "--mm-json=first.json")
    (first,) = json.loads((pytester.path / "first.json").read_text())["results"]
    assert first["ci"]["method"] == "bootstrap-percentile" and first["se"] > 0
    assert first["ci"]["low"] <= first["value"] <= first["ci"]["high"]
    just_below = f"--mm-threshold=gap.norm=<=:{first['value'] - first['se'] / 4:.6f}"
    by_interval = pytester.runpytest(*TINY, "-k", "gap_norm", just_below, "--mm-json=ci.json")
    (judged,) = json.loads((pytester.path / "ci.json").read_text())["results"]
    assert by_interval.ret == 0 and judged["status"] == "warn"
    assert judged["message"].startswith("inconclusive: gap.norm=") and "samples would decide it" in judged["message"]
    by_value = pytester.runpytest(*TINY, "-k", "gap_norm", just_below, "--mm-gate=value")
    assert by_value.ret == 1
    off = pytester.runpytest(*TINY, "-k", "gap_norm", "--mm-bootstrap=0", "--mm-json=off.json")
    (plain,) = json.loads((pytester.path / "off.json").read_text())["results"]
    assert off.ret == 0 and plain["ci"]["method"] == "none" and plain["se"] is None
