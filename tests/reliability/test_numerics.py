"""Numerics: non-finite activations never pass a check; degenerate inputs give defined values."""
import json
import math
import re

import numpy as np
import pytest
import torch

from mmdiag.metrics.cone import cone_narrowing, mean_pairwise_cosine, to_rows
from mmdiag.metrics.gap import gap_l2i, gap_norm, modality_separability, relative_modality_gap
from mmdiag.metrics.geometry import alignment, linear_cka, mutual_knn, rankme, uniformity
from mmdiag.metrics.shift import shift_curve, symmetric_infonce

# -- non-finite activations end to end ----------------------------------------------------------------------------

NONFINITE = re.compile(r"NaN|non-finite|not finite|infinite", re.I)


def _toy_run(pytester, rel, **settings):
    pytester.makeconftest(rel.toy_conftest(**settings))
    result = pytester.runpytest(*rel.TOY_FAST, "--mm-no-cache", "--mm-report-dir=out",
                                "-k", "cone_layer or rankme or cone_final or gap_norm or uniformity")
    path = pytester.path / "out" / "results.json"
    doc = json.loads(path.read_text()) if path.exists() else None
    return result, doc


def _by_key(doc):
    return {(r["check"], r["params"].get("modality"), r["params"].get("layer")): r for r in doc["results"]}


@pytest.mark.parametrize("bad_value", ["float('nan')", "float('inf')"], ids=["nan", "inf"])
def test_nonfinite_layer_fails_its_checks_and_spares_the_rest(pytester, rel, bad_value):
    """Image layer 1 of 5 is NaN (or inf): its checks fail or error, never pass; other layers are untouched."""
    result, doc = _toy_run(pytester, rel, layers=5, claimed=5, bad_layer=1, bad_value=bad_value)
    output = result.stdout.str()
    assert doc is not None, output
    results = _by_key(doc)
    for check in ("cone.layer", "geometry.rankme"):
        broken = results[(check, "image", 1)]
        assert broken["status"] in ("fail", "error") and broken["value"] is None
        assert NONFINITE.search(broken["message"]), broken["message"]
    for layer in (0, 2, 3, 4):
        assert results[("geometry.rankme", "image", layer)]["status"] == "info"  # reported, not gated
    for layer in range(5):
        assert results[("geometry.rankme", "text", layer)]["status"] == "info"
        assert results[("cone.layer", "text", layer)]["value"] is not None
    assert results[("gap.norm", None, None)]["value"] is not None  # the final embeddings are finite
    assert not [r for r in doc["results"] if r["status"] == "pass" and r["value"] is None]
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_nonfinite_message_suggests_a_dtype_and_spares_other_layers(pytester, rel):
    result, doc = _toy_run(pytester, rel, layers=5, claimed=5, bad_layer=1)
    results = _by_key(doc)
    for check in ("cone.layer", "geometry.rankme"):
        message = results[(check, "image", 1)]["message"]
        assert "fp32" in message and "bf16" in message, message
    assert results[("cone.layer", "image", 0)]["status"] != "error"
    assert "Traceback" not in result.stdout.str() and "^^^^" not in result.stdout.str()


def test_nonfinite_final_layer_still_writes_the_reports(pytester, rel):
    result, doc = _toy_run(pytester, rel, layers=3, claimed=3, bad_layer=2)
    assert doc is not None and (pytester.path / "out" / "report.html").exists()
    results = _by_key(doc)
    for key in (("cone.final", "image", None), ("gap.norm", None, None), ("geometry.uniformity", "image", None)):
        assert results[key]["status"] in ("fail", "error")


def test_recorder_counts_nonfinite_values_per_layer(rel):
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.record import record

    namespace: dict = {}
    exec(rel.toy_conftest(layers=4, claimed=4, bad_layer=2, bad_value="float('inf')"), namespace)  # noqa: S102
    acts = record(namespace["ToyAdapter"](), make_synthetic(6, seed=0), 4)
    bad = {key: count for key, count in acts.nonfinite.items() if count}
    assert set(bad) == {("image", 2)} and bad[("image", 2)] == 2 * 6 * 8  # pooled + mean, 6 samples, 8 dims
    assert torch.isfinite(acts.embeds["text"]).all()


def test_nonfinite_metric_input_is_refused_with_a_clear_error():
    x = np.ones((4, 3))
    x[1, 2] = np.nan
    for metric in (mean_pairwise_cosine, rankme, uniformity):
        with pytest.raises(ValueError, match="NaN or infinite"):
            metric(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        gap_norm(np.ones((4, 3)), np.full((4, 3), np.inf))


def test_report_of_a_nonfinite_value_fails_with_the_dtype_hint():
    from mmdiag.api import CheckContext
    from mmdiag.options import RunConfig
    from mmdiag.session import MMSession

    session = MMSession(RunConfig())
    ctx = CheckContext(session, adapter=None, check="geometry.rankme", params={"modality": "image", "layer": 1},
                       nodeid="x")
    with pytest.raises(pytest.fail.Exception):
        ctx.report(float("nan"))
    (result,) = session.results
    assert result.status == "fail" and "not finite" in result.message and "fp32" in result.message
    assert result.to_json()["value"] is None


# -- degenerate but finite inputs give defined values ---------------------------------------------------------

IDENTICAL = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]]), (6, 1))
ZEROS = np.zeros((6, 4))
ONE_HOT = np.eye(4)[[0, 0, 1, 1, 2, 3]]


