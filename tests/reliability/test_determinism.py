"""Same inputs, same results; and nothing is lost: reports are written atomically and survive interruption."""
import json
import os
import shutil
from pathlib import Path

import pytest

from mmdiag.report import jsonio

# -- determinism -----------------------------------------------------------------------------------------------------

CHECKS = "cone or gap or uniformity or rankme or cka or alignment or entropy"


def _comparable(doc: dict) -> dict:
    """Everything of results.json that must repeat: results (values, statuses, details), fingerprints, series."""
    return {"model": {k: doc["model"].get(k) for k in ("spec", "family", "n_params", "fingerprint")},
            "data": doc["data"], "results": doc["results"], "series": doc["series"]}


@pytest.mark.slow
def test_same_spec_data_seed_and_device_give_identical_results(mmrun, pytester):
    fast = ("--mm-model=random:tiny-clip", "--mm-samples=12", "--mm-batch-size=5", "--mm-device=cpu",
            "-p", "no:cacheprovider", "-k", CHECKS)
    _, first, out1 = mmrun("--mm-no-cache", fast=fast)
    _, second, out2 = mmrun("--mm-no-cache", fast=fast)
    assert first is not None and second is not None, out1 + out2
    assert len(first["results"]) >= 20
    assert [r["value"] for r in first["results"]] == [r["value"] for r in second["results"]]
    assert _comparable(first) == _comparable(second)
    assert first["model"]["fingerprint"] and first["data"]["fingerprint"]
    # ...and the comparison is not vacuous: another seed gives another model and other values
    _, other, _ = mmrun("--mm-no-cache", "--mm-seed=1", fast=fast)
    assert other["model"]["fingerprint"] != first["model"]["fingerprint"]
    assert [r["value"] for r in other["results"]] != [r["value"] for r in first["results"]]


def test_data_fingerprint_follows_image_content_not_location(tmp_path, rel):
    from mmdiag.data.load import data_fingerprint, load_samples

    folder = tmp_path / "a"
    folder.mkdir()
    names = rel.write_images(folder, 3)
    rel.write_jsonl(folder / "captions.jsonl", [{"image": n, "caption": f"cube {i}"} for i, n in enumerate(names)])
    original = data_fingerprint(load_samples(str(folder), 3))
    copy = tmp_path / "b"
    shutil.copytree(folder, copy)
    assert data_fingerprint(load_samples(str(copy), 3)) == original  # same data elsewhere: same fingerprint
    rel.write_images(copy, 1, seed=7)  # replace img00.png by another picture, captions unchanged
    changed = data_fingerprint(load_samples(str(copy), 3))
    assert changed != original  # so the activation cache cannot serve the old image's activations
    (copy / "img01.png").unlink()
    assert data_fingerprint(load_samples(str(copy), 3)) not in (original, changed)


def test_synthetic_and_noise_data_are_seeded():
    from mmdiag.data.load import data_fingerprint, load_samples

    for spec in ("synthetic", "noise"):
        a, b = load_samples(spec, 6, seed=3), load_samples(spec, 6, seed=3)
        assert data_fingerprint(a) == data_fingerprint(b)
        assert data_fingerprint(load_samples(spec, 6, seed=4)) != data_fingerprint(a)


# -- nothing is lost: atomic writes -------------------------------------------------------------------------------

def _leftovers(folder: Path, keep: str) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    jsonio.atomic_write_text(target, '{"old": true}\n')

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        jsonio.atomic_write_text(target, '{"new": true}\n')
    assert target.read_text() == '{"old": true}\n'
    assert _leftovers(tmp_path, "results.json") == []  # no temp file left behind


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
def test_atomic_write_interrupted_mid_write_leaves_no_half_file(tmp_path, monkeypatch, error):
    target = tmp_path / "report.html"
    jsonio.atomic_write_text(target, "<p>previous</p>")
    real_fdopen = os.fdopen

    class Failing:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, text):
            self.handle.write(text[: len(text) // 2])  # half of it reaches the temp file, then the failure
            self.handle.flush()
            raise error

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Failing(real_fdopen(fd, *a, **k)))
    with pytest.raises(type(error)):
        jsonio.atomic_write_text(target, "<p>" + "new " * 1000 + "</p>")
    assert target.read_text() == "<p>previous</p>"
    assert _leftovers(tmp_path, "report.html") == []


def test_write_json_is_strict_json_and_atomic(tmp_path):
    import numpy as np
    import torch

    target = tmp_path / "nested" / "results.json"
    jsonio.write_json({"results": [{"value": float("nan")}, {"value": float("inf")}],
                       "arr": np.arange(3), "t": torch.tensor(2.5), "tup": (1, 2)}, target)
    doc = json.loads(target.read_text())  # json.loads would accept NaN; the file must not contain it
    assert "NaN" not in target.read_text() and "Infinity" not in target.read_text()
    assert doc == {"results": [{"value": None}, {"value": None}], "arr": [0, 1, 2], "t": 2.5, "tup": [1, 2]}
    assert jsonio.read_json(target)["arr"] == [0, 1, 2]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_write_json_survives_unusual_detail_values(tmp_path):
    target = tmp_path / "results.json"
    jsonio.write_json({"results": [{"details": {"layers": {2, 1}, "file": Path("a/b.png")}}]}, target)
    details = json.loads(target.read_text())["results"][0]["details"]
    assert details == {"layers": [1, 2], "file": "a/b.png"}


@pytest.mark.parametrize("content, fragment", [
    (None, "cannot read results JSON"),
    ("{", "malformed JSON"),
    ('{"schema": "mmdiag/1"}', 'no "results" key'),
    ("[1, 2]", 'no "results" key'),
], ids=["missing", "malformed", "no-results", "not-an-object"])
def test_read_json_errors_name_the_file(tmp_path, content, fragment):
    from mmdiag.errors import DataError

    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=fragment) as info:
        jsonio.read_json(path)
    assert info.value.path == str(path)


def test_interrupted_run_still_writes_what_it_has(pytester):
    """Ctrl-C after some checks ran: the JSON and HTML reports hold those checks' results."""

    class CtrlC:
        seen = 0

        def pytest_runtest_teardown(self, item, nextitem):
            self.seen += 1
            if self.seen == 2:
                raise KeyboardInterrupt

    result = pytester.runpytest("--mm-model=random:tiny-clip", "--mm-samples=6", "--mm-batch-size=6",
                                "-p", "no:cacheprovider", "--mm-report-dir=out", "-k", "cone_final or gap_norm",
                                plugins=[CtrlC()], no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    doc = json.loads((pytester.path / "out" / "results.json").read_text())
    assert [r["check"] for r in doc["results"]] == ["cone.final", "cone.final"]
    assert all(r["value"] is not None for r in doc["results"])
    assert "cone.final" in (pytester.path / "out" / "report.html").read_text()
    assert _leftovers(pytester.path / "out", "results.json") == ["report.html"]
