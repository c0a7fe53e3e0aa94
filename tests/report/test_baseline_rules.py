"""--mm-compare-fail rules: parsing, the most specific rule, the absolute floor, and the noise-aware auto."""
import math
from pathlib import Path

import pytest

from mmdiag.checkspec import CheckSpec
from mmdiag.errors import SpecError
from mmdiag.report.baseline import ALPHA, Baseline, Comparison, parse_rule, result_key
from mmdiag.uncertainty.interval import Interval

LOWER_BETTER = CheckSpec("mine.gap", higher_is_better=False, tolerance="5%")
ANY_CHANGE = CheckSpec("mine.shift", higher_is_better=None, tolerance="0.05")
PROBE = CheckSpec("mine.probe", higher_is_better=True, uncertainty="sentences")
SPECS = {s.name: s for s in (LOWER_BETTER, ANY_CHANGE, PROBE)}


def _comparison(rows, rules, extra=0):
    table = {result_key(check, params): {"check": check, "params": params, "value": value, "se": se}
             for check, params, value, se in rows}
    for i in range(extra):  # other compared results: m grows, the per-result alpha shrinks
        table[f"other{i}"] = {"check": "x.y", "params": {}, "value": 1.0, "se": 0.1}
    return Comparison(Baseline(Path("base.json"), table, {}, {}), [parse_rule(r) for r in rules], SPECS.get)


def test_rules_parse_auto_params_and_tolerances():
    assert parse_rule("auto").auto and parse_rule("auto").check == "*"
    rule = parse_rule("cone.layer[image-L11]:0.02")
    assert (rule.check, rule.params, rule.amount, rule.relative) == ("cone.layer", "image-L11", 0.02, False)
    assert parse_rule("gap.norm:auto").auto
    with pytest.raises(SpecError, match="expected CHECK:TOL"):
        parse_rule("gap.norm")


def test_the_most_specific_rule_wins():
    comparison = _comparison([], ["*:5%", "cone.layer:0.1", "cone.layer[image-L11]:0.02"])
    assert comparison.rule_for("cone.layer", {"modality": "image", "layer": 11}).amount == 0.02
    assert comparison.rule_for("cone.layer", {"modality": "text", "layer": 11}).amount == 0.1
    assert comparison.rule_for("gap.norm", {}).amount == 5


def test_a_near_zero_baseline_gets_an_absolute_floor():
    comparison = _comparison([("mine.gap", {}, 0.0, None)], ["*:5%"])
    assert comparison.compare("mine.gap", {}, 0.0005, None)[1] is None  # 5% of 0 would allow nothing
    assert "regressed" in comparison.compare("mine.gap", {}, 0.01, None)[1]


def test_auto_flags_a_change_beyond_tolerance_and_noise_only():
    comparison = _comparison([("mine.gap", {}, 1.0, 0.01)], ["auto"], extra=99)
    info, clean = comparison.compare("mine.gap", {}, 1.03, None, se=0.01)  # +3% < 5% tolerance
    assert clean is None and info["p_value"] > 0.5 and info["alpha"] == pytest.approx(ALPHA / 100)
    _, noisy = comparison.compare("mine.gap", {}, 1.09, None, se=0.05)  # beyond 5%, but within the noise
    assert noisy is None
    _, real = comparison.compare("mine.gap", {}, 1.2, None, se=0.01)
    assert real.startswith("mine.gap regressed vs baseline")
    _, better = comparison.compare("mine.gap", {}, 0.7, None, se=0.01)  # lower is better: not a regression
    assert better is None


def test_auto_says_changed_for_a_two_sided_check():
    comparison = _comparison([("mine.shift", {}, 0.0, 0.01)], ["auto"])
    _, moved = comparison.compare("mine.shift", {}, -0.3, None, se=0.01)
    assert moved.startswith("mine.shift changed vs baseline")


def test_auto_does_not_gate_what_it_cannot_tell_from_noise():
    comparison = _comparison([("mine.gap", {}, 1.0, None), ("mine.probe", {}, 0.8, 0.01)], ["auto"])
    info, verdict = comparison.compare("mine.gap", {}, 2.0, None, se=None)  # no se on either side
    assert verdict is None and "no uncertainty estimate" in info["not_gated"]
    info, verdict = comparison.compare("mine.probe", {}, 0.1, None, se=0.01)  # covers sentences, not training
    assert verdict is None and "covers sentences only" in info["not_gated"]
    assert comparison.compare("mine.probe", {}, 0.1, None)[0]["delta"] == pytest.approx(-0.7)


def test_a_centred_interval_holds_the_value():
    biased = Interval(8.4, 9.2, 0.2, 0.95, "bootstrap-percentile", 200)
    centred = biased.centred(9.4)
    assert centred.contains(9.4) and centred.method == "bootstrap-normal" and centred.se == 0.2
    assert centred.high - centred.low == pytest.approx(2 * 1.959964 * 0.2, rel=1e-5)
    assert math.isnan(biased.centred(float("nan")).low)
