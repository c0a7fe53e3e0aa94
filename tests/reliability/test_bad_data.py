"""Bad data gets a clear answer: captions files, images, long/empty captions and treebanks.

Unit tests call the readers directly; the end-to-end ones run the plugin in-process
(pytester) on a tiny random CLIP and read results.json.
"""
import json
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from mmdiag.data import images as images_mod
from mmdiag.data.captions import read_coco, read_jsonl
from mmdiag.data.images import open_image, to_rgb
from mmdiag.data.load import load_samples
from mmdiag.errors import DataError, MMDiagError, SpecError


# -- captions JSONL -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lines, line, fragment", [
    (['{"image": "a.png", "caption": "x"}', '{"image": "b.png", "caption": "y"'], 2, "malformed JSON"),
    (['{"image": "a.png", "caption": "x"}', "", "[1, 2]"], 3, "expected a JSON object, got list"),
    (['{"caption": "no image"}'], 1, '"image"'),
    (['{"image": "", "caption": "empty image"}'], 1, '"image"'),
    (['{"image": 3, "caption": "numeric image"}'], 1, '"image"'),
    (['{"image": "a.png"}'], 1, '"caption"'),
    (['{"image": "a.png", "caption": null}'], 1, '"caption"'),
    (['{"image": "a.png", "caption": "ok"}', '{"image": "b.png", "caption": "\\ud800"}'], 2, "surrogate"),
    (["[" * 100_000], 1, "malformed JSON"),
    (['{"image": "a.png", "caption": ' + "1" * 5000 + "}"], 1, "malformed JSON"),
], ids=["unclosed", "list", "no-image", "empty-image", "numeric-image", "no-caption", "null-caption", "surrogate",
        "deep-nesting", "huge-int"])
def test_jsonl_errors_name_file_and_line(tmp_path, lines, line, fragment):
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert info.value.path == str(path) and info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ") and fragment in str(info.value)
    if "malformed" in fragment:
        assert '{"image": "relative/path.jpg", "caption": "..."}' in str(info.value)  # says what is accepted


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_empty_jsonl_is_a_data_error_naming_the_file(tmp_path, text):
    path = tmp_path / "captions.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="no samples") as info:
        read_jsonl(path)
    assert info.value.path == str(path)


def test_jsonl_encoding_errors_name_the_line(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_bytes(b'{"image": "a.png", "caption": "ok"}\n{"image": "b.png", "caption": "\xff"}\n')
    with pytest.raises(DataError, match="UTF-8") as info:
        read_jsonl(path)
    assert info.value.line == 2


def test_jsonl_bom_crlf_and_unicode_line_separators(tmp_path):
    """A BOM (Windows editors), CRLF endings and U+2028 inside a caption are all valid JSONL."""
    path = tmp_path / "captions.jsonl"
    rows = [json.dumps({"image": "a.png", "caption": "first\u2028line"}, ensure_ascii=False),
            json.dumps({"image": "b.png", "caption": "second\x0bone"})]
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    samples = read_jsonl(path)
    assert [s.caption for s in samples] == ["first\u2028line", "second\x0bone"]
    assert [s.uid for s in samples] == ["captions.jsonl:1", "captions.jsonl:2"]
    assert samples[0].image == tmp_path / "a.png"


def test_jsonl_limit_and_blank_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(['{"image": "%d.png", "caption": "c%d"}' % (i, i) if i % 2 else "" for i in range(9)]))
    samples = read_jsonl(path, limit=3)
    assert [s.caption for s in samples] == ["c1", "c3", "c5"]
    assert samples[1].meta["source"] == f"{path}:4"


# -- COCO captions ---------------------------------------------------------------------------------------------------

