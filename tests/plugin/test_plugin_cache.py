"""The activation cache, the progress line and pytest-xdist."""
import json

import pytest

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=4", "-p", "no:cacheprovider",
       "-k", "gap or cone_final", "--mm-threshold=cone.final=<=:1")  # 7 pass (gap.* and cone.final), 1 skips


def _values(path):
    doc = json.loads(path.read_text())
    return {(r["check"], json.dumps(r["params"], sort_keys=True)): r["value"] for r in doc["results"]}, doc


def test_second_run_reads_the_cache_and_gives_identical_results(pytester):
    pytester.runpytest(*RUN, "--mm-json=a.json").assert_outcomes(passed=7, skipped=1)
    pytester.runpytest(*RUN, "--mm-json=b.json").assert_outcomes(passed=7, skipped=1)
    a, doc_a = _values(pytester.path / "a.json")
    b, doc_b = _values(pytester.path / "b.json")
    assert a == b
    assert doc_a["run"]["timings"]["cache"] == "miss (written)" and doc_b["run"]["timings"]["cache"] == "hit"
    files = sorted(p.name for p in (pytester.path / ".mmdiag_cache").iterdir())
    assert any(f.endswith(".safetensors") for f in files) and not any(f.endswith(".tmp") for f in files)


def test_corrupt_cache_entries_are_rebuilt(pytester):
    pytester.runpytest(*RUN, "--mm-json=a.json")
    for entry in (pytester.path / ".mmdiag_cache").glob("*.safetensors"):
        entry.write_bytes(b"not a safetensors file")
    pytester.runpytest(*RUN, "--mm-json=b.json").assert_outcomes(passed=7, skipped=1)
    a, _ = _values(pytester.path / "a.json")
    b, doc_b = _values(pytester.path / "b.json")
    assert a == b and doc_b["run"]["timings"]["cache"] == "miss (written)"


def test_no_cache_leaves_no_files(pytester):
    pytester.runpytest(*RUN, "--mm-no-cache").assert_outcomes(passed=7, skipped=1)
    assert not (pytester.path / ".mmdiag_cache").exists()


def test_other_options_that_change_activations_miss_the_cache(pytester):
    pytester.runpytest(*RUN, "--mm-json=a.json")
    pytester.runpytest(*RUN, "--mm-seed=1", "--mm-json=b.json")
    _, doc_b = _values(pytester.path / "b.json")
    assert doc_b["run"]["timings"]["cache"] == "miss (written)"


def test_progress_is_printed_past_capture_in_a_ci_log(pytester):
    result = pytester.runpytest(*RUN, "--mm-no-cache")
    result.stdout.fnmatch_lines(["mmdiag: forward pass 4/8 samples", "mmdiag: forward pass 8/8 samples"])


def test_quiet_run_shows_no_progress(pytester):
    result = pytester.runpytest(*RUN, "--mm-no-cache", "-q")
    assert "forward pass" not in result.stdout.str()


@pytest.mark.slow
def test_xdist_gives_the_same_results_as_a_serial_run(pytester):
    pytest.importorskip("xdist")
    serial = pytester.runpytest_subprocess(*RUN, "--mm-json=serial.json", "--mm-no-cache")
    parallel = pytester.runpytest_subprocess(*RUN, "-n", "2", "--mm-json=parallel.json")
    assert serial.ret == parallel.ret == 0, parallel.stdout.str()
    a, _ = _values(pytester.path / "serial.json")
    b, doc = _values(pytester.path / "parallel.json")
    assert a == b
    assert "gap.shift" in doc["series"] and "hidden_2d" in doc["series"]
    assert "mmdiag summary" in parallel.stdout.str()
