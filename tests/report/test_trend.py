"""``mmdiag report A.json B.json C.json -o trend.html``: each check across the runs, and two models side by side."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from mmdiag.cli import main
from mmdiag.report.trend import render_trend, run_labels

SAMPLE = Path(__file__).with_name("sample_results.json")


def _runs(tmp_path: Path, n: int = 3, shift: float = 0.05) -> list[Path]:
    base = json.loads(SAMPLE.read_text(encoding="utf-8"))
    paths = []
    for i in range(n):
        doc = copy.deepcopy(base)
        for r in doc["results"]:
            if isinstance(r.get("value"), float):
                r["value"] += i * shift
                r["ci"] = {"low": r["value"] - 0.02, "high": r["value"] + 0.02, "level": 0.95, "method": "bootstrap"}
        doc["run"]["started"] = f"2026-11-2{i}T10:00:00Z"
        path = tmp_path / f"v{i + 1}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        paths.append(path)
    return paths


def test_trend_command_draws_each_check_across_the_runs(tmp_path, capsys):
    paths = _runs(tmp_path)
    out = tmp_path / "trend.html"
    assert main(["report", *map(str, paths), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert "mmdiag trend · 3 runs" in html and "wrote" in capsys.readouterr().out
    base = json.loads(SAMPLE.read_text(encoding="utf-8"))
    checks = {r["check"] for r in base["results"] if isinstance(r.get("value"), (int, float))}
    for check in checks:  # one trend figure per check that has a value
        assert f'data-plot="trend-{check.replace(".", "-")}"' in html, check
    # every run is a column of the table, with its value and interval
    row = re.search(r'<tr class="result" data-check="gap.norm">.*?</tr>', html, re.S).group(0)
    gap = next(r for r in base["results"] if r["check"] == "gap.norm")
    for i in range(3):
        assert f"{gap['value'] + i * 0.05:.4g}" in row
    assert row.count('class="ci"') == 3 and "v1" in html and "v3" in html
    assert "threshold" in html and "2026-11-22T10:00:00Z" in html
    assert "<script" not in html.lower()


def test_two_runs_of_different_models_side_by_side(tmp_path):
    a, b = _runs(tmp_path, 2, shift=0.1)
    doc = json.loads(b.read_text(encoding="utf-8"))
    doc["model"]["spec"] = "random:other"
    b.write_text(json.dumps(doc), encoding="utf-8")
    html = render_trend([json.loads(a.read_text()), doc], [a, b])
    assert "Runs of different models" in html and "random:other" in html
    assert "Side by side" in html and "Δ (v2 − v1)" in html
    row = re.search(r'<tr class="result" data-check="gap.norm">.*?</tr>', html, re.S).group(0)
    assert '<td class="delta">+0.1</td>' in row


def test_run_labels_stay_unique():
    assert run_labels([Path("a/results.json"), Path("b/results.json")]) == ["a/results", "b/results"]
    assert run_labels([Path("x.json"), Path("y.json")]) == ["x", "y"]


def test_a_missing_file_is_a_usage_error(tmp_path, capsys):
    (path,) = _runs(tmp_path, 1)
    assert main(["report", str(path), str(tmp_path / "nope.json"), "-o", str(tmp_path / "t.html")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_one_file_still_renders_the_report(tmp_path):
    (path,) = _runs(tmp_path, 1)
    assert main(["report", str(path)]) == 0
    assert (tmp_path / "report.html").exists() and not (tmp_path / "trend.html").exists()