def test_coco_reader_keeps_every_caption_and_skips_unusable_entries(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": [2], "file_name": "b.jpg"}, {"id": 3},
                      "junk", {"id": True, "file_name": "t.jpg"}, {"id": "s4", "file_name": "d.jpg"}],
           "annotations": [{"image_id": 1, "caption": " first "}, {"image_id": 1, "caption": "second"},
                           {"image_id": [2], "caption": "unhashable id"}, {"image_id": {"x": 1}, "caption": "dict"},
                           {"image_id": 3, "caption": "no file"}, 7, {"image_id": "s4", "caption": 5},
                           {"image_id": "s4", "caption": "string id"}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(doc))
    samples = read_coco(path)
    assert [(s.uid, s.caption, s.image.name) for s in samples] == [("coco-1", "first", "a.jpg"),
                                                                    ("coco-1#1", "second", "a.jpg"),
                                                                    ("coco-s4", "string id", "d.jpg")]
    assert [s.meta["image_key"] for s in samples] == ["coco-1", "coco-1", "coco-s4"]


@pytest.mark.parametrize("text, fragment", [
    ('{"images": [], "annotations": [}', "malformed JSON"),
    ('{"images": {}, "annotations": []}', "not a COCO captions file"),
    ("[]", "not a COCO captions file"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}', "no image with a caption"),
    ("[" * 100_000, "malformed JSON"),
], ids=["malformed", "images-not-list", "top-level-list", "no-captions", "deep-nesting"])
def test_coco_errors_name_the_file(tmp_path, text, fragment):
    path = tmp_path / "captions_val.json"
    path.write_text(text)
    with pytest.raises(DataError, match=fragment) as info:
        read_coco(path)
    assert info.value.path == str(path)


def test_data_spec_errors(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(SpecError, match="no captions.jsonl"):
        load_samples(str(tmp_path / "d"), 4)
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(SpecError, match="unknown file type '.txt'"):
        load_samples(str(tmp_path / "c.txt"), 4)
    with pytest.raises(SpecError, match="no such file"):
        load_samples(str(tmp_path / "none.jsonl"), 4)


# -- images ------------------------------------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (its data is a few bytes): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def _good(tmp_path, suffix):
    arr = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    path = tmp_path / f"good{suffix}"
    Image.fromarray(arr).save(path)
    return path


def _write(path, data):
    path.write_bytes(data)
    return path


BAD_IMAGES = {
    "missing": (lambda d: d / "missing.png", "not found"),
    "directory": (lambda d: d, "not a regular file"),
    "empty": (lambda d: _write(d / "empty.jpg", b""), "cannot read image"),
    "text": (lambda d: _write(d / "text.png", b"not an image"), "cannot read image"),
    "truncated-jpeg": (lambda d: _write(d / "cut.jpg", _good(d, ".jpg").read_bytes()[:600]), "(?i)truncated"),
    "truncated-png": (lambda d: _write(d / "cut.png", _good(d, ".png").read_bytes()[:900]), "truncated"),
    "bomb-header": (lambda d: _write(d / "bomb.png", _png_header(30_000, 30_000)), "too large"),
    # 90 Mpx: above mmdiag's 64 Mpx limit and Pillow's 89 Mpx warning level, below its 179 Mpx error level
    "above-limit": (lambda d: _write(d / "big.png", _png_header(10_000, 9_000)), "10000x9000, above the 64,000,000"),
}


@pytest.mark.parametrize("make, fragment", list(BAD_IMAGES.values()), ids=list(BAD_IMAGES))
def test_unreadable_images_are_data_errors_naming_the_file(tmp_path, make, fragment):
    path = make(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=fragment) as info:
            open_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    # mmdiag enforces its own pixel limit, so Pillow's DecompressionBombWarning must not leak out
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_huge_image_limit_is_clear(tmp_path, monkeypatch):
    path = _good(tmp_path, ".png")
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 48 * 48 - 1)
    with pytest.raises(DataError, match=r"48x48, above the 2,303-pixel limit"):
        open_image(path)
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 48 * 48)
    assert open_image(path).size == (48, 48)


