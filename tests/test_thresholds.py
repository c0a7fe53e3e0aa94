"""Thresholds: parsing, precedence, and judging a value with its interval."""
import math

import pytest
from hypothesis import given, strategies as st

from mmdiag.errors import SpecError
from mmdiag.thresholds import Threshold, Thresholds, evaluate, judge, parse_override

LE = Threshold("<=", 1.0, "fail")


def test_a_value_without_a_threshold_is_info():
    assert evaluate(0.3, None) == "info"
    assert evaluate(None, None) == "error" and evaluate(float("nan"), None) == "fail"


@pytest.mark.parametrize("value,low,high,expected", [
    (0.9, 0.8, 1.0, ("pass", False)),     # within the threshold
    (1.2, 1.1, 1.3, ("fail", False)),     # the whole interval breaches
    (1.2, 0.9, 1.5, ("warn", True)),      # the value breaches, the interval straddles: inconclusive
    (1.2, None, None, ("fail", False)),   # no interval: the value alone decides
    (0.9, 0.5, 1.4, ("pass", False)),     # a value inside passes even if the interval reaches beyond
])
def test_judge_by_the_interval(value, low, high, expected):
    assert judge(value, LE, low, high) == expected


def test_judge_keeps_a_warn_level():
    assert judge(1.2, Threshold("<=", 1.0, "warn"), 1.1, 1.3) == ("warn", False)


@given(st.floats(-5, 5), st.floats(0, 2), st.floats(0, 2))
def test_judge_never_fails_what_the_interval_does_not_exclude(value, below, above):
    low, high = value - below, value + above
    status, inconclusive = judge(value, LE, low, high)
    if status == "fail":
        assert low > 1.0 and not inconclusive
    if inconclusive:
        assert status == "warn" and low <= 1.0 < value


@pytest.mark.parametrize("text", ["gap.norm=<:nan", "gap.norm=<:inf", "gap.norm=<:-inf"])
def test_non_finite_thresholds_are_refused(text):
    with pytest.raises(SpecError, match="finite number"):
        parse_override(text)


def test_precedence_overrides_then_the_spec_default():
    defaults = {"gap.norm": Threshold("<=", 1.19, "warn")}.get
    table = Thresholds([dict([parse_override("gap.norm=<:0.9")]),
                        dict([parse_override("cone.layer[image-L01]=<:0.5:warn")])], defaults)
    assert table.lookup("gap.norm", {}).value == 0.9
    assert table.lookup("cone.layer", {"modality": "image", "layer": 1}).level == "warn"
    assert table.lookup("cone.layer", {"modality": "image", "layer": 2}) is None
    assert Thresholds([], defaults).lookup("gap.norm", {}).value == 1.19
    assert [name for _, name in table.unknown_checks(lambda c: c == "gap.norm")] == ["cone.layer"]
    assert not math.isnan(table.lookup("gap.norm", {}).value)
