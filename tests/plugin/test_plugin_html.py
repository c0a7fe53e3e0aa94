"""Reports written by a run: the HTML file, and plots attached as pytest-html extras."""
import json

import pytest

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=8", "-p", "no:cacheprovider",
       "--mm-no-cache", "--mm-threshold=cone.final=<=:1")


def test_report_dir_gets_json_and_self_contained_html(pytester):
    result = pytester.runpytest(*RUN, "--mm-report-dir=out", "-k", "cone or gap")
    result.stdout.fnmatch_lines(["mmdiag: wrote out/results.json", "mmdiag: wrote out/report.html"])
    html = (pytester.path / "out" / "report.html").read_text()
    doc = json.loads((pytester.path / "out" / "results.json").read_text())
    assert "<svg" in html and "random:tiny-clip" in html
    assert "src=\"http" not in html and "href=\"http" not in html
    assert set(doc["series"]) >= {"cone.layer", "embedding_2d", "gap.shift", "hidden_2d"}


def test_report_is_written_even_when_checks_fail(pytester):
    result = pytester.runpytest(*RUN, "--mm-json=r.json", "-k", "gap_norm", "--mm-threshold=gap.norm=<:0.001")
    assert result.ret == 1
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["results"][0]["status"] == "fail"


def test_mmdiag_report_rerenders_html_from_json(pytester):
    from mmdiag.cli import main

    pytester.runpytest(*RUN, "--mm-json=r.json", "-k", "cone_final")
    assert main(["report", str(pytester.path / "r.json"), "-o", str(pytester.path / "again.html")]) == 0
    assert "<svg" in (pytester.path / "again.html").read_text() or "cone.final" in (
        pytester.path / "again.html").read_text()


def test_mmdiag_report_names_a_bad_file(pytester, capsys):
    from mmdiag.cli import main

    (pytester.path / "bad.json").write_text("[1, 2")
    assert main(["report", str(pytester.path / "bad.json")]) == 2
    assert "bad.json:1: malformed JSON" in capsys.readouterr().err


def test_plots_attach_to_pytest_html(pytester):
    pytest.importorskip("pytest_html")
    pytester.runpytest(*RUN, "--html=ph.html", "--self-contained-html", "-k", "cone_layer")
    page = (pytester.path / "ph.html").read_text()
    assert "&lt;svg" in page or "<svg" in page
