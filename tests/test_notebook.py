"""The notebook API: mmdiag.diagnose() runs the plugin's checks in-process and returns Results."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import mmdiag
from mmdiag.errors import SpecError
from mmdiag.notebook import COLUMNS, Results
from mmdiag.notebook.keywords import known_keywords, option_args

DOC = Path(__file__).resolve().parents[1] / "docs" / "notebook.md"

def _doc(results: list[dict]) -> dict:
    return {"schema": "mmdiag/1", "model": {"spec": "m"}, "data": {}, "results": results, "series": {}}


@pytest.fixture(scope="module")
def gap_run() -> Results:
    return mmdiag.diagnose("random:tiny-clip", samples=12, checks=["gap.norm", "cone"], batch_size=6, bootstrap=50)


def test_docs_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert blocks, "docs/notebook.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)
    frame = namespace["frame"]
    assert "cone.final" in set(frame["check"]) and "gap.norm" in set(frame["check"])
    saved = json.loads((tmp_path / "mmdiag-report" / "results.json").read_text())
    assert saved["model"]["spec"] == "random:tiny-clip"
    assert (tmp_path / "mmdiag-report" / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_to_pandas_columns_and_dtypes(gap_run):
    frame = gap_run.to_pandas()
    assert list(frame.columns) == list(COLUMNS)
    assert {str(frame[c].dtype) for c in ("value", "ci_low", "ci_high")} == {"float64"}
    assert str(frame["layer"].dtype) == "Int64"
    layers = frame[frame["check"] == "cone.layer"]
    assert list(layers["modality"].unique()) == ["image", "text"] and layers["layer"].min() == 0
    assert (layers["params"] == [f"{m}-L{k:02d}" for m, k in zip(layers["modality"], layers["layer"])]).all()
    gap = frame[frame["check"] == "gap.norm"].iloc[0]
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert len(frame) == len(gap_run) == len(gap_run.doc["results"])


def test_values_without_pandas_agree_with_results_json(gap_run, monkeypatch):
    records = gap_run.to_records()
    for record, entry in zip(records, gap_run.doc["results"]):
        assert (record["check"], record["params"], record["status"]) == \
            (entry["check"], entry["params"], entry["status"])
        assert record["value"] == entry["value"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(SpecError, match="pip install pandas"):
        gap_run.to_pandas()
    assert [r.check for r in gap_run] == [r["check"] for r in records]


def test_checks_filter_selects_names_and_families(gap_run):
    checks = {r.check for r in gap_run}
    assert checks == {"gap.norm", "cone.final", "cone.layer", "cone.narrowing"}


def test_unknown_check_lists_the_known_ones():
    with pytest.raises(SpecError) as info:
        mmdiag.diagnose("random:tiny-clip", checks=["gap", "cone.finale"])
    text = str(info.value)
    assert "'cone.finale'" in text and "cone.final" in text and "families: cone" in text


def test_bad_option_names_the_keyword():
    with pytest.raises(SpecError, match=r"unknown option batchsize=.*batch_size"):
        mmdiag.diagnose("random:tiny-clip", batchsize=4)
    with pytest.raises(SpecError, match=r"batch_size='x' is not an integer"):
        mmdiag.diagnose("random:tiny-clip", samples=8, checks="gap", batch_size="x")
    with pytest.raises(SpecError, match="gate='maybe'"):
        mmdiag.diagnose("random:tiny-clip", samples=8, checks="gap", gate="maybe")
    with pytest.raises(SpecError, match="results.save"):
        mmdiag.diagnose("random:tiny-clip", report_dir="x")


def test_keywords_map_onto_plugin_options():
    assert option_args({"batch_size": 8, "no_cache": True, "skip_bad_samples": False,
                        "threshold": {"gap.norm": "<=:1.0"}, "controls": ["noise", "random-init"], "seed": None}) \
        == ["--mm-batch-size=8", "--mm-no-cache", "--mm-threshold=gap.norm=<=:1.0",
            "--mm-controls=noise,random-init"]
    assert "batch_size" in known_keywords() and "model" not in known_keywords()
    with pytest.raises(SpecError, match="True or False"):
        option_args({"no_cache": "yes"})


def test_a_relative_cache_dir_is_the_callers(tmp_path, monkeypatch):
    from mmdiag.notebook.run import resolved

    monkeypatch.chdir(tmp_path)
    assert resolved({"cache_dir": "cache", "seed": 1}) == {"cache_dir": str(tmp_path / "cache"), "seed": 1}
    assert resolved({"seed": 1}) == {"seed": 1}


def test_hf_model_object_gives_the_numbers_of_its_spec(gap_run):
    from transformers import CLIPProcessor

    from mmdiag.models.load import build_random
    from mmdiag.models.presets import PRESETS

    model, tokenizer, image_processor = build_random(PRESETS["tiny-clip"], 0)  # what random:tiny-clip seed 0 builds
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    results = mmdiag.diagnose(model, processor=processor, samples=12, checks=["gap.norm", "cone"], batch_size=6,
                              bootstrap=50)
    assert results.doc["model"]["family"] == "clip" and "in memory" in results.doc["model"]["spec"]
    ours = {(r.check, tuple(sorted(r.params.items()))): r.value for r in results}
    spec = {(r.check, tuple(sorted(r.params.items()))): r.value for r in gap_run}
    assert ours.keys() == spec.keys()
    for key, value in spec.items():
        assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    with pytest.raises(SpecError, match="processor"):
        mmdiag.diagnose(model, checks="gap")


def test_two_calls_are_independent(gap_run):
    before = gap_run.to_records()
    strict = mmdiag.diagnose("random:tiny-clip", samples=12, checks="gap.norm", batch_size=6, bootstrap=0,
                             threshold={"gap.norm": "<=:0.01"})
    assert [r.status for r in strict] == ["fail"] and strict.exit_code == 1 and not strict.passed
    assert gap_run.to_records() == before
    assert [r for r in before if r["check"] == "gap.norm"][0]["status"] != "fail"
    assert strict.rows[0].value == pytest.approx([r for r in before if r["check"] == "gap.norm"][0]["value"])


def test_save_and_inline_html(gap_run, tmp_path):
    out = gap_run.save(tmp_path / "r")
    assert json.loads((out / "results.json").read_text()) == gap_run.doc
    assert (out / "report.html").read_text() == gap_run.report_html
    inline = gap_run._repr_html_()
    assert inline.count("<iframe") == 1 and "srcdoc=" in inline and "<html" not in inline.split("srcdoc=")[0]
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match="not a directory"):
        gap_run.save(tmp_path / "file")


def test_results_from_a_document_without_a_run():
    results = Results(_doc([{"check": "gap.norm", "params": {}, "value": 1.5, "status": "fail",
                             "threshold": {"op": "<=", "value": 1.2, "level": "fail"},
                             "ci": {"low": 1.4, "high": 1.6}},
                            {"check": "probe.depth", "params": {"modality": "text", "layer": 2}, "value": None,
                             "status": "skip", "message": "needs a treebank"}]))
    assert not results.passed and results.verdict.outcome == "fail"
    frame = results.to_pandas()
    assert frame["layer"].isna().tolist() == [True, False] and frame["ci_low"].isna().tolist() == [False, True]
    assert frame.loc[0, "threshold"] == "<= 1.2 (fail)"
    assert "table" in results._repr_html_()