def _saved(tmp_path, image, name):
    path = tmp_path / name
    image.save(path)
    return path


def test_image_modes_become_8bit_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    cases = {
        "gray.png": base.convert("L"),
        "bilevel.png": base.convert("1"),
        "palette.png": base.convert("P"),
        "cmyk.jpg": base.convert("CMYK"),
        "ycbcr.jpg": base.convert("YCbCr"),
        "rgba.png": base.convert("RGBA"),
        "la.png": base.convert("LA"),
        "tiff32.tif": base.convert("I"),
        "float.tif": base.convert("F"),
    }
    for name, image in cases.items():
        out = open_image(_saved(tmp_path, image, name))
        assert out.mode == "RGB" and out.size == (20, 16), name
    # grayscale stays grayscale: the three channels are equal and equal to the L values
    gray = np.asarray(open_image(tmp_path / "gray.png"))
    assert (gray[..., 0] == np.asarray(base.convert("L"))).all() and (gray[..., 0] == gray[..., 2]).all()
    # CMYK round trip keeps the colours (JPEG loss aside)
    cmyk = np.asarray(open_image(tmp_path / "cmyk.jpg"), dtype=float)
    assert np.abs(cmyk - np.asarray(base.convert("CMYK").convert("RGB"), dtype=float)).mean() < 12


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (10, 20, 30, 0))      # fully transparent -> white
    rgba.putpixel((1, 0), (10, 20, 30, 255))    # opaque -> itself
    assert np.asarray(to_rgb(rgba)).reshape(-1, 3).tolist() == [[255, 255, 255], [10, 20, 30]]
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    assert np.asarray(to_rgb(pal)).reshape(-1, 3).tolist() == [[255, 255, 255], [200, 0, 0]]
    for mode in ("La", "PA", "RGBa", "LA"):
        assert to_rgb(Image.new(mode, (3, 2))).mode == "RGB", mode