def test_identical_embeddings():
    assert mean_pairwise_cosine(IDENTICAL) == pytest.approx(1.0)
    assert uniformity(IDENTICAL) == pytest.approx(0.0, abs=1e-12)  # log E exp(0) = 0: maximally non-uniform
    assert rankme(IDENTICAL) == pytest.approx(1.0, abs=1e-4)  # one non-zero singular value
    assert alignment(IDENTICAL, IDENTICAL) == pytest.approx(0.0, abs=1e-12)
    assert gap_norm(IDENTICAL, IDENTICAL) == pytest.approx(0.0, abs=1e-12)
    assert gap_l2i(IDENTICAL, IDENTICAL) == pytest.approx(0.0, abs=1e-12)
    assert linear_cka(IDENTICAL, ONE_HOT) == 0.0  # nothing left after centring: defined as 0
    value = mutual_knn(IDENTICAL, IDENTICAL, k=2)
    assert 0.0 <= value <= 1.0
    assert cone_narrowing([0.5, 0.5, 0.5]) == 0.0


def test_relative_gap_of_identical_modalities_is_zero():
    assert relative_modality_gap(IDENTICAL, IDENTICAL) == 0.0  # 0/0 defined as 0


def test_opposite_identical_modalities_have_the_largest_gap():
    assert gap_norm(IDENTICAL, -IDENTICAL) == pytest.approx(2.0)
    assert gap_l2i(IDENTICAL, -IDENTICAL) == pytest.approx(2.0)
    assert relative_modality_gap(IDENTICAL, -IDENTICAL) == pytest.approx(1.0)
    assert modality_separability(IDENTICAL, -IDENTICAL, folds=3) == pytest.approx(1.0)


def test_zero_vectors():
    assert mean_pairwise_cosine(ZEROS) == 0.0  # zero rows have no direction: cosine 0 by convention
    assert rankme(ZEROS) == 0.0
    assert uniformity(ZEROS) == pytest.approx(0.0, abs=1e-12)
    assert gap_norm(ZEROS, ZEROS) == 0.0 and gap_l2i(ZEROS, ZEROS) == 0.0
    assert linear_cka(ZEROS, ONE_HOT) == 0.0
    assert relative_modality_gap(ZEROS, ZEROS) == pytest.approx(0.5)  # every cosine is 0: d_m = d_ii = d_tt
    assert gap_norm(ZEROS, ONE_HOT) == pytest.approx(float(np.linalg.norm(ONE_HOT.mean(0))))
    half = np.vstack([ZEROS[:3], ONE_HOT[:3]])
    # 3 zero rows and 3 unit rows (two equal): only the equal unit pair counts, over 6*5 ordered pairs
    assert mean_pairwise_cosine(half) == pytest.approx(2 / 30)


def test_shift_curve_and_infonce_on_degenerate_inputs_are_finite():
    assert math.isfinite(symmetric_infonce(IDENTICAL, IDENTICAL, temperature=0.01))
    assert symmetric_infonce(IDENTICAL, IDENTICAL, temperature=0.01) == pytest.approx(math.log(6))  # all tied
    curve = shift_curve(ONE_HOT, ONE_HOT + 0.1, temperature=0.07)
    assert all(math.isfinite(v) for v in curve["loss"]) and math.isfinite(curve["optimum"])


def test_two_samples_are_enough_and_one_is_refused():
    two = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert mean_pairwise_cosine(two) == pytest.approx(0.0)
    assert uniformity(two) == pytest.approx(-4.0)  # ||a - b||^2 = 2, t = 2: log exp(-4)
    with pytest.raises(ValueError, match="n >= 2"):
        mean_pairwise_cosine(two[:1])
    with pytest.raises(ValueError, match="shape"):
        to_rows(np.ones(3))


def test_extreme_magnitudes_stay_finite():
    big = ONE_HOT * 1e150 + 1e140
    tiny = ONE_HOT * 1e-150
    for x in (big, tiny):
        assert math.isfinite(mean_pairwise_cosine(x)) and math.isfinite(uniformity(x))
        assert math.isfinite(rankme(x)) and 1.0 <= rankme(x) <= 4.0 + 1e-3
        assert math.isfinite(gap_norm(x, ONE_HOT)) and math.isfinite(linear_cka(x, ONE_HOT))
    assert rankme(tiny) == pytest.approx(rankme(ONE_HOT), rel=1e-6)  # scale invariant
    half = torch.tensor(ONE_HOT * 6e4, dtype=torch.float16)  # near fp16's maximum
    assert mean_pairwise_cosine(half) == pytest.approx(mean_pairwise_cosine(ONE_HOT))
