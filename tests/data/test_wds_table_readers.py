"""webdataset shards (file, directory, brace pattern) and CSV/TSV tables, on files built here."""
import csv
import json

import pytest

pytest.importorskip("webdataset")

from mmdiag.data.columns import parse_columns  # noqa: E402
from mmdiag.data.images import open_image  # noqa: E402
from mmdiag.data.load import load_samples  # noqa: E402
from mmdiag.data.types import EncodedImage  # noqa: E402
from mmdiag.errors import DataError, SpecError  # noqa: E402


def _shards(tmp_path, png, tar_writer, n_shards=3, per_shard=4):
    folder = tmp_path / "shards"
    folder.mkdir()
    for s in range(n_shards):
        members = {}
        for k in range(per_shard):
            key = f"{s:05d}{k:04d}"
            members[f"{key}.jpg" if k % 2 else f"{key}.png"] = png((s * 40, k * 40, 0))
            if k == 3:
                members[f"{key}.json"] = json.dumps({"caption": f"json {s}-{k}", "url": "x"}).encode()
            else:
                members[f"{key}.txt"] = f"text {s}-{k}".encode()
                members[f"{key}.json"] = json.dumps({"caption": "not used: txt wins"}).encode()
        tar_writer(folder / f"shard-{s:06d}.tar", members)
    return folder


def test_one_shard_reads_txt_or_json_captions_and_image_bytes(tmp_path, png, tar_writer):
    folder = _shards(tmp_path, png, tar_writer)
    samples = load_samples(str(folder / "shard-000001.tar"), 10)
    assert [s.caption for s in samples] == ["text 1-0", "text 1-1", "text 1-2", "json 1-3"]
    assert [s.uid for s in samples][0] == "shard-000001:000010000"
    assert isinstance(samples[2].image, EncodedImage)
    assert open_image(samples[2].image).getpixel((0, 0)) == (40, 80, 0)


def test_directory_and_brace_pattern_stream_in_order_and_stop_at_the_limit(tmp_path, png, tar_writer):
    folder = _shards(tmp_path, png, tar_writer)
    from_dir = load_samples(str(folder), 6)
    assert [s.caption for s in from_dir] == ["text 0-0", "text 0-1", "text 0-2", "json 0-3", "text 1-0", "text 1-1"]
    pattern = str(folder / "shard-{000001..000002}.tar")
    assert [s.caption for s in load_samples(pattern, 100)][:5] == ["text 1-0", "text 1-1", "text 1-2", "json 1-3",
                                                                   "text 2-0"]
    assert len(load_samples(pattern, 100)) == 8


def test_streaming_never_opens_shards_past_the_limit(tmp_path, png, tar_writer):
    folder = _shards(tmp_path, png, tar_writer, n_shards=2)
    (folder / "shard-000001.tar").write_bytes(b"this shard is broken")
    assert len(load_samples(str(folder), 4)) == 4  # the broken second shard is never read
    with pytest.raises(DataError, match="shard-000001.tar: not a readable webdataset shard"):
        load_samples(str(folder), 5)


def test_brace_pattern_with_missing_shards_names_the_first(tmp_path, png, tar_writer):
    folder = _shards(tmp_path, png, tar_writer, n_shards=2)
    with pytest.raises(SpecError, match=r"1 of its 3 shards do not exist \(first: .*shard-000002.tar\)"):
        load_samples(str(folder / "shard-{000000..000002}.tar"), 10)


def test_a_json_caption_list_gives_several_captions_of_one_image(tmp_path, png, tar_writer):
    tar_writer(tmp_path / "a.tar", {"k1.jpg": png(), "k1.json": json.dumps({"captions": ["x", "y"]}).encode(),
                                    "k2.jpg": png(), "k2.txt": b"z"})
    samples = load_samples(str(tmp_path / "a.tar"), 10)
    assert [(s.caption, s.meta["image_key"]) for s in samples] == [("x", "a:k1"), ("y", "a:k1"), ("z", "a:k2")]


def _csv(path, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def test_csv_and_tsv_paths_are_relative_to_the_table(tmp_path, png):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png((9, 9, 9)))
    (tmp_path / "img" / "b.png").write_bytes(png((7, 7, 7)))
    rows = [["filepath", "caption"], ["img/a.png", "a grey, dark square"], ["img/b.png", "line one\nline two"],
            ["img/a.png", "the same image again"]]
    for name, sep in (("t.csv", ","), ("t.tsv", "\t")):
        samples = load_samples(str(_csv(tmp_path / name, rows, sep)), 10)
        assert [s.caption for s in samples] == ["a grey, dark square", "line one\nline two", "the same image again"]
        assert samples[0].image == tmp_path / "img" / "a.png"
        assert samples[0].meta["image_key"] == samples[2].meta["image_key"] != samples[1].meta["image_key"]
        assert samples[1].meta["source"] == f"{tmp_path / name}:3"


def test_csv_columns_named_by_the_option_and_unknown_ones_listed(tmp_path, png):
    (tmp_path / "a.png").write_bytes(png())
    path = _csv(tmp_path / "t.csv", [["pic", "words", "other"], ["a.png", "red", "-"]])
    samples = load_samples(str(path), 2, columns=parse_columns("image=pic,caption=words"))
    assert samples[0].caption == "red"
    with pytest.raises(DataError, match=r"image column 'photo'.*its columns: 'pic', 'words', 'other'"):
        load_samples(str(path), 2, columns=parse_columns("image=photo,caption=words"))


def test_csv_image_outside_the_folder_is_refused_unless_allowed(tmp_path, png):
    (tmp_path / "out.png").write_bytes(png())
    inner = tmp_path / "inner"
    inner.mkdir()
    path = _csv(inner / "t.csv", [["image", "caption"], ["../out.png", "escaping"]])
    with pytest.raises(DataError, match=r"resolves outside the data directory.*--mm-allow-outside-data"):
        load_samples(str(path), 2)
    assert load_samples(str(path), 2, allow_outside=True)[0].image == inner / "../out.png"


@pytest.mark.parametrize("raw, fragment", [
    ("image", "cannot read 'image'"), ("image=a,image=b", "image is given twice"), ("picture=a", "cannot read"),
    ("caption=", "cannot read"),
])
def test_bad_column_options_say_the_format(raw, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_columns(raw)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CAPTION = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), min_size=1,
                   max_size=40).filter(lambda t: t.strip() == t and t)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_CAPTION, min_size=1, max_size=6), st.sampled_from([",", "\t"]))
def test_any_caption_written_by_csv_reads_back_unchanged(tmp_path, captions, delimiter):
    path = tmp_path / ("t.csv" if delimiter == "," else "t.tsv")
    rows = [["image", "caption"]] + [[f"{i}.png", c] for i, c in enumerate(captions)]
    _csv(path, rows, delimiter)
    assert [s.caption for s in load_samples(str(path), 100)] == captions


def test_reader_benchmark_prints_a_row_per_format(capsys):
    from mmdiag.data.bench import main

    assert main(["12"]) == 0
    out = capsys.readouterr().out
    for name in ("csv", "parquet", "save_to_disk", "webdataset"):
        row = next(line for line in out.splitlines() if line.startswith(name))
        assert row.split()[1] == "12"
