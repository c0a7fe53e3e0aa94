"""Rich markup in user strings (a data path, a model spec, a check's parameters and message) is printed literally
by the summary table and escaped by the HTML report; it never restyles the table or crashes rich."""
import pytest

from mmdiag.report.terminal import render
from mmdiag.thresholds import Result, Threshold

MARKUP = ("[bold]", "[/]", "[red]x[/red]")

USER_CHECK = '''
import pytest
from mmdiag import CheckSpec

ODD = CheckSpec("mine.odd", threshold="<:0.5", higher_is_better=False, meaning="always 1", source="a test")


@pytest.mark.mm(ODD)
@pytest.mark.parametrize("tag", ["[red]x[/red]"])
def test_odd(mm, tag):
    mm.report(1.0, message="[bold]too high[/] for [red]x[/red]")
'''


def test_markup_in_every_cell_and_the_title_is_literal():
    results = [Result("mine.odd", {"tag": "[red]x[/red]", "more": "[/]"}, 1.0, "fail",
                      Threshold("<", 0.5, "fail", "[bold]why[/]"), message="[bold]boom[/]"),
               Result("gap.norm", {"tag": "[bold]"}, 0.5, "pass", None, baseline={"delta": 0.1})]
    for color in (False, True):
        text = render(results, "mmdiag · [bold]m[/] · data [red]x[/red]/[/]", width=160, color=color,
                      with_deltas=True)
        assert "mmdiag · [bold]m[/] · data [red]x[/red]/[/]" in text
        assert "[red]x[/red]-[/]" in text and "[bold]" in text.split("gap.norm", 1)[1]
        if not color:
            assert "\x1b[" not in text


def test_markup_in_data_path_and_check_strings_end_to_end(pytester, rel):
    folder = pytester.path / "[bold]data[" / "]"  # the path reads .../[bold]data[/]/captions.jsonl
    folder.mkdir(parents=True)
    names = rel.write_images(folder, 8)
    captions = rel.write_jsonl(folder / "captions.jsonl",
                               [{"image": n, "caption": f"a red cube [bold]number[/] {i}"} for i, n in
                                enumerate(names)])
    pytester.makepyfile(test_mm_odd=USER_CHECK)
    result = pytester.runpytest("--mm-model=random:tiny-clip", f"--mm-data={captions}", "--mm-samples=8",
                                "--mm-batch-size=4", "-p", "no:cacheprovider", "--color=no", "--mm-report-dir=out",
                                "test_mm_odd.py")
    output = result.stdout.str() + result.stderr.str()
    rel.assert_no_traceback(output)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    summary = output.split("mmdiag summary", 1)[1]
    flat = "".join(summary.split())                            # (the long title wraps)
    assert "".join(f"data {captions}".split()) in flat        # the folder name, brackets and all
    assert "[red]x[/red]" in summary                           # the parameter, literally
    html = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    assert "[bold]too high[/] for [red]x[/red]" in html        # markup is not HTML: it stays as text
    assert "[bold]data[/]" in html


def test_html_report_escapes_user_strings():
    """A check message with HTML in it is escaped by the report (jinja2 autoescape)."""
    from mmdiag.report.html import render_html

    doc = {"schema": "mmdiag/1", "model": {"spec": "<b>[bold]m[/]</b>"}, "data": {"source": "[bold]data[/]"},
           "results": [{"check": "gap.norm", "params": {}, "value": 1.0, "status": "fail",
                        "threshold": {"op": "<", "value": 0.5, "level": "fail"},
                        "message": "<script>alert(1)</script> [red]x[/red]"}]}
    html = render_html(doc)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; [red]x[/red]" in html
    assert "<b>[bold]m[/]</b>" not in html and "&lt;b&gt;[bold]m[/]&lt;/b&gt;" in html
