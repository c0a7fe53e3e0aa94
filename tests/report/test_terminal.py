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


# -- compact per-layer rows (--mm-table=compact, the default) -------------------------------------------------
import pytest  # noqa: E402
from hypothesis import given, strategies as st  # noqa: E402

from mmdiag.report.compact import BLOCKS, MAX_SPARK, rows, sparkline  # noqa: E402

WARN = Threshold("<", 0.99, "warn")
LAYERS = [Result("cone.layer", {"modality": m, "layer": k}, v, s, WARN)
          for m, values in (("image", [(0.95, "pass"), (0.995, "warn"), (0.97, "pass")]),
                            ("text", [(0.5, "pass"), (0.6, "pass"), (0.55, "pass")]))
          for k, (v, s) in enumerate(values)]


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_compact_table_has_one_row_per_check_and_modality():
    text = render(LAYERS + [RESULTS[0], RESULTS[2]], "t", width=120, color=False)
    cone_rows = [line for line in _lines(text) if "cone.layer" in line]
    assert len(cone_rows) == 2
    image, txt = cone_rows
    assert "image L00-02" in image and "0.95..0.995" in image and "max L01" in image and "warn 1/3" in image
    assert "text L00-02" in txt and "0.5..0.6" in txt and "max L01" in txt and txt.rstrip("│ ").endswith("pass")
    assert "▁█▄" in image  # the sparkline: low, peak, middle
    # a check reported at a single layer keeps its own row
    assert any("image-L07" in line for line in _lines(render(RESULTS, "t", width=120, color=False)))


def test_full_table_has_one_row_per_layer():
    text = render(LAYERS, "t", width=120, color=False, table="full")
    assert sum("cone.layer" in line for line in _lines(text)) == 6
    assert "image-L01" in text and "0.995" in text and "per layer" not in text


def test_eighty_columns_keep_every_row_on_one_line():
    many = [Result("probe.text_retention", {"modality": "text", "layer": k}, -0.0123456 * k, "info", None)
            for k in range(25)]
    text = render(LAYERS + [RESULTS[0], RESULTS[2]] + many, "mmdiag · random:tiny-clip · data synthetic (n=128)", width=80,
                  color=False, with_deltas=True)
    lines = _lines(text)
    assert max(len(line) for line in lines) <= 80
    assert all(line == line.rstrip() for line in lines)
    for check, expected in (("cone.layer", 2), ("probe.text_retention", 1), ("gap.norm", 1), ("cone.final", 1)):
        assert sum(check in line for line in lines) == expected, text
    row = next(line for line in lines if "probe.text_retention" in line)
    assert "L00-24" in row and "-0.2963..0" in row and "info" in row and "-" in row.split("..")[1]
    assert lines[-1].startswith("(") and lines[-2].endswith(".")  # the verdict and its counts, unbroken


def test_title_folds_at_its_separators():
    from mmdiag.report.terminal import fold

    assert fold("mmdiag · m · data d (n=8)", 80) == "mmdiag · m · data d (n=8)"
    assert fold("mmdiag · " + "p" * 70 + " · data synthetic (n=8)", 80) == \
        "mmdiag · " + "p" * 70 + "\n  data synthetic (n=8)"
    assert fold("x" * 90 + " · data", 80) == "x" * 90 + "\n  data"


def test_wide_terminal_shows_the_sparkline_column():
    assert "per layer" in render(LAYERS, "t", width=120, color=False)
    assert "per layer" not in render(LAYERS, "t", width=80, color=False)


def test_layers_of_other_params_and_skips_stay_apart():
    results = [Result("attention.entropy", {"modality": "image", "layer": k}, None, "skip", None) for k in (1, 2)]
    results += [Result("mine.x", {"modality": "text", "head": h, "layer": k}, float(h + k), "pass", None)
                for h in (0, 1) for k in (0, 1)]
    found = rows(results)
    assert [(r.check, r.params()) for r in found] == [("attention.entropy", "image L01-02"),
                                                      ("mine.x", "text-0 L00-01"), ("mine.x", "text-1 L00-01")]
    assert found[0].value_range() is None and found[0].status() == "skip"


@given(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=80))
def test_sparkline_scales_between_min_and_max(values):
    line = sparkline(values)
    known = [v for v in values if v is not None]
    if not known:
        assert line == ""
        return
    assert len(line) == min(len(values), MAX_SPARK)
    assert set(line) <= set(BLOCKS) | {" "}
    if len(values) <= MAX_SPARK:
        assert line[values.index(max(known))] == (BLOCKS[-1] if max(known) > min(known) else BLOCKS[0])
        assert line[values.index(min(known))] == BLOCKS[0]


# -- the terminal as a CI log shows it --------------------------------------------------------------------------
@pytest.mark.slow
def test_ci_log_at_eighty_columns(pytester, monkeypatch, tmp_path):
    from mmdiag.models.load import save_preset

    model = save_preset("random:tiny-clip", tmp_path / "m", seed=0)  # a directory: transformers' load path
    monkeypatch.setenv("COLUMNS", "80")
    result = pytester.runpytest(f"--mm-model={model}", "--mm-samples=8", "--mm-batch-size=4", "-rs",
                                "-p", "no:cacheprovider", "-k", "cone_layer or text_retention or gap_norm",
                                "--mm-threshold=cone.layer=<:0.5:warn", "--mm-bootstrap=0")
    out, err = result.stdout.str(), result.stderr.str()
    lines = out.splitlines()
    assert "Loading weights" not in out + err and "it/s" not in out + err  # no load bar before the header
    table = lines[lines.index(next(line for line in lines if line.startswith("check "))):
                  lines.index(next(line for line in lines if line.startswith("mmdiag: wrote")))]
    assert "value" in table[0] and max(len(line) for line in table) <= 80, "\n".join(table)
    assert [line for line in table if "gap.norm" in line][0].endswith("warn")  # no cell wrapped
    # the title breaks at its separators (a path longer than the terminal keeps a line of its own)
    assert any(line.startswith("  data synthetic (n=8)") for line in lines)
    # the progress keeps its own lines and gives the file prefix back to the letters that follow
    progress = next(i for i, line in enumerate(lines) if "mmdiag: forward pass 8/8 samples" in line)
    assert lines[progress + 1].startswith("test_mm_cone.py ") and "[" in lines[progress + 1]
    # warnings and skips point at the check, not at mmdiag's own modules
    assert "checks/test_mm_cone.py:" in out and "MMDiagWarning" in out and "mmdiag/api.py" not in out
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    assert skipped and all("checks/test_mm_probe.py:" in line for line in skipped)
    assert sum("cone.layer" in line for line in lines if "L00-" in line) == 2


def test_bad_table_option_is_a_usage_error(pytester):
    result = pytester.runpytest("--mm-model=random:tiny-clip", "--mm-table=wide", "-p", "no:cacheprovider")
    assert result.ret == 4
    assert "--mm-table='wide': accepted: compact" in result.stderr.str()
