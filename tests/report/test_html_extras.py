"""pytest-html extras: every check's row carries its value, interval and threshold; every family's plots
(both modalities, the shift curves, attention) are attached, complete in their last copy."""
from __future__ import annotations

import html as htmllib
import json
import re

import pytest

from mmdiag.report.html_extras import _shape, result_table

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=8", "-p", "no:cacheprovider",
       "--mm-no-cache", "--mm-threshold=cone.final=<=:1")


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_result_table_shows_value_interval_and_threshold():
    table = result_table([{"check": "gap.norm", "params": {"modality": "image"}, "value": 0.81234, "status": "pass",
                           "threshold": {"op": "<=", "value": 1.1, "level": "fail"},
                           "ci": {"low": 0.8, "high": 0.83}, "message": "<b>x</b>"}])
    assert "0.8123" in table and "[0.8, 0.83]" in table and "&lt;= 1.1 (fail)" in table
    assert "&lt;b&gt;x&lt;/b&gt;" in table and "image" in table
    assert "none (info)" in result_table([{"check": "gap.rmg", "value": 0.3, "status": "info"}])


def test_shape_grows_with_the_series():
    assert _shape({"image": {"layers": [0, 1]}}) != _shape({"image": {"layers": [0, 1]}, "text": {"layers": [0]}})
    assert _shape({"a": [1, 2]}) == _shape({"a": [3, 4]})


def test_every_family_attaches_results_and_complete_plots(pytester):
    pytest.importorskip("pytest_html")
    pytester.runpytest(*RUN, "--html=ph.html", "--self-contained-html", "-k", "cone or gap or attention")
    raw = (pytester.path / "ph.html").read_text()
    blob = json.loads(htmllib.unescape(re.search(r'data-jsonblob="([^"]*)"', raw).group(1)))
    page = "\n".join(_strings(blob))  # the extras' HTML, as pytest-html stores it
    assert page.count('class="mmdiag-result"') >= 10  # one table per check row
    assert re.search(r"<td>cone\.layer</td><td>text · L01</td><td>[-0-9.]+</td>", page)
    assert "&lt; 0.99 (warn)" in page
    for plot in ("cone-layer", "embedding-2d", "gap-shift", "attention-image"):
        assert f'data-plot="{plot}"' in page, plot
    # the last cone plot has both modalities' panels
    last = page.rindex('data-plot="cone-layer"')
    cone = page[last:page.index("</svg>", last)]
    assert "image: mean pairwise cosine" in cone and "text: mean pairwise cosine" in cone
