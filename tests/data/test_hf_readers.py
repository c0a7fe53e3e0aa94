"""Hugging Face datasets readers: save_to_disk directories, parquet files and hf:NAME from the local cache."""
import glob
import os

import pytest

datasets = pytest.importorskip("datasets")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from mmdiag.data.columns import ColumnSpec, parse_columns  # noqa: E402
from mmdiag.data.hf import read_hub, read_saved  # noqa: E402
from mmdiag.data.images import open_image  # noqa: E402
from mmdiag.data.load import load_samples  # noqa: E402
from mmdiag.data.types import EncodedImage  # noqa: E402
from mmdiag.errors import DataError, SpecError  # noqa: E402

LIST = getattr(datasets, "List", None) or datasets.Sequence  # datasets >= 4 names it List
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
FEATURES = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})


def _dataset(png, n=4, captions=None):
    rows = {"image": [{"bytes": png(COLOURS[i % 4]), "path": None} for i in range(n)],
            "text": captions or [f"caption {i}" for i in range(n)]}
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def test_save_to_disk_directory_reads_images_as_bytes_and_finds_the_columns(tmp_path, png):
    _dataset(png).save_to_disk(str(tmp_path / "ds"))
    samples = load_samples(str(tmp_path / "ds"), 3)
    assert [s.caption for s in samples] == ["caption 0", "caption 1", "caption 2"]
    assert all(isinstance(s.image, EncodedImage) for s in samples)
    assert open_image(samples[1].image).getpixel((0, 0)) == COLOURS[1]
    assert samples[0].meta["source"].endswith("ds row 0")


def test_save_to_disk_datasetdict_needs_a_split_when_it_has_several(tmp_path, png):
    dd = datasets.DatasetDict({"train": _dataset(png, 2), "test": _dataset(png, 3)})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(SpecError, match=r"2 splits \(train, test\).*/SPLIT"):
        read_saved(tmp_path / "dd", ColumnSpec(), 10)
    assert len(load_samples(str(tmp_path / "dd" / "test"), 10)) == 3


def test_parquet_file_and_directory_stream_up_to_the_limit(tmp_path, png):
    folder = tmp_path / "pq"
    folder.mkdir()
    _dataset(png, 3).to_parquet(str(folder / "a.parquet"))
    _dataset(png, 3, captions=["d", "e", "f"]).to_parquet(str(folder / "b.parquet"))
    assert [s.caption for s in load_samples(str(folder), 5)] == ["caption 0", "caption 1", "caption 2", "d", "e"]
    one = load_samples(str(folder / "b.parquet"), 10)
    assert [s.uid for s in one] == ["b:0", "b:1", "b:2"]
    assert open_image(one[2].image).getpixel((3, 3)) == COLOURS[2]


def test_plain_parquet_with_path_column_is_read_relative_to_the_file(tmp_path, png):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png(COLOURS[3]))
    pq.write_table(pa.table({"where": ["img/a.png"], "alt": ["a yellow square"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"no image column found.*'where', 'alt'"):
        load_samples(str(tmp_path / "t.parquet"), 2)
    samples = load_samples(str(tmp_path / "t.parquet"), 2, columns=parse_columns("image=where,caption=alt"))
    assert samples[0].image == tmp_path / "img" / "a.png" and samples[0].caption == "a yellow square"


def test_named_column_that_does_not_exist_lists_the_columns(tmp_path, png):
    _dataset(png, 2).to_parquet(str(tmp_path / "a.parquet"))
    with pytest.raises(DataError, match=r"caption column 'caption'.*its columns: 'image', 'text'") as info:
        load_samples(str(tmp_path / "a.parquet"), 2, columns=parse_columns("caption=caption"))
    assert str(tmp_path / "a.parquet") in str(info.value)


def test_a_list_caption_column_gives_every_caption_of_the_image(tmp_path, png):
    features = datasets.Features({"image": datasets.Image(), "sentences": LIST(datasets.Value("string"))})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": png(c), "path": None} for c in COLOURS[:2]],
                                     "sentences": [["a", "b", "c"], ["d", "e"]]}, features=features)
    ds.save_to_disk(str(tmp_path / "multi"))
    samples = load_samples(str(tmp_path / "multi"), 10)
    assert [s.caption for s in samples] == ["a", "b", "c", "d", "e"]
    assert [s.meta["image_key"] for s in samples] == ["multi:0"] * 3 + ["multi:1"] * 2
    assert samples[0].image is samples[2].image  # one image object, shared by its captions


def _cache_dataset(png, cache, name):
    """Put ``name`` (ORG/NAME) into a datasets cache as load_dataset would have, with no network."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    source = cache / "src.parquet"
    _dataset(png, 3).to_parquet(str(source))
    org, short = name.split("/")
    builder = Parquet(cache_dir=str(cache / "build"), dataset_name=short, data_files={"validation": str(source)},
                      hash="0" * 16)
    builder.download_and_prepare()
    built = glob.glob(str(cache / "build" / short / "default-*"))[0]
    os.makedirs(cache / f"{org}___{short}")
    os.rename(built, cache / f"{org}___{short}" / "default")


def test_hub_name_is_read_from_the_local_cache_offline(tmp_path, png, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    _cache_dataset(png, tmp_path, "someone/tiny")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # the reader turns it on itself
    original, seen = datasets.load_dataset, []

    def spy(*args, **kwargs):
        seen.append(datasets.config.HF_HUB_OFFLINE)
        return original(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    samples = load_samples("hf:someone/tiny:validation", 2)
    assert seen == [True]
    assert [s.caption for s in samples] == ["caption 0", "caption 1"]
    assert datasets.config.HF_HUB_OFFLINE is False  # restored afterwards
    assert len(read_hub("hf:someone/tiny", ColumnSpec(), 10)) == 3  # the only split
    with pytest.raises(SpecError, match="Unknown split"):
        read_hub("hf:someone/tiny:train", ColumnSpec(), 10)


def test_hub_name_not_in_the_cache_is_a_usage_error_that_says_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(SpecError, match=r"someone/absent is not in the local datasets cache .*offline"):
        load_samples("hf:someone/absent", 2)


@pytest.mark.parametrize("spec", ["hf:", "hf: x", "hf::test"])
def test_bad_hub_specs_say_the_format(spec):
    with pytest.raises(SpecError, match="expected hf:NAME or hf:NAME:SPLIT"):
        load_samples(spec, 2)


def test_encoded_image_decodes_like_a_file(png):
    image = open_image(EncodedImage(png((1, 2, 3), (5, 4)), "x"))
    assert isinstance(image, Image.Image) and image.size == (5, 4) and image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize("module, spec", [("datasets", "hf:someone/tiny"), ("webdataset", "x.tar")])
def test_missing_library_is_a_usage_error_naming_the_extra(tmp_path, monkeypatch, module, spec):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, f"{module}.tariterators", None)
    if spec.endswith(".tar"):
        (tmp_path / spec).write_bytes(b"")
        spec = str(tmp_path / spec)
    with pytest.raises(SpecError, match=r"not installed: pip install 'mmdiag\[data\]'"):
        load_samples(spec, 2)
