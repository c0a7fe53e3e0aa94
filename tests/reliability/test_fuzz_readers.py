"""Fuzzing the readers of user files: whatever the bytes, the answer is samples or mmdiag's own error.

(The CoNLL-U reader is fuzzed in tests/data/test_conllu.py.)
"""
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmdiag.data.captions import read_coco, read_jsonl
from mmdiag.data.images import open_image
from mmdiag.data.types import Sample
from mmdiag.errors import MMDiagError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: text with what breaks naive readers: Unicode line breaks, BOMs, NULs, CRs and lone surrogates
nasty_text = st.text(st.one_of(st.characters(), st.sampled_from(["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x85",
                                                                 "\ufeff", "\x00", "\r", " "]),
                               st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)), max_size=12)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | nasty_text
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
#: what a captions line may hold: its keys with values of any JSON type, plus stray keys
records = st.fixed_dictionaries({}, optional={"image": json_values | nasty_text | st.just("a.png"),
                                              "caption": json_values | nasty_text | st.just(" a red cube "),
                                              "extra": json_values})
#: mostly well-formed records (whose text is what trips readers), sometimes anything
good_records = st.fixed_dictionaries({"image": st.sampled_from(["a.png", "dir/b.jpg", "c d.png"]) | nasty_text,
                                      "caption": nasty_text})
jsonl_lines = st.one_of(st.tuples(good_records, st.booleans()).map(lambda r: json.dumps(r[0], ensure_ascii=r[1])),
                        st.tuples(good_records, st.booleans()).map(lambda r: json.dumps(r[0], ensure_ascii=r[1])),
                        st.tuples(records, st.booleans()).map(lambda r: json.dumps(r[0], ensure_ascii=r[1])),
                        json_values.map(json.dumps), st.text(max_size=40), st.just(""), st.just("{"))


def _valid_text(value) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _expected_jsonl(data: bytes):
    """The spec: (image, caption) per non-blank line when every such line is a valid record, else None."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    out = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict):
            return None
        image, caption = record.get("image"), record.get("caption")
        if not (isinstance(image, str) and image.strip() and "\x00" not in image and _valid_text(image)):
            return None
        if not (isinstance(caption, str) and _valid_text(caption)):
            return None
        out.append((image, caption.strip()))
    return out or None


def _in_temp_file(data: bytes, name: str, reader):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return path, reader(path)
        except MMDiagError as exc:
            assert str(path) in str(exc)  # every error names the file
            return path, exc


def _check_samples(path: Path, samples) -> None:
    assert isinstance(samples, list) and samples
    for s in samples:
        assert isinstance(s, Sample) and isinstance(s.caption, str) and s.caption == s.caption.strip()
        s.caption.encode("utf-8")  # tokenizers get valid Unicode
        assert isinstance(s.image, Path) and s.image.parent.is_relative_to(path.parent.parent)


@SETTINGS
@given(st.lists(jsonl_lines, max_size=6), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_jsonl_reader_returns_samples_or_its_own_error(lines, newline, bom):
    text = ("\ufeff" if bom else "") + newline.join(lines)
    data = text.encode("utf-8", "surrogatepass")
    path, out = _in_temp_file(data, "captions.jsonl", read_jsonl)
    expected = _expected_jsonl(data)
    if expected is None:
        assert isinstance(out, MMDiagError)
    else:
        assert not isinstance(out, MMDiagError), out
        _check_samples(path, out)
        assert [(s.image, s.caption) for s in out] == [(path.parent / i, c) for i, c in expected]


@SETTINGS
@given(st.binary(max_size=200))
def test_jsonl_reader_on_arbitrary_bytes(data):
    path, out = _in_temp_file(data, "captions.jsonl", read_jsonl)
    assert isinstance(out, MMDiagError) == (_expected_jsonl(data) is None)
    if not isinstance(out, MMDiagError):
        _check_samples(path, out)


coco_images = st.lists(st.one_of(st.fixed_dictionaries({"id": json_values | st.integers(0, 5),
                                                        "file_name": json_values | nasty_text | st.just("a.jpg")}),
                                 json_values), max_size=6)
coco_annotations = st.lists(st.one_of(st.fixed_dictionaries({"image_id": json_values | st.integers(0, 5),
                                                             "caption": json_values | nasty_text}),
                                      json_values), max_size=8)
coco_docs = st.one_of(st.fixed_dictionaries({"images": coco_images, "annotations": coco_annotations}),
                      st.fixed_dictionaries({"images": json_values, "annotations": json_values}), json_values)


@SETTINGS
@given(coco_docs)
def test_coco_reader_returns_samples_or_its_own_error(doc):
    path, out = _in_temp_file(json.dumps(doc).encode("utf-8", "surrogatepass"), "captions_val2017.json", read_coco)
    if not isinstance(out, MMDiagError):
        _check_samples(path, out)
        ids = [s.uid for s in out]
        assert len(ids) == len(set(ids))  # one sample per image


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_coco_reader_on_arbitrary_bytes(data):
    path, out = _in_temp_file(data, "captions.json", read_coco)
    if not isinstance(out, MMDiagError):
        _check_samples(path, out)


def _encoded(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


VALID = [_encoded("PNG", "RGB"), _encoded("PNG", "P"), _encoded("JPEG", "RGB"), _encoded("JPEG", "CMYK"),
         _encoded("GIF", "P"), _encoded("BMP", "RGB"), _encoded("TIFF", "RGBA"), _encoded("WEBP", "RGB")]


@st.composite
def damaged_images(draw):
    """A valid encoded image with bytes flipped, cut off or inserted."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        index = draw(st.integers(0, len(data) - 1))
        data[index] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        index = draw(st.integers(0, len(data)))
        data[index:index] = draw(st.binary(max_size=16))
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged TIFF tags it skips
@settings(max_examples=80, deadline=None)
@given(damaged_images() | st.binary(max_size=64))
def test_open_image_returns_rgb_or_a_data_error(data):
    path, out = _in_temp_file(data, "image.bin", open_image)
    if not isinstance(out, MMDiagError):
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        assert np.asarray(out).dtype == np.uint8 and out.width * out.height > 0


def test_every_valid_fixture_image_opens():
    with tempfile.TemporaryDirectory() as folder:
        for i, data in enumerate(VALID):
            path = Path(folder) / f"ok{i}"
            path.write_bytes(data)
            assert open_image(path).size == (10, 12)
