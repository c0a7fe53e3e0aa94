"""The size list and the fitted exponent of ``python -m mmdiag.bench --scaling`` (figures, never timings)."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from mmdiag.devtools.bench.cli import build_parser
from mmdiag.devtools.bench.scaling import exponent, parse_sizes, scaling_table


def test_sizes_read_k_as_1024_after_a_power_of_two_and_1000_otherwise():
    assert parse_sizes("256,1k,4k,16k") == (256, 1024, 4096, 16384)
    assert parse_sizes("4000, 40k") == (4000, 40000)
    for bad in ("", "1", "x", "2,-4"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


@settings(max_examples=30, deadline=None)
@given(a=st.floats(0.3, 2.5), c=st.floats(0.01, 100.0))
def test_exponent_recovers_a_power_law(a, c):
    ns = [256, 1024, 4096, 16384]
    assert exponent(ns, [c * n ** a for n in ns]) == pytest.approx(a, abs=1e-9)


def test_exponent_needs_two_usable_points():
    assert exponent([256], [1.0]) is None and exponent([256, 1024], [1.0, None]) is None


def test_cli_takes_the_sizes_and_the_table_prints_the_exponent():
    args = build_parser().parse_args(["--scaling", "--scaling-n", "256,1k"])
    assert args.scaling and args.scaling_n == (256, 1024) and args.model is None
    doc = {"rows": [{"n": n, "suite_s": s, "mm_forward_s": 0.1, "checks_s": {"gap": s / 2}, "peak_rss_mb": 400.0}
                    for n, s in ((256, 10.0), (1024, 40.0))],
           "exponent": 1.0, "exponent_last": 1.0, "family_exponents": {"gap": 1.0}, "rss_exponent": 0.0}
    labels = [row[0] for row in scaling_table(doc)]
    assert labels[:2] == ["N=256", "N=1024"] and "exponent (all N)" in labels and "  gap" in labels
    assert math.isclose(exponent([256, 1024], [10.0, 40.0]), 1.0)
