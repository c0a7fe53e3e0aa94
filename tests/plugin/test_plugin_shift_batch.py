"""``--mm-shift-batch``: gap.shift_optimum scores its loss in batches (Liang et al.: 50) and records how."""
import json

import pytest

BASE = ("--mm-model=random:tiny-clip", "--mm-samples=40", "--mm-batch-size=20", "--mm-no-cache",
        "-p", "no:cacheprovider", "--color=no", "-k", "shift_optimum", "--mm-json=r.json")


def _shift_result(pytester):
    doc = json.loads((pytester.path / "r.json").read_text())
    found = [r for r in doc["results"] if r["check"] == "gap.shift_optimum"]
    assert len(found) == 1
    return found[0]


def test_default_is_the_papers_batch_of_50(pytester):
    result = pytester.runpytest(*BASE, "--mm-bootstrap=0")
    assert result.ret == 0
    r = _shift_result(pytester)
    # 40 pairs are fewer than one batch of 50: one batch of all of them
    assert r["details"]["batching"] == {"option": 50, "batch_size": 40, "batches": 1, "pairs_left_out": 0, "seed": 0}
    assert r["details"]["lambda_grid"] == [-1.0, 1.0]
    assert isinstance(r["details"]["at_grid_edge"], bool)
    assert r["details"]["at_grid_edge"] == (r["value"] in (-1.0, 1.0))
    assert ("edge of the λ grid" in r["message"]) == r["details"]["at_grid_edge"]


def test_batches_seed_and_bootstrap_interval(pytester):
    # a threshold makes the (expensive) bootstrap run: pairs are resampled, then batched afresh
    result = pytester.runpytest(*BASE, "--mm-shift-batch=16", "--mm-seed=3", "--mm-bootstrap=12",
                                "--mm-threshold=gap.shift_optimum=<=:5")
    assert result.ret == 0
    r = _shift_result(pytester)
    assert r["details"]["batching"] == {"option": 16, "batch_size": 16, "batches": 2, "pairs_left_out": 8, "seed": 3}
    assert r["ci"] is not None and r["ci"]["low"] <= r["ci"]["high"]
    assert -1.0 <= r["ci"]["low"] and r["ci"]["high"] <= 1.0
    assert r["se"] is not None


@pytest.mark.parametrize("value, expected", [
    ("1", "*--mm-shift-batch=1: a batch of one pair has no negatives*accepted: 0*at least 2*"),
    ("-2", "*--mm-shift-batch=-2 must be at least 0*"),
    ("fifty", "*--mm-shift-batch='fifty' is not an integer*"),
])
def test_bad_shift_batch_is_a_usage_error(pytester, value, expected):
    result = pytester.runpytest("--mm-model=random:tiny-clip", f"--mm-shift-batch={value}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
