"""The noise-aware baseline comparison: p-values, Holm / BH (hand-computed references), judge()."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from mmdiag.uncertainty.regression import (Comparand, Verdict, benjamini_hochberg, holm, judge,
                                           regression_p_value, samples_to_decide, tolerance_for,
                                           worse_change)


def test_worse_change_follows_the_direction():
    assert worse_change(0.6, 0.5, +1) == pytest.approx(0.1)
    assert worse_change(0.6, 0.5, -1) == pytest.approx(-0.1)
    assert worse_change(0.4, 0.5, 0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        worse_change(1, 0, 2)


def test_tolerance_text():
    assert tolerance_for(-0.8, "5%") == pytest.approx(0.04)          # relative to |base|
    assert tolerance_for(0.01, "5%") == 1e-3                          # the floor
    assert tolerance_for(0.01, "5%", floor=0) == pytest.approx(5e-4)
    assert tolerance_for(0.0, " 2.5 % ") == 1e-3
    assert tolerance_for(123.0, "0.02") == 0.02 and tolerance_for(0.0, "1e-4") == 1e-4   # absolute: no floor
    for bad in ["", "-5%", "five", "5%%", "0.02x"]:
        with pytest.raises(ValueError):
            tolerance_for(1.0, bad)
    with pytest.raises(ValueError):
        tolerance_for(1.0, "5%", floor=-1)


def test_one_sided_p_value_is_the_normal_tail_beyond_the_tolerance():
    s = math.hypot(0.01, 0.02)
    for direction, value in [(+1, 0.93), (-1, 0.77)]:
        p = regression_p_value(value, 0.01, 0.85, 0.02, 0.03, direction)
        assert p == pytest.approx(norm.sf((0.08 - 0.03) / s))
    # better than the baseline: nowhere near a regression
    assert regression_p_value(0.80, 0.01, 0.85, 0.02, 0.03, +1) == pytest.approx(norm.sf((-0.05 - 0.03) / s))


def test_two_sided_p_value_for_checks_without_a_direction():
    s = 0.02
    for value in (0.95, 0.75):
        p = regression_p_value(value, s, 0.85, None, 0.0, 0)
        assert p == pytest.approx(2 * norm.sf(0.1 / s))               # the usual two-sided test at τ = 0
    p = regression_p_value(0.95, s, 0.85, 0.0, 0.03, 0)
    # worst case |Δ| = τ of a folded normal: P(D >= 0.1) + P(D <= -0.1), D ~ N(0.03, s²)
    assert p == pytest.approx(norm.sf(0.1, loc=0.03, scale=s) + norm.cdf(-0.1, loc=0.03, scale=s))


def test_deterministic_decision_without_standard_errors():
    for se, base_se in [(None, None), (0.0, 0.0), (float("nan"), None)]:
        assert regression_p_value(0.9, se, 0.8, base_se, 0.05, +1) == 0.0
        assert regression_p_value(0.84, se, 0.8, base_se, 0.05, +1) == 1.0
        assert regression_p_value(0.85, se, 0.8, base_se, 0.05, +1) == 1.0   # exactly at the tolerance: allowed
    assert math.isnan(regression_p_value(float("nan"), 0.1, 0.8, 0.1, 0.05, +1))
    with pytest.raises(ValueError):
        regression_p_value(0.9, 0.1, 0.8, 0.1, -0.05, +1)


def test_the_test_has_its_level_at_the_boundary_of_h0():
    """Simulated: true worsening exactly τ, estimates with known se -> rejection rate ≈ α (one-sided)."""
    rng = np.random.default_rng(0)
    tau, se, base_se = 0.02, 0.01, 0.015
    values = 0.5 + tau + rng.normal(0, se, 4000)
    bases = 0.5 + rng.normal(0, base_se, 4000)
    p = np.array([regression_p_value(v, se, b, base_se, tau, +1) for v, b in zip(values, bases)])
    assert 0.04 <= (p <= 0.05).mean() <= 0.06


# Hand-computed references (no statsmodels):
# p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216], m = 10, α = 0.05.
# Holm thresholds α/(m-k+1): 0.005, 0.00556, 0.00625, ... -> p_(1)=0.001 <= 0.005 reject; p_(2)=0.008 > 0.00556 stop.
# BH thresholds kα/m: 0.005, 0.01, 0.015, 0.02, 0.025, ... -> largest k with p_(k) <= kα/m is k=2 (0.008 <= 0.01;
# 0.039 > 0.015, 0.041 > 0.02, 0.042 > 0.025, 0.06 > 0.03, ..., 0.216 > 0.05).
P10 = [0.216, 0.001, 0.041, 0.008, 0.205, 0.039, 0.06, 0.042, 0.074, 0.212]


def test_holm_hand_computed():
    assert holm(P10, 0.05) == [p == 0.001 for p in P10]
    # m = 4, α = 0.05: thresholds 0.0125, 0.01667, 0.025, 0.05: 0.01, 0.015, 0.02 rejected, 0.3 not
    assert holm([0.02, 0.3, 0.01, 0.015], 0.05) == [True, False, True, True]
    # step-down stops at the first failure even if a later p would pass its own threshold
    assert holm([0.04, 0.04], 0.05) == [False, False]
    assert holm([], 0.05) == []


def test_bh_hand_computed():
    assert benjamini_hochberg(P10, 0.05) == [p in (0.001, 0.008) for p in P10]
    # step-up: 0.04, 0.04 at m=2: k=2 since 0.04 <= 2*0.05/2
    assert benjamini_hochberg([0.04, 0.04], 0.05) == [True, True]
    # m = 5: sorted 0.01, 0.02, 0.035, 0.045, 0.3 vs 0.01, 0.02, 0.03, 0.04, 0.05 -> k = 2
    assert benjamini_hochberg([0.3, 0.035, 0.01, 0.045, 0.02], 0.05) == [False, False, True, False, True]


def test_nan_p_values_count_in_the_family_and_are_never_rejected():
    assert holm([0.02, float("nan")], 0.05) == [True, False]           # 0.02 <= 0.05/2
    assert holm([0.03, float("nan")], 0.05) == [False, False]
    assert benjamini_hochberg([float("nan"), 0.0], 0.05) == [False, True]


p_lists = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=0, max_size=60)


@settings(max_examples=200, deadline=None)
@given(p_lists, st.floats(0.001, 0.5))
@example([0.0] * 6 + [0.3709543230614807], 0.3709543230614807)  # k·α/m rounded below α at k = m once
def test_holm_never_rejects_more_than_unadjusted_and_bh_at_least_as_many_as_holm(p, alpha):
    h, b = holm(p, alpha), benjamini_hochberg(p, alpha)
    raw = [x <= alpha for x in p]
    assert all(r or not x for x, r in zip(h, raw))            # Holm ⊆ unadjusted
    assert all(y or not x for x, y in zip(h, b))               # Holm ⊆ BH
    assert all(x <= alpha for x, y in zip(p, b) if y)          # BH rejects only p <= α
    if p:
        bonf = [x <= alpha / len(p) for x in p]
        assert all(x or not y for x, y in zip(h, bonf))        # Bonferroni ⊆ Holm


def test_holm_controls_the_familywise_error_rate_under_the_null():
    rng = np.random.default_rng(1)
    false_alarm = sum(any(holm(rng.uniform(size=150), 0.05)) for _ in range(2000)) / 2000
    raw = sum(any(rng.uniform(size=150) <= 0.05) for _ in range(200)) / 200
    assert false_alarm <= 0.065 and raw == 1.0


def test_judge_flags_a_real_regression_and_not_noise():
    results = [
        Comparand("cone.layer", {"modality": "image", "layer": "L11"}, 0.90, 0.005, 0.80, 0.005, +1, "5%"),
        Comparand("gap.norm", {}, 0.85, 0.05, 0.80, 0.05, +1, "5%"),           # beyond 5% but within noise
        Comparand("probe.uuas", {}, 0.50, 0.01, 0.55, 0.01, -1, "0.01"),      # worse (smaller is worse)
        Comparand("attn.share", {}, 0.30, 0.001, 0.40, 0.001, 0, "0.02"),     # no direction: changed
        Comparand("cone.layer", {"layer": "L1"}, 0.5, None, 0.5, None, +1, "5%"),
        Comparand("x.y", {}, 0.5, 0.1, None, None, +1, "5%"),                 # no baseline
        Comparand("x.z", {}, 0.5, 0.1, 0.1, 0.1, +1, None),                   # no rule
    ]
    v = judge(results, alpha=0.05)
    assert [x.regressed for x in v] == [True, False, True, False, False, False, False]
    assert [x.changed for x in v] == [True, False, True, True, False, False, False]
    assert v[0].message.startswith("cone.layer[image-L11] regressed vs baseline") and "Holm over 5" in v[0].message
    assert "within noise" in v[1].message and v[1].worse_by > v[1].tolerance
    assert v[3].message.startswith("attn.share changed vs baseline")
    assert v[4].message == "" and v[4].p_value == 1.0
    assert math.isnan(v[5].p_value) and math.isnan(v[6].p_value) and v[6].message == ""
    assert v[0].tolerance == pytest.approx(0.04) and v[0].worse_by == pytest.approx(0.10)
    assert isinstance(v[0], Verdict)


def test_judge_correction_changes_the_decision_on_a_borderline_family():
    # 20 results each one-sided p ≈ 0.01: unadjusted rejects all, Holm none (0.01 > 0.05/20), BH all (0.01 <= 0.05)
    z = norm.isf(0.01)
    fam = [Comparand(f"c.r{i}", {}, 0.5 + 0.01 + z * 0.01, 0.01, 0.5, 0.0, +1, "0.01") for i in range(20)]
    assert all(v.regressed for v in judge(fam, correction="none"))
    assert not any(v.regressed for v in judge(fam))
    assert all(v.regressed for v in judge(fam, correction="bh"))
    with pytest.raises(ValueError):
        judge(fam, correction="sidak")
    with pytest.raises(ValueError):
        judge(fam, alpha=0)


def test_samples_to_decide():
    # 0.52 ± 1.96·0.02 straddles 0.5; need 1.96·0.02·sqrt(500/N) <= 0.02 -> N >= 500·1.96² = 1920.7
    assert samples_to_decide(0.52, 0.02, 500, 0.5) == 1921
    assert samples_to_decide(0.60, 0.02, 500, 0.5) <= 500                   # already decided
    assert samples_to_decide(0.5, 0.02, 500, 0.5) is None
    assert samples_to_decide(0.52, None, 500, 0.5) is None
    assert samples_to_decide(0.52, 0.02, 500, 0.5, level=0.99) == math.ceil(500 * (norm.isf(0.005)) ** 2)
