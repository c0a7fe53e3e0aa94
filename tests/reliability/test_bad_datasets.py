"""Bad files in the table, dataset and shard formats: each error names the file, row, shard or key, and what is wrong.

The end-to-end runs check that these are usage errors (exit 4, one line, no traceback) raised before the model
runs, and that a good file in each format runs the whole suite.
"""
import csv
import json

import pytest

datasets = pytest.importorskip("datasets")
pytest.importorskip("webdataset")
import pyarrow as pa  # noqa: E402  (imported before pytester runs, which would drop it otherwise)
import pyarrow.parquet as pq  # noqa: E402
import webdataset.tariterators  # noqa: E402, F401

from mmdiag.data.images import open_image  # noqa: E402
from mmdiag.data.load import load_samples  # noqa: E402
from mmdiag.errors import DataError  # noqa: E402
from tests.data.builders import png_bytes, write_tar  # noqa: E402


def _png(colour=(200, 10, 10)) -> bytes:
    return png_bytes(colour, (24, 24))


_tar = write_tar


def _parquet(path, images, captions):
    pq.write_table(pa.table({"image": images, "caption": captions}), path)
    return path


# -- parquet and save_to_disk ----------------------------------------------------------------------------------------

def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(DataError, match=r"x.parquet: not a readable parquet file"):
        load_samples(str(tmp_path / "x.parquet"), 4)


def test_a_truncated_parquet_file_is_named(tmp_path):
    good = _parquet(tmp_path / "g.parquet", [_png()] * 3, ["a", "b", "c"]).read_bytes()
    (tmp_path / "t.parquet").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"t.parquet: not a readable parquet file"):
        load_samples(str(tmp_path / "t.parquet"), 4)


@pytest.mark.parametrize("images, captions, fragment", [
    ([_png(), None], ["a", "b"], r"row 1 column 'image': the image cell holds nothing \(null\)"),
    ([_png(), b""], ["a", "b"], r"row 1 column 'image': the image cell is empty"),
    (["a.png", "https://example.org/a.jpg"], ["a", "b"], r"row 1 column 'image': the image is a URL"),
    ([_png(), _png()], ["a", None], r"row 1 column 'caption': the caption cell holds nothing"),
    ([_png(), _png()], ["a", "  "], r"row 1 column 'caption': the caption is empty"),
], ids=["null-image", "empty-bytes", "url", "null-caption", "blank-caption"])
def test_a_bad_parquet_cell_names_the_file_row_and_column(tmp_path, images, captions, fragment):
    path = _parquet(tmp_path / "d.parquet", images, captions)
    with pytest.raises(DataError, match=fragment) as info:
        load_samples(str(path), 4)
    assert str(path) in str(info.value)


def test_undecodable_image_bytes_name_the_row_when_opened(tmp_path):
    path = _parquet(tmp_path / "d.parquet", [_png(), b"not an image at all"], ["a", "b"])
    samples = load_samples(str(path), 4)
    with pytest.raises(DataError, match=r"d.parquet row 1 column 'image': cannot read image"):
        open_image(samples[1].image)


