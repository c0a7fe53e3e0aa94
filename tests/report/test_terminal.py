"""The rich summary table: exact plain-text output, colour only when asked."""
from mmdiag.report.terminal import render
from mmdiag.thresholds import Result, Threshold

RESULTS = [
    Result("gap.norm", {}, 0.82, "pass", Threshold("<=", 1.19, "warn")),
    Result("cone.layer", {"modality": "image", "layer": 7}, 0.991, "warn", Threshold("<", 0.99, "warn")),
    Result("cone.final", {"modality": "text"}, None, "skip", Threshold("<", 0.95, "fail")),
]


def test_plain_table_is_exact():
    text = render(RESULTS, "mmdiag · m", width=80, color=False)
    lines = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    assert lines == (
        "mmdiag · m\n"
        "┏━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━┓\n"
        "┃ check      ┃ params    ┃ value ┃ threshold      ┃ status ┃\n"
        "┡━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━┩\n"
        "│ cone.final │ text      │     - │ < 0.95 (fail)  │ skip   │\n"
        "│ cone.layer │ image-L07 │ 0.991 │ < 0.99 (warn)  │ warn   │\n"
        "├────────────┼───────────┼───────┼────────────────┼────────┤\n"
        "│ gap.norm   │           │  0.82 │ <= 1.19 (warn) │ pass   │\n"
        "└────────────┴───────────┴───────┴────────────────┴────────┘\n"
        "No failures; 1 of 2 gated results warn; 1 skipped.  (1 warn, 1 pass, 1 skip)\n"
    )
    assert "\x1b[" not in text


def test_colour_marks_statuses():
    text = render(RESULTS, "t", width=80, color=True)
    assert "\x1b[" in text and "warn" in text


def test_baseline_column_shows_signed_deltas():
    result = Result("gap.norm", {}, 0.9, "pass", None, baseline={"value": 0.8, "delta": 0.1})
    text = render([result], "t", width=100, color=False, with_deltas=True)
    assert "Δ baseline" in text and "+0.1" in text
