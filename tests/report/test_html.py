"""Tests of the HTML report renderer (mmdiag.report.html / mmdiag.report.plots)."""
from __future__ import annotations

import copy
import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdiag.errors import MMDiagError
from mmdiag.report import html as report_html
from mmdiag.report import figures as plots
from mmdiag.report.html import render_html, write_html

SAMPLE = Path(__file__).with_name("sample_results.json")
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
FAMILIES = ("cone", "gap", "geometry", "probe", "attention")
PLOT_IDS = ("cone-layer", "embedding-2d", "gap-shift", "probe-layers", "probe-tree",
            "attention-share", "hidden-2d")
# a resource reference that would reach the network: src/href/xlink:href/url()/@import
NETWORK_REF = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""", re.I)
MINIMAL = {
    "schema": "mmdiag/1",
    "model": {"spec": "random:tiny-clip", "family": "clip", "n_params": 1234, "fingerprint": "ab12"},
    "data": {"spec": "synthetic", "n": 8, "fingerprint": "cd34"},
    "results": [{"check": "probe.depth", "status": "skip", "value": None,
                 "message": "needs a treebank (--mm-treebank=PATH)"}],
}


@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(SAMPLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sample_html(sample) -> str:
    return render_html(sample)


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr class="result .*?</tr>', html, flags=re.S)


def _foreign_scripts(html: str) -> list[str]:
    """Script elements other than the report's own inline script (report.js) and its JSON data blocks."""
    own = (Path(report_html.__file__).parent / "templates" / "report.js").read_text(encoding="utf-8")
    scripts = re.findall(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", html, flags=re.S | re.I)
    return [body for attrs, body in scripts
            if not (body.strip() == own.strip() or 'type="application/json"' in attrs)]


def _badges(html: str) -> dict[str, int]:
    section = html[html.index('<section id="summary"'):html.index('<section id="results"')]
    return {s: int(n) for s, n in re.findall(r'data-status="([^"]+)" data-count="(\d+)"', section)}


# ---------------------------------------------------------------- sample document

def test_sample_fixture_is_a_full_document(sample):
    assert sample["schema"] == "mmdiag/1"
    assert {"cone.layer", "embedding_2d", "gap.shift", "probe", "attention.share",
            "hidden_2d"} <= set(sample["series"])
    assert {r["status"] for r in sample["results"]} == {"pass", "warn", "fail", "skip", "error"}


def test_sample_has_every_section_and_plot(sample_html):
    for marker in ('<header id="header"', '<section id="summary"', '<section id="results"'):
        assert marker in sample_html
    for family in FAMILIES:
        assert f'<section id="family-{family}" class="family">' in sample_html
        assert f'<tbody id="results-{family}">' in sample_html
    for plot_id in PLOT_IDS:
        start = sample_html.index(f'<figure id="plot-{plot_id}"')
        figure = sample_html[start:sample_html.index("</figure>", start)]
        assert "<svg" in figure and "</svg>" in figure, plot_id
    per_check = sample_html.count('<svg class="plot" data-plot="check-')
    assert per_check >= 5 and sample_html.count("<svg") - per_check == len(PLOT_IDS)  # plus one per-check figure (data-plot="check-...") each
    # the plots sit in their family's section
    cone = sample_html.index('id="family-cone"')
    gap = sample_html.index('id="family-gap"')
    assert cone < sample_html.index('id="plot-cone-layer"') < gap


def test_sample_header_shows_model_data_and_run(sample, sample_html):
    header = sample_html[:sample_html.index("</header>")]
    for text in ("dandelin/vilt-b32-mlm", "vilt", "87,407,616", "synthetic", "256",
                 "torch 2.13.0", "transformers 5.24.0", "fp32", "2026-11-26T19:40:00Z",
                 "forward 18.4 s", "total 64.9 s"):
        assert text in header, text


def test_sample_table_has_one_row_per_result_in_family_order(sample, sample_html):
    rows = _rows(sample_html)
    assert len(rows) == len(sample["results"])
    checks = [re.search(r'data-check="([^"]+)"', r).group(1) for r in rows]
    families = [c.split(".")[0] for c in checks]
    # grouped: each family is one contiguous block; families with a failure first, then warnings, then the
    # pinned order; within a family failures first, then warnings, then the run's order
    blocks = [f for i, f in enumerate(families) if i == 0 or families[i - 1] != f]
    severity = {"fail": 0, "error": 0, "warn": 1}
    worst = {f: min(severity.get(r["status"], 2) for r in sample["results"] if r["check"].startswith(f + "."))
             for f in families}
    assert blocks == sorted([f for f in FAMILIES if f in families], key=lambda f: worst[f])
    assert Counter(checks) == Counter(r["check"] for r in sample["results"])
    statuses = [re.search(r'data-status="([^"]+)"', r).group(1) for r in rows]
    for fam in blocks:
        ranks = [severity.get(s, 2) for s, f in zip(statuses, families) if f == fam]
        assert ranks == sorted(ranks), fam


def test_summary_counts_match_the_results(sample, sample_html):
    expected = Counter(r["status"] for r in sample["results"])
    assert _badges(sample_html) == dict(expected)
    ran = len(sample["results"]) - expected["skip"]  # a skipped check did not run: the verdict does not count it
    assert f"{expected['fail'] + expected['error']} of {ran} results failed or errored" in sample_html
    assert f"{expected['skip']} skipped" in sample_html


def test_row_cells_formatting(sample_html):
    rows = _rows(sample_html)
    gap = next(r for r in rows if 'data-check="gap.norm"' in r)
    assert "0.8212" in gap and "&lt;= 1.1 (fail)" in gap
    assert '<td class="delta worse"' in gap and "+0.0199" in gap  # 0.8212 - 0.8013, "<=": up is worse
    retention = next(r for r in rows if 'data-check="probe.text_retention"' in r)
    assert "-0.0489" in retention and "worse" in retention  # ">=": down is worse
    layer7 = [r for r in rows if 'data-check="cone.layer"' in r and "image · L07" in r]
    assert len(layer7) == 1
    skip = next(r for r in rows if 'data-check="probe.scene_vs_raw"' in r)
    assert "—" in skip and "status-skip" in skip


def test_no_network_references_and_no_scripts(sample_html):
    assert not NETWORK_REF.search(sample_html)
    assert "http://" not in sample_html and "https://" not in sample_html
    assert not _foreign_scripts(sample_html)  # the one inline script is report.js
    assert "<link" not in sample_html.lower()


def test_network_ref_pattern_catches_references():
    # the pattern the test above relies on does detect what it must
    for bad in ('<img src="https://x.org/a.png">', "<a href='//cdn.x/y'>", 'xlink:href="http://a/b"',
                "background: url(https://x/y.png)", "@import 'x.css'"):
        assert NETWORK_REF.search(bad), bad
    for ok in ('<a href="#family-cone">', 'xlink:href="data:image/png;base64,AAAA"', "url(#p1-clip)"):
        assert not NETWORK_REF.search(ok), ok


def test_svg_ids_are_unique_and_references_resolve(sample_html):
    ids = re.findall(r'\bid="([^"]+)"', sample_html)
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    assert not dupes
    refs = set(re.findall(r'href="#([^"]+)"', sample_html)) | set(re.findall(r"url\(#([^)]+)\)", sample_html))
    assert refs and refs <= set(ids)


def test_svgs_are_small_text_not_glyphs(sample_html):
    assert "<?xml" not in sample_html and "<!DOCTYPE svg" not in sample_html
    assert "<metadata>" not in sample_html
    assert 'id="DejaVuSans' not in sample_html and "-DejaVuSans-" not in sample_html
    assert sample_html.count("<text") > 50  # axis labels are real text
    assert len(sample_html.encode("utf-8")) < 1_000_000  # series plots plus one per-check plot each


# ---------------------------------------------------------------- partial documents

def test_minimal_document_renders():
    html = render_html(copy.deepcopy(MINIMAL))
    assert _badges(html) == {"pass": 0, "warn": 0, "fail": 0, "skip": 1}
    assert len(_rows(html)) == 1
    assert "needs a treebank (--mm-treebank=PATH)" in html
    assert "<figure" not in html and "<svg" not in html
    assert '<section id="family-probe" class="family">' in html
    assert "No plot data for this family" in html
    assert 'id="schema-note"' not in html


@pytest.mark.parametrize("doc", [
    {},
    {"schema": "mmdiag/1"},
    {"schema": "mmdiag/2", "model": None, "data": [], "results": None, "series": None},
    {"schema": "mmdiag/1", "model": {}, "data": {}, "results": ["junk", None, {}], "series": "junk"},
])
def test_documents_missing_parts_render(doc):
    html = render_html(doc)
    assert '<section id="summary"' in html and "</html>" in html
    if doc.get("schema") != "mmdiag/1":
        assert 'id="schema-note"' in html


def test_non_object_document_is_a_user_error():
    with pytest.raises(MMDiagError, match="JSON object"):
        render_html([1, 2])  # type: ignore[arg-type]


def test_nulls_nan_and_ragged_series_render(sample):
    doc = copy.deepcopy(sample)
    doc["results"][0].update(value=None, threshold=None, params=None, details=None, message=None)
    doc["results"][1].update(value=float("nan"), threshold={"op": "<=", "value": None},
                             baseline={"value": None, "delta": None}, status=None)
    s = doc["series"]
    s["cone.layer"]["image"] = {"layers": [0, 1], "values": [None, None], "mean_tokens": None,
                                "controls": {"noise": [None]}}  # all null -> panel omitted
    s["cone.layer"]["text"]["layers"] = None                   # x falls back to 0..n-1
    s["cone.layer"]["text"]["controls"] = {"noise": [0.3, None, 0.4]}
    s["embedding_2d"] = {"image": [[0, 0], [None, 1], [1, 1]], "text": [[2, 2], [3, float("nan")]],
                         "centroids": None}
    s["gap.shift"]["optimum"] = None
    s["gap.shift"]["loss"] = None
    s["probe"]["image"] = {"layers": [0, 1], "nspr": [None, None]}  # nothing -> panel omitted
    s["probe"]["example"]["gold_heads"] = [99, None, "x"]       # out of range / junk ignored
    s["probe"]["example"]["pred_edges"] = [[0, 1], [5, 50], "x", [None, 1]]
    s["attention.share"]["directions"]["text->image"] = [[0.1, None], [0.2], None]
    s["attention.share"]["directions"]["image->text"] = None
    s["hidden_2d"] = {"points": {"3": {"image": [[0, 1], [1, 0]]}, "1": {"text": None}}}
    html = render_html(doc)
    assert len(_rows(html)) == len(doc["results"])
    assert "NaN" in html
    for plot_id in PLOT_IDS:
        assert f'id="plot-{plot_id}"' in html, plot_id
    # the all-null image cone series is omitted, the text one drawn
    cone = plots.cone_plot(s["cone.layer"])
    assert "image: mean pairwise cosine" not in cone and "text: mean pairwise cosine" in cone


@pytest.mark.parametrize("fn", [plots.cone_plot, plots.embedding_plot, plots.shift_plot,
                                plots.probe_plot, plots.tree_svg, plots.attention_plot,
                                plots.hidden_plot])
@pytest.mark.parametrize("entry", [None, {}, [], "x", {"image": None, "text": {}},
                                   {"lambda": [None], "loss": [None], "directions": {"a": [[None]]},
                                    "points": {"0": {"image": [[None, None]]}}, "words": []}])
def test_plot_functions_omit_empty_series(fn, entry):
    assert fn(entry) is None


def test_series_missing_plots_are_omitted(sample):
    probe = {k: v for k, v in sample["series"]["probe"].items() if k != "example"}
    doc = {**MINIMAL, "series": {"probe": probe, "embedding_2d": sample["series"]["embedding_2d"]}}
    html = render_html(doc)
    for gone in ("cone-layer", "gap-shift", "hidden-2d", "probe-tree", "attention-share"):
        assert f'id="plot-{gone}"' not in html
    for kept in ("embedding-2d", "probe-layers"):
        assert f'id="plot-{kept}"' in html
    assert '<section id="family-cone"' not in html  # no result and no plot: no section


def test_plot_that_cannot_be_drawn_becomes_a_note(sample, monkeypatch):
    def broken(entry):
        raise ValueError("bad <shape>")
    real = report_html.figure
    monkeypatch.setattr(report_html, "figure", lambda name: broken if name == "shift_plot" else real(name))
    html = render_html({"schema": "mmdiag/1", "series": {"gap.shift": sample["series"]["gap.shift"]}})
    assert "could not be drawn" in html and "bad &lt;shape&gt;" in html
    assert 'id="plot-gap-shift"' not in html


# ---------------------------------------------------------------- escaping

def test_untrusted_strings_are_escaped(sample):
    doc = copy.deepcopy(sample)
    doc["model"]["spec"] = f"evil/{XSS}"
    doc["model"]["family"] = XSS
    doc["data"]["spec"] = f"https://example.org/{XSS}"
    doc["run"]["device"] = XSS
    doc["results"][0]["message"] = XSS
    doc["results"][1]["check"] = f"cone.{XSS}"
    doc["results"][2]["params"] = {"modality": XSS, "layer": XSS, XSS: XSS}
    doc["results"][3]["details"] = {"note": XSS}
    doc["results"][4]["status"] = XSS
    doc["results"][5]["threshold"] = {"op": XSS, "value": 1, "level": XSS}
    doc["series"]["probe"]["example"]["words"][1] = XSS
    doc["series"]["probe"]["example"]["modality"] = XSS
    doc["series"]["cone.layer"]["image"]["controls"][XSS] = [0.5] * 13
    doc["series"]["attention.share"]["directions"][XSS] = [[0.5] * 12] * 13
    doc["series"]["hidden_2d"]["points"]["0"][XSS] = [[0, 0], [1, 1]]
    doc["series"]["embedding_2d"]["method"] = XSS
    del doc["series"]["gap.shift"]  # holds no strings; saves a plot
    html = render_html(doc)
    assert XSS not in html
    assert not _foreign_scripts(html)
    assert html.count(XSS_ESCAPED) >= 10
    # inside the SVGs too: matplotlib's writer escapes legend labels and titles
    for plot_id in ("cone-layer", "attention-share", "probe-tree", "hidden-2d", "embedding-2d"):
        start = html.index(f'<figure id="plot-{plot_id}"')
        assert XSS_ESCAPED in html[start:html.index("</figure>", start)], plot_id
    # a URL in the data is text, never a resource reference
    assert "https://example.org/" in html and not NETWORK_REF.search(html)


def test_dollar_signs_do_not_trigger_mathtext():
    svg = plots.cone_plot({"text": {"values": [0.1, 0.2], "controls": {"$a$ $b": [0.3, 0.4]}}})
    assert "$a$ $b" in svg


# ---------------------------------------------------------------- formatting helpers

@pytest.mark.parametrize("params, expected", [
    ({"modality": "image", "layer": 7}, "image · L07"),
    ({"modality": "text", "layer": 12}, "text · L12"),
    ({"direction": "text->image"}, "text->image"),
    ({"layer": 3, "k": 10}, "L03 · k=10"),
    ({}, ""), (None, ""),
])
def test_fmt_params(params, expected):
    assert report_html.fmt_params(params) == expected


@pytest.mark.parametrize("threshold, expected", [
    ({"op": "<=", "value": 1.1, "level": "fail"}, "<= 1.1 (fail)"),
    ({"op": ">=", "value": 32, "level": "warn"}, ">= 32 (warn)"),
    ({"op": "<=", "value": None}, "<= —"),
    (None, ""),
])
def test_fmt_threshold(threshold, expected):
    assert report_html.fmt_threshold(threshold) == expected


@pytest.mark.parametrize("value, expected", [
    (None, "—"), (float("nan"), "NaN"), (float("inf"), "∞"), (0.82123, "0.8212"),
    (1234567, "1,234,567"), (3, "3"), (True, "true"), ("x", "x"),
])
def test_fmt_value(value, expected):
    assert report_html.fmt_value(value) == expected


_status = st.sampled_from(["pass", "warn", "fail", "skip", "error", "weird", None])
_scalar = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                    st.text(max_size=8), st.booleans())
_result = st.fixed_dictionaries(
    {"check": st.sampled_from(["cone.final", "gap.norm", "probe.depth", "attention.share", "x", ""])},
    optional={
        "status": _status,
        "value": _scalar,
        "params": st.one_of(st.none(), st.dictionaries(
            st.sampled_from(["modality", "layer", "direction", "k"]), _scalar, max_size=3)),
        "threshold": st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"op": st.sampled_from(["<=", ">=", "<", ">"]), "value": _scalar,
                          "level": st.sampled_from(["warn", "fail"])})),
        "message": st.one_of(st.none(), st.text(max_size=20)),
        "details": st.one_of(st.none(), st.dictionaries(st.text(max_size=4), _scalar, max_size=3)),
        "baseline": st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"value": _scalar, "delta": _scalar})),
    })


