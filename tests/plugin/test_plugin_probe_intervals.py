"""The probe checks carry bootstrap intervals over test sentences in results.json (pytester, tiny preset)."""
import json

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=40", "--mm-batch-size=20", "-p", "no:cacheprovider",
       "--mm-no-cache", "--color=no", "-k", "probe_distance or probe_selectivity or probe_scene", "--mm-json=out.json")


def _results(pytester, *extra):
    pytester.runpytest(*RUN, *extra)
    doc = json.loads((pytester.path / "out.json").read_text())
    return [r for r in doc["results"] if r["check"].startswith("probe.") and r["value"] is not None]


def test_probe_results_have_sentence_bootstrap_intervals(pytester):
    results = _results(pytester, "--mm-bootstrap=50")
    distance = [r for r in results if r["check"] == "probe.distance"]
    assert distance, [r["check"] for r in results]
    for r in distance:
        assert r["ci"]["method"].startswith("bootstrap") and r["se"] is not None and r["se"] >= 0, r
        assert r["ci"]["low"] <= r["ci"]["high"] and r["ci"]["level"] == 0.95
        assert r["details"]["uuas_ci"]["method"].startswith("bootstrap")
    differences = [r for r in results if r["check"] in ("probe.selectivity", "probe.scene_vs_raw")]
    assert {r["check"] for r in differences} == {"probe.selectivity", "probe.scene_vs_raw"}
    for r in differences:  # paired difference intervals
        assert r["ci"]["method"].startswith("bootstrap") and r["se"] is not None, r


def test_without_bootstrap_probe_results_have_no_interval(pytester):
    for r in _results(pytester, "--mm-bootstrap=0"):
        assert r["ci"]["method"] == "none" and r["se"] is None, r
        assert "uuas_ci" not in r["details"]