def test_16bit_images_keep_their_brightness(tmp_path):
    """16-bit PNGs are scaled by 255/65535 (not stretched to their own maximum)."""
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # Pillow opens 16-bit grey as I;16 (or I)
    out = np.asarray(open_image(path))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    dark = np.full((2, 2), 1000, dtype=np.uint16)  # a dark 16-bit image stays dark
    assert np.asarray(to_rgb(Image.fromarray(dark))).max() == 4
    flt = Image.fromarray(np.array([[np.nan, 0.0, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(flt))[0, :, 0].tolist() == [0, 0, 255]


def test_open_image_leaves_no_file_open(tmp_path):
    path = _good(tmp_path, ".png")
    img = open_image(path)
    path.unlink()  # the pixels were read: the image outlives its file
    assert np.asarray(img).shape == (48, 48, 3)


# -- captions longer than the context, empty captions -------------------------------------------------------------

def test_long_captions_are_truncated_keeping_the_end_token_and_counted(tiny_clip):
    from mmdiag.data.types import Sample
    from mmdiag.models.dual import tokenize_captions

    adapter = tiny_clip
    bos, eos, pad = adapter.special_ids()
    samples = [Sample(uid="l", image=None, caption=" ".join(["red"] * 200)),
               Sample(uid="e", image=None, caption=""), Sample(uid="s", image=None, caption="a red cube")]
    text = tokenize_captions(adapter.tokenizer, samples, 77, bos_id=bos, eos_id=eos, pad_id=pad)
    assert text.truncated == 1 and text.input_ids.shape[1] == 77
    row = text.input_ids[0]
    assert int(row[0]) == bos and int(row[-1]) == eos  # the pooled EOS token survives truncation
    assert int(text.word_ids[0].max()) == 74  # 75 of the 200 one-token words fit between BOS and EOS
    assert int(text.attention_mask[1].sum()) == 2 and int(text.word_ids[1].max()) == -1  # empty: BOS EOS only


def test_truncation_count_is_per_record_call():
    from mmdiag.data.types import Sample
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    adapter = load_adapter("random:tiny-clip", "cpu")
    image = Image.new("RGB", (8, 8))
    samples = [Sample(uid="l", image=image, caption=" ".join(["cube"] * 200)), Sample(uid="s", image=image,
                                                                                    caption="a cube")]
    assert record(adapter, samples, 2).truncated_captions == 1
    assert record(adapter, samples, 2).truncated_captions == 1


def test_odd_captions_and_image_modes_end_to_end(mmrun, rel, image_folder):
    """Long, empty and blank captions and images in every common mode run through the whole pipeline."""
    rgb = Image.open(image_folder / "img00.png").convert("RGB")
    arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    odd = {"gray.png": rgb.convert("L"), "alpha.png": rgb.convert("RGBA"), "palette.gif": rgb.convert("P"),
           "cmyk.jpg": rgb.convert("CMYK"), "deep.png": Image.fromarray(arr16), "bilevel.png": rgb.convert("1"),
           "tall.png": rgb.resize((9, 70))}
    for name, image in odd.items():
        image.save(image_folder / name)
    captions = [" ".join(["red"] * 200), "", "   "] + [f"a ball {i}" for i in range(5)]
    rel.write_jsonl(image_folder / "captions.jsonl",
                    [{"image": n, "caption": c} for n, c in zip(["img00.png", *odd], captions)])
    result, doc, output = mmrun(f"--mm-data={image_folder}", "-k", "gap_norm or cone_final")
    assert doc is not None, output
    assert doc["data"]["n"] == 8 and doc["data"]["truncated_captions"] == 1 and doc["data"]["skipped_samples"] == 0
    values = {(r["check"], r["params"].get("modality")): r for r in doc["results"]}
    assert values[("cone.final", "text")]["value"] is not None and values[("gap.norm", None)]["value"] is not None
    assert values[("cone.final", "image")]["value"] is not None
    assert {r["status"] for r in doc["results"]} <= {"pass", "warn", "fail", "info"}
    rel.assert_no_traceback(output)


# -- bad data end to end ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, fragment", [
    ("", "captions.jsonl: no samples"),
    ('{"image": "img00.png", "caption": "ok"}\n{"image": "img01.png", "caption": }\n', "captions.jsonl:2: malformed"),
    ('{"image": "img00.png"}\n', 'captions.jsonl:1: missing or non-string "caption"'),
    ('{"caption": "where is the picture"}\n', 'captions.jsonl:1: missing, empty or non-string "image"'),
], ids=["empty", "malformed", "no-caption", "no-image"])
def test_bad_captions_file_fails_the_checks_cleanly(mmrun, rel, image_folder, content, fragment):
    (image_folder / "captions.jsonl").write_text(content, encoding="utf-8")
    result, doc, output = mmrun(f"--mm-data={image_folder / 'captions.jsonl'}", "-k", "gap_norm or cone_final")
    assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.USAGE_ERROR)
    assert fragment in output
    rel.assert_no_traceback(output)
    if doc is not None:  # a failure while the checks run: every selected check is an error with the message
        assert doc["results"] and all(r["status"] == "error" and fragment in r["message"] for r in doc["results"])


def test_data_directory_without_captions_is_a_usage_error(pytester, tmp_path):
    result = pytester.runpytest("--mm-model=random:tiny-clip", f"--mm-data={tmp_path}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--mm-data='{tmp_path}': the directory has no captions.jsonl*accepted*"])


def _break_images(folder):
    (folder / "img01.png").unlink()                                       # missing
    (folder / "img03.png").write_bytes((folder / "img03.png").read_bytes()[:200])   # truncated PNG
    (folder / "img05.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")      # corrupt
    return {"img01.png", "img03.png", "img05.png"}