@settings(max_examples=40, deadline=None)
@given(results=st.lists(_result, max_size=12))
def test_any_results_table_renders(results):
    html = render_html({"schema": "mmdiag/1", "results": results})
    assert len(_rows(html)) == len(results)
    expected = Counter(str(r.get("status") or "unknown") for r in results)
    badges = _badges(html)
    assert {k: v for k, v in badges.items() if v} == dict(expected)
    assert not _foreign_scripts(html)


# ---------------------------------------------------------------- write_html

def test_write_html_is_atomic_and_complete(sample, sample_html, tmp_path):
    target = tmp_path / "out" / "report.html"
    got = write_html(copy.deepcopy(sample), target)
    assert got == target and target.is_file()
    text = target.read_text(encoding="utf-8")
    # the same page as rendered before: rendering is deterministic
    assert text == sample_html and text.rstrip().endswith("</html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    assert os.stat(target).st_mode & 0o044  # readable by others (a CI artefact)
    write_html(MINIMAL, str(target))  # overwrite, str path
    assert "random:tiny-clip" in target.read_text(encoding="utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_write_html_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")

    def fail(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(report_html.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html(MINIMAL, target)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    with pytest.raises(MMDiagError):
        write_html("not a document", target)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_tree_marks_predicted_edges_against_gold(sample):
    ex = sample["series"]["probe"]["example"]
    svg = plots.tree_svg(ex)
    gold = {frozenset((d, h - 1)) for d, h in enumerate(ex["gold_heads"]) if h > 0}
    correct = sum(frozenset(e) in gold for e in ex["pred_edges"])
    assert svg.count('class="pred ok"') == correct == 8
    assert svg.count('class="pred bad"') == len(ex["pred_edges"]) - correct
    assert svg.count('class="gold"') == len(gold)
    assert svg.count('class="gold root"') == 1
    assert all(f">{w}</text>" in svg for w in ex["words"])
    assert f"{correct}/{len(ex['pred_edges'])} correct" in svg


def test_shift_plot_marks_zero_and_optimum(sample):
    svg = plots.shift_plot(sample["series"]["gap.shift"])
    assert "optimum λ = 0.1" in svg and "λ = 0 (model)" in svg
    assert plots.shift_plot({**sample["series"]["gap.shift"], "optimum": None}).count("optimum") == 0


def test_scatter_plots_are_subsampled():
    pts = [[math.cos(i), math.sin(i)] for i in range(5000)]
    svg = plots.embedding_plot({"image": pts, "text": pts})
    assert len(svg) < 120_000
    assert "image (n=5000)" in svg


def test_a_value_shows_its_interval():
    doc = {"schema": "mmdiag/1", "results": [
        {"check": "gap.norm", "params": {}, "value": 0.8212, "status": "pass",
         "ci": {"low": 0.80, "high": 0.845, "level": 0.95, "method": "bootstrap-percentile"}, "se": 0.011},
        {"check": "gap.l2i", "params": {}, "value": 1.2, "status": "info",
         "ci": {"low": None, "high": None, "level": None, "method": "none"}, "se": None}]}
    html = render_html(doc)
    assert '<div class="ci" title="95% interval (bootstrap-percentile)">[0.8, 0.845]</div>' in html
    assert html.count('class="ci"') == 1  # no interval, no bracket
