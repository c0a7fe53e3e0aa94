"""End-to-end runs of the plugin through pytester (in-process, tiny presets)."""
import json

import pytest

FAST = ("--mm-samples=12", "--mm-batch-size=6", "-p", "no:cacheprovider")


def test_builtin_checks_run_in_an_empty_directory(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "--mm-json=out.json", "--color=no")
    out = result.stdout.str()
    assert "mmdiag summary" in out
    assert "cone.final" in out and "gap.norm" in out
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["schema"] == "mmdiag/1"
    assert doc["model"]["spec"] == "random:tiny-clip" and doc["model"]["family"] == "clip"
    assert doc["model"]["n_params"] > 0 and doc["model"]["fingerprint"]
    assert doc["data"] == {**doc["data"], "spec": "synthetic", "n": 12}
    checks = {r["check"] for r in doc["results"]}
    assert {"cone.final", "cone.layer", "gap.norm", "geometry.rankme"} <= checks
    for r in doc["results"]:
        assert set(r) >= {"check", "params", "value", "status", "threshold", "details"}
        assert r["status"] in {"pass", "warn", "fail", "info", "skip", "error"}
    layers = [r["params"]["layer"] for r in doc["results"] if r["check"] == "cone.layer"
              and r["params"]["modality"] == "image"]
    assert layers == [0, 1, 2, 3]
    # a random-init tiny CLIP collapses its image embeddings: the fail-level cone check says so
    final_image = next(r for r in doc["results"] if r["check"] == "cone.final" and r["params"]["modality"] == "image")
    assert (final_image["status"] == "fail") == (result.ret == 1)


def test_threshold_override_turns_a_failure_into_a_pass(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "--mm-threshold=cone.final=<=:1.0",
                                "-k", "cone_final")
    result.assert_outcomes(passed=2)
    assert result.ret == 0


def test_warn_level_breach_passes_with_a_warning(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "--mm-threshold=gap.norm=<:0.01:warn",
                                "-k", "gap_norm")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*MMDiagWarning: gap.norm=* breaches < 0.01 (warn)*"])


def test_fail_level_breach_fails_the_test(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "--mm-threshold=gap.norm=<:0.01",
                                "-k", "gap_norm")
    result.assert_outcomes(failed=1)
    assert result.ret == 1


def test_per_param_threshold_applies_to_that_param_only(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "-k", "cone_layer and text",
                                "--mm-threshold=cone.layer[text-L02]=<:0.0001")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_cone_layer?text-L02?*"])


def test_ids_select_naturally_with_k(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "--collect-only", "-q", "-k", "image-L01")
    out = result.stdout.str()
    assert "test_cone_layer[image-L01]" in out and "test_rankme[image-L01]" in out
    assert "text-L01" not in out


def test_ini_twins_configure_the_run(pytester):
    pytester.makeini("""
        [pytest]
        mm_model = random:tiny-clip
        mm_samples = 10
        mm_batch_size = 5
        mm_checks = true
        mm_thresholds =
            cone.final=<=:1.0
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mm-json=o.json", "-k", "cone_final or gap_norm")
    assert result.ret == 0, result.stdout.str()
    doc = json.loads((pytester.path / "o.json").read_text())
    assert doc["data"]["n"] == 10 and doc["run"]["batch_size"] == 5
    assert all(r["threshold"]["value"] == 1.0 for r in doc["results"] if r["check"] == "cone.final")


def test_command_line_beats_ini(pytester):
    pytester.makeini("""
        [pytest]
        mm_thresholds = gap.norm=<:0.01
    """)
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "-k", "gap_norm",
                                "--mm-threshold=gap.norm=<=:10")
    result.assert_outcomes(passed=1)


def test_pyproject_thresholds_are_read(pytester):
    pytester.makepyprojecttoml("""
        [tool.mmdiag.thresholds]
        "gap.norm" = "<:0.01"
    """)
    result = pytester.runpytest("--mm-model=random:tiny-clip", *FAST, "-k", "gap_norm")
    result.assert_outcomes(failed=1)


@pytest.mark.parametrize("preset,present,absent", [
    ("random:tiny-siglip", ["test_gap_norm", "test_cone_layer[image-L03]"], []),
    ("random:tiny-bert", ["test_cone_layer[text-L03]"], ["image-L"]),
])
def test_other_families_run(pytester, preset, present, absent):
    result = pytester.runpytest(f"--mm-model={preset}", *FAST, "-v", "--color=no",
                                "--mm-threshold=cone.final=<=:1.0", "--mm-threshold=cone.layer=<=:1.0")
    out = result.stdout.str()
    for name in present:
        assert name in out
    for name in absent:
        assert f"{name}" not in out.split("mmdiag summary")[0].replace("test_cone_layer[text", "")
    assert result.ret in (0, 1), out
    assert "error" not in [line.split()[-1] for line in out.splitlines() if line.startswith("│")]


def test_text_only_model_skips_image_checks_with_reason(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-bert", *FAST, "-rs", "-k", "gap_norm or cone_final")
    result.stdout.fnmatch_lines(["*SKIPPED*needs final embeddings of both modalities*"])


def test_long_lived_objects_are_frozen_during_the_run_and_thawed_after(pytester):
    """mmdiag.heap: the checks run with the startup objects out of the collector's way; an in-process run
    leaves the collector as it found it."""
    import gc

    seen = {}

    class Spy:
        def pytest_runtest_call(self, item):
            seen["during"] = gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    result = pytester.runpytest_inprocess("--mm-model=random:tiny-clip", *FAST, "-k", "gap_norm", plugins=[Spy()])
    result.assert_outcomes(passed=1)
    assert seen["during"] > 10_000
    assert gc.get_freeze_count() == 0