def test_bad_images_fail_the_run_naming_the_file(mmrun, rel, image_folder):
    _break_images(image_folder)
    result, doc, output = mmrun(f"--mm-data={image_folder}", "-k", "gap_norm or cone_final")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "img01.png: image file not found" in output  # the first bad sample stops the forward pass
    rel.assert_no_traceback(output)
    assert doc is not None and all(r["status"] == "error" and "img01.png" in r["message"] for r in doc["results"])


def test_skip_bad_samples_goes_on_and_counts_them(mmrun, rel, image_folder):
    bad = _break_images(image_folder)
    result, doc, output = mmrun(f"--mm-data={image_folder}", "--mm-skip-bad-samples", "-k", "gap_norm or cone_final")
    assert doc is not None, output
    assert doc["data"]["skipped_samples"] == 3 and doc["data"]["n"] == 5
    assert {entry.split(": ")[1].rsplit("/", 1)[-1] for entry in doc["data"]["skipped"]} == bad
    assert all(r["value"] is not None for r in doc["results"])
    rel.assert_no_traceback(output)


def test_all_samples_bad_is_a_clear_error(tmp_path, tiny_clip):
    from mmdiag.data.types import Sample
    from mmdiag.record import record

    samples = [Sample(uid=f"s{i}", image=tmp_path / f"none{i}.png", caption="x") for i in range(3)]
    with pytest.raises(DataError, match="no usable sample: all 3 were skipped"):
        record(tiny_clip, samples, 2, skip_bad=True)


# -- treebanks -------------------------------------------------------------------------------------------------------

def _row(i, form, head, rel="dep"):
    return "\t".join([str(i), form, form, "NOUN", "_", "_", str(head), rel, "_", "_"])


def test_one_word_sentences_are_kept_but_not_probed(tmp_path, tiny_clip):
    from mmdiag.analyses.probes import text_probe_set
    from mmdiag.data.conllu import read_conllu
    from mmdiag.data.types import Sample
    from mmdiag.record import record

    path = tmp_path / "tb.conllu"
    path.write_text("\n".join([_row(1, "hello", 0, "root"), "", _row(1, "red", 2), _row(2, "cube", 0, "root"), "",
                               _row(1, "hi", 0, "root"), ""]))
    trees = read_conllu(path)
    assert [len(t.words) for t in trees] == [1, 2, 1]
    samples = [Sample(uid=str(i), image=None, caption=" ".join(t.words), words=t.words, tree=t)
               for i, t in enumerate(trees)]
    acts = record(tiny_clip, samples, 3, words=True)
    assert acts.word_counts == [1, 2, 1]
    pset = text_probe_set(acts, samples)
    assert pset is not None and pset.kept == [1] and pset.data.n_sentences == 1


@pytest.mark.parametrize("rows, line, fragment", [
    ([_row(1, "the", 2), _row(2, "dog", 5, "root")], 2, "HEAD '5'"),
], ids=["head-out-of-range"])
def test_bad_treebank_is_a_clean_failure_naming_file_and_line(mmrun, rel, tmp_path, rows, line, fragment):
    path = tmp_path / "bad.conllu"
    path.write_text("\n".join(rows) + "\n\n")
    result, doc, output = mmrun(f"--mm-treebank={path}", "-k", "probe_depth and text-L01")
    assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.USAGE_ERROR)
    assert f"{path}:{line}: " in output and fragment in output
    rel.assert_no_traceback(output)


def test_data_failure_output_has_no_chained_exception_banner(mmrun, rel, image_folder):
    (image_folder / "captions.jsonl").write_text("", encoding="utf-8")
    result, doc, output = mmrun(f"--mm-data={image_folder}", "-k", "gap_norm")
    assert "no samples" in output
    rel.assert_no_traceback(output, chained=True)


def test_mmdiag_errors_share_one_base():
    assert issubclass(DataError, MMDiagError) and issubclass(SpecError, MMDiagError)