def test_parquet_files_with_different_columns_are_refused(tmp_path):
    _parquet(tmp_path / "a.parquet", [_png()], ["x"])
    pq.write_table(pa.table({"image": [_png()], "text": ["y"]}), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b.parquet: its columns differ from the first file's"):
        load_samples(str(tmp_path), 4)


def test_a_damaged_save_to_disk_directory_is_named(tmp_path):
    ds = datasets.Dataset.from_dict({"image": [{"bytes": _png(), "path": None}], "caption": ["x"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "caption": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    for arrow in (tmp_path / "ds").glob("*.arrow"):
        arrow.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"ds: cannot read the saved dataset"):
        load_samples(str(tmp_path / "ds"), 4)


# -- webdataset shards -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("members, fragment", [
    ({"k.txt": b"no image"}, r"key 'k' has no image \(members: txt\)"),
    ({"k.jpg": _png()}, r"key 'k'.*no caption \(members: jpg\)"),
    ({"k.jpg": _png(), "k.json": b"{not json"}, r"key 'k'.*k.json is not valid JSON"),
    ({"k.jpg": _png(), "k.json": b'{"url": "x"}'}, r"k.json has no caption key"),
    ({"k.jpg": _png(), "k.txt": b"\xff\xfe bad"}, r"k.txt is not UTF-8 text"),
    ({"k.jpg": b"", "k.txt": b"empty"}, r"key 'k': k.jpg is empty"),
    ({"k.jpg": _png(), "k.txt": b"a", "k.JPG": _png()}, r"not a readable webdataset shard.*duplicate"),
], ids=["no-image", "no-caption", "bad-json", "json-without-caption", "bad-utf8", "empty-image", "duplicate"])
def test_a_bad_key_names_the_shard_and_the_key(tmp_path, members, fragment):
    shard = _tar(tmp_path / "shard-000000.tar", {"a.jpg": _png(), "a.txt": b"fine", **members})
    with pytest.raises(DataError, match=fragment) as info:
        load_samples(str(shard), 8)
    assert str(shard) in str(info.value)


def test_a_truncated_shard_is_named(tmp_path):
    data = _tar(tmp_path / "s.tar", {f"{k}.{ext}": (_png() if ext == "png" else b"c")
                                     for k in range(4) for ext in ("png", "txt")}).read_bytes()
    (tmp_path / "s.tar").write_bytes(data[: len(data) // 2 + 7])
    with pytest.raises(DataError, match=r"s.tar: not a readable webdataset shard"):
        load_samples(str(tmp_path / "s.tar"), 8)


def test_undecodable_image_in_a_shard_names_shard_and_member(tmp_path):
    shard = _tar(tmp_path / "s.tar", {"k.jpg": b"garbage", "k.txt": b"x"})
    (sample,) = load_samples(str(shard), 4)
    with pytest.raises(DataError, match=r"s.tar:k.jpg: cannot read image"):
        open_image(sample.image)


# -- CSV / TSV -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, fragment", [
    ("image,caption\na.png,one\na.png\n", 3, "the row has 1 fields, the header 2"),
    ("image,caption\na.png,\"unterminated\n", 2, "malformed CSV"),
    ("image,caption\na.png,\n", 2, "the caption is empty"),
    ("\n", 1, "no header row"),
    ("image,caption\n", None, "no rows after the header"),
], ids=["short-row", "bad-quote", "empty-caption", "no-header", "no-rows"])
def test_a_bad_csv_row_names_the_file_and_line(tmp_path, text, line, fragment):
    (tmp_path / "a.png").write_bytes(_png())
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=fragment) as info:
        load_samples(str(path), 4)
    assert str(info.value).startswith(f"{path}:{line}" if line else f"{path}:")


def test_a_csv_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"image,caption\na.png,caf\xe9\n")
    with pytest.raises(DataError, match=r"t.csv:2: not valid UTF-8"):
        load_samples(str(path), 4)


# -- end to end: usage errors before the model runs, and a good file of each kind runs ------------------------------

def _good_files(tmp_path):
    rng_colours = [(i * 30 % 256, i * 70 % 256, i * 110 % 256) for i in range(8)]
    (tmp_path / "img").mkdir()
    for i, colour in enumerate(rng_colours):
        (tmp_path / "img" / f"{i}.png").write_bytes(_png(colour))
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["file", "text"]] + [[f"img/{i}.png", f"a square number {i}"]
                                                            for i in range(8)])
    _parquet(tmp_path / "p.parquet", [_png(c) for c in rng_colours], [f"a square {i}" for i in range(8)])
    _tar(tmp_path / "s.tar", {name: data for i, c in enumerate(rng_colours)
                              for name, data in ((f"{i:04d}.png", _png(c)), (f"{i:04d}.txt", f"square {i}".encode()))})
    return {"csv": tmp_path / "t.csv", "parquet": tmp_path / "p.parquet", "webdataset": tmp_path / "s.tar"}


def test_each_format_runs_the_suite_and_a_bad_column_is_a_usage_error(pytester, tmp_path, rel, usage_line):
    files = _good_files(tmp_path)
    for kind, path in files.items():
        result = pytester.runpytest(*rel.FAST, f"--mm-data={path}", "--mm-json=out.json", "--mm-bootstrap=0")
        assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), (kind, result.stdout.str())
        doc = json.loads((pytester.path / "out.json").read_text())
        assert doc["data"]["n"] == 8, kind
    result = pytester.runpytest(*rel.FAST, f"--mm-data={files['parquet']}", "--mm-data-columns=caption=alt")
    line = usage_line(result)
    assert "p.parquet: --mm-data-columns names caption column 'alt'" in line and "'image', 'caption'" in line
    line = usage_line(pytester.runpytest(*rel.FAST, f"--mm-data={files['csv']}", "--mm-data-columns=img"))
    assert "--mm-data-columns='img': cannot read 'img'" in line
    line = usage_line(pytester.runpytest(*rel.FAST, "--mm-data=synthetic", "--mm-data-columns=image=x"))
    assert "--mm-data='synthetic' has no columns to choose" in line
    line = usage_line(pytester.runpytest(*rel.FAST, f"--mm-data={tmp_path}/s-{{0..3}}.tar"))
    assert "4 of its 4 shards do not exist" in line
