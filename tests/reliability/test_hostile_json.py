"""Hostile results JSON (``mmdiag report``, baselines) and hostile region-feature files: mmdiag's own error, never a
traceback or a silently wrong value."""
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiag.cli import main
from mmdiag.data.types import Sample
from mmdiag.errors import DataError
from mmdiag.models.region_features import NpzRegionFeatures
from mmdiag.report.jsonio import MAX_DEPTH, read_json

DEEP = "[" * 100000 + "]" * 100000

BAD_DOCS = {
    "deep.json": (DEEP, "nested too deeply"),
    "deep_results.json": ('{"results": ' + DEEP + "}", "nested too deeply"),
    "deep_params.json": ('{"results": [{"params": ' + '{"a":' * 990 + "1" + "}" * 990 + "}]}", "nested too deeply"),
    "deep_series.json": ('{"results": [], "series": {"x": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}}",
                         "nested too deeply"),
    "items.json": ('{"results": [1, "x", null]}', '"results" item 0 is a number, not an object'),
    "item_list.json": ('{"results": [{}, [2]]}', '"results" item 1 is a list, not an object'),
    "results_number.json": ('{"results": 5}', '"results" is a number, not a list'),
    "results_object.json": ('{"results": {"a": 1}}', '"results" is an object, not a list'),
    "run_string.json": ('{"results": [], "run": "x"}', '"run" is a string, not an object'),
    "series_list.json": ('{"results": [], "series": []}', '"series" is a list, not an object'),
    "bigint.json": ('{"results": [{"value": ' + "9" * 5000 + "}]}", "too many digits"),
    "top_list.json": ("[1, 2]", 'no "results" key'),
    "truncated.json": ('{"results": [', "malformed JSON"),
    "empty.json": ("", "malformed JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_DOCS))
def test_hostile_results_json_is_a_data_error_naming_the_file(tmp_path, name, capsys):
    text, message = BAD_DOCS[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_json(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmdiag report: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "report.html").exists()


def test_non_utf8_json_is_a_data_error(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'{"results": ["\xff"]}')
    with pytest.raises(DataError, match="not UTF-8"):
        read_json(path)


@pytest.mark.parametrize("text", [
    '{"results": [{"check": "gap_norm", "params": {}, "value": 1e999, "status": "passed"}], "run": {"n": 1e999}}',
    '{"results": [{"check": "gap_norm", "value": -1e999, "se": NaN}]}',
    '{"results": [{}, {"check": 3, "params": 5, "value": "x", "status": 7}]}',
    '{"results": [{"check": "[bold]x[/bold]", "params": {"<script>": "</html>"}, "value": 1}]}',
    '\ufeff{"results": []}',
])
def test_odd_but_well_formed_documents_render(tmp_path, text, capsys):
    path = tmp_path / "odd.json"
    path.write_text(text, encoding="utf-8")
    assert main(["report", str(path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!")


def test_an_unwritable_report_path_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "ok.json"
    path.write_text('{"results": []}', encoding="utf-8")
    assert main(["report", str(path), "-o", str(tmp_path)]) == 2
    assert main(["report", str(path), "-o", str(tmp_path / "ok.json" / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("mmdiag report: cannot write") == 2 and "Traceback" not in err


# --- region-feature files ------------------------------------------------------------------------------------

def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _members(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _bad_feature_files(folder):
    """name -> (path, expected message part); every file has key 'a'."""
    files = {}
    np.savez(folder / "obj.npz", a=np.array([{"x": 1}, None], dtype=object))
    files["obj"] = "Object arrays cannot be loaded"
    _members(folder / "pickle.npz", {"a.npy": pickle.dumps({"evil": 1})})
    files["pickle"] = "not a numeric array"
    _members(folder / "pickle_npy.npz", {"a.npy": _npy(np.array([None, {"x": 1}], dtype=object))})
    files["pickle_npy"] = "Object arrays cannot be loaded"
    _members(folder / "trunc.npz", {"a.npy": _npy(np.ones((2, 3)))[:-5]})
    files["trunc"] = "cannot read its region features"
    np.savez(folder / "crc.npz", a=np.ones((50, 50)))
    raw = bytearray((folder / "crc.npz").read_bytes())
    raw[300] ^= 0xFF
    (folder / "crc.npz").write_bytes(bytes(raw))
    files["crc"] = "cannot read its region features"
    np.savez(folder / "strings.npz", a=np.array([["a", "b"]]))
    files["strings"] = "expected a numeric array"
    np.savez(folder / "struct.npz", a=np.zeros((2, 3), dtype=[("x", "f4"), ("y", "i4")]))
    files["struct"] = "expected a numeric array"
    np.savez(folder / "huge.npz", a=np.full((2, 3), 1e300))
    files["huge"] = "beyond float32's range"
    np.savez(folder / "inf.npz", a=np.full((2, 3), np.inf))
    files["inf"] = "non-finite"
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2, 3, dtype=torch.bfloat16)}, str(folder / "bf16.safetensors"))
    files["bf16"] = "cannot read its region features"
    return {name: (next(folder.glob(f"{name}.*")), message) for name, message in files.items()}


def test_hostile_region_feature_files_are_data_errors_naming_file_and_key(tmp_path):
    image = Image.new("RGB", (8, 8))
    sample = Sample(uid="a", image=image, caption="x")
    for name, (path, message) in _bad_feature_files(tmp_path).items():
        with pytest.raises(DataError) as info:
            NpzRegionFeatures(path).for_sample(sample, [(0, 0, 8, 8), (0, 0, 2, 2)])
        text = str(info.value)
        assert str(path) in text and "key 'a'" in text and message in text, (name, text)


def test_an_object_array_file_fails_the_run_cleanly(pytester):
    uids = [f"synthetic-{i:06d}" for i in range(4)]
    np.savez(pytester.path / "obj.npz", **{u: np.array([{"x": 1}, None], dtype=object) for u in uids})
    result = pytester.runpytest("--mm-model=random:tiny-lxmert", "--mm-samples=4", "--mm-batch-size=4",
                                "-p", "no:cacheprovider", "--mm-no-cache", "--mm-region-features=obj.npz",
                                "-k", "gap_norm", "--color=no")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 1 and "Traceback" not in out and "INTERNALERROR" not in out
    assert "obj.npz: key 'synthetic-000000': cannot read its region features" in out
