"""Flickr30k Entities reader: markup, boxes, trees, scene trees and errors on hand-written fixtures."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmdiag.data.flickr30k import (SPACY_MISSING, is_flickr30k_root, parse_caption, read_annotation,
                                   read_flickr30k, spacy_parser)
from mmdiag.data.scene_tree import scene_parents
from mmdiag.data.trees import validate_heads
from mmdiag.errors import DataError

CAPTION_1000 = ("[/EN#18/people A man] in [/EN#19/clothing an orange hat] holds "
                "[/EN#20/animals/other two dogs] near [/EN#21/scene the lake] .")
WORDS_1000 = ("A", "man", "in", "an", "orange", "hat", "holds", "two", "dogs", "near", "the", "lake", ".")
#: hand-made gold parse of WORDS_1000 (1-based heads, 0 = root "holds")
HEADS_1000 = (2, 7, 2, 6, 6, 3, 0, 9, 7, 7, 12, 10, 7)

XML_1000 = """<annotation>
  <filename>1000.jpg</filename>
  <size><width>500</width><height>400</height><depth>3</depth></size>
  <object><name>18</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>110</xmax><ymax>220</ymax></bndbox></object>
  <object><name>19</name><bndbox><xmin>31</xmin><ymin>41</ymin><xmax>60</xmax><ymax>70</ymax></bndbox></object>
  <object><name>20</name><name>24</name>
    <bndbox><xmin>101</xmin><ymin>201</ymin><xmax>150</xmax><ymax>250</ymax></bndbox></object>
  <object><name>20</name><bndbox><xmin>201</xmin><ymin>151</ymin><xmax>300</xmax><ymax>260</ymax></bndbox></object>
  <object><name>21</name><nobndbox>1</nobndbox><scene>1</scene></object>
</annotation>
"""

CAPTION_99 = "[/EN#5/animals A dog] runs across [/EN#0/notvisual the yard]."
XML_99 = """<annotation><size><width>64</width><height>48</height></size>
<object><name>5</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>80</xmax><ymax>48</ymax></bndbox></object>
</annotation>"""


def fake_parser(words):
    """HEADS_1000 for that caption; otherwise a chain (word i heads word i+1, word 0 is the root)."""
    if tuple(words) == WORDS_1000:
        heads = HEADS_1000
    else:
        heads = tuple([0] + list(range(1, len(words))))
    upos = tuple("PUNCT" if w in ".,!?" else "X" for w in words)
    return heads, upos


def write_root(root: Path, captions_1000: str = CAPTION_1000 + "\nA second caption is ignored .\n",
               xml_1000: str = XML_1000) -> Path:
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Sentences" / "1000.txt").write_text(captions_1000, encoding="utf-8")
    (root / "Annotations" / "1000.xml").write_text(xml_1000, encoding="utf-8")
    (root / "Sentences" / "99.txt").write_text("\n" + CAPTION_99 + "\n", encoding="utf-8")
    (root / "Annotations" / "99.xml").write_text(XML_99, encoding="utf-8")
    (root / "flickr30k-images").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "flickr30k-images" / "99.jpg", format="JPEG")
    (root / "images").mkdir()
    Image.new("RGB", (500, 400), (10, 90, 200)).save(root / "images" / "1000.jpg", format="JPEG")
    return root


@pytest.fixture
def root(tmp_path):
    return write_root(tmp_path / "f30k")


@pytest.fixture(autouse=True)
def _fresh_spacy_cache():
    spacy_parser.cache_clear()
    yield
    spacy_parser.cache_clear()


def test_is_flickr30k_root(root, tmp_path):
    assert is_flickr30k_root(root)
    assert is_flickr30k_root(str(root))
    (tmp_path / "only_sentences" / "Sentences").mkdir(parents=True)
    assert not is_flickr30k_root(tmp_path / "only_sentences")
    assert not is_flickr30k_root(root / "Sentences" / "99.txt")
    assert not is_flickr30k_root(tmp_path / "missing")


def test_words_phrases_boxes_and_union(root):
    samples = read_flickr30k(root, parser=fake_parser, regions="union")
    assert [s.uid for s in samples] == ["flickr30k-99", "flickr30k-1000"]  # numeric order, not "1000" < "99"
    dog, big = samples

    assert big.words == WORDS_1000
    assert big.caption == " ".join(WORDS_1000)
    assert [(p.start, p.end, p.label) for p in big.phrases] == [
        (0, 2, "A man"), (3, 6, "an orange hat"), (7, 9, "two dogs")]  # entity 21 has no box: skipped
    assert big.phrases[0].box == (10.0, 20.0, 110.0, 220.0)   # VOC 1-based inclusive -> pixel edges
    assert big.phrases[1].box == (30.0, 40.0, 60.0, 70.0)
    assert big.phrases[2].box == (100.0, 150.0, 300.0, 260.0)  # union of (100,200,150,250) and (200,150,300,260)
    assert [(e["id"], e["types"], e["boxes"]) for e in big.meta["entities"]] == [
        ("18", ["people"], 1), ("19", ["clothing"], 1), ("20", ["animals", "other"], 2), ("21", ["scene"], 0)]
    assert big.meta["size"] == (500, 400)
    assert big.meta["source"].endswith("1000.txt:1")
    assert big.image == root / "images" / "1000.jpg"
    assert big.region_nodes == (1, 2, 3)  # entity 21 (no box) is scene node 4 without a region
    assert big.meta["scene_regions"] == "union"

    # regions="boxes" (the default, Milewski's): every box its own region; the two boxes of entity 20 share its
    # node; entity 24 (in the XML, not in the caption) gets a node under the image
    boxes = read_flickr30k(root, parser=fake_parser)[1]
    assert [(p.start, p.end, p.box, p.entity) for p in boxes.phrases] == [
        (0, 2, (10.0, 20.0, 110.0, 220.0), "18"), (3, 6, (30.0, 40.0, 60.0, 70.0), "19"),
        (7, 9, (100.0, 200.0, 150.0, 250.0), "20"), (7, 9, (200.0, 150.0, 300.0, 260.0), "20"),
        (0, 0, (100.0, 200.0, 150.0, 250.0), "24")]
    assert boxes.region_nodes == (1, 2, 3, 3, 5)
    assert boxes.scene_parents == (-1, 0, 1, 0, 0, 0)
    assert boxes.meta["scene_regions"] == "boxes"
    with pytest.raises(ValueError, match="accepted: boxes, union"):
        read_flickr30k(root, parser=fake_parser, regions="box")

    # glued final "." split off; notvisual entity 0 (not in the XML) skipped; box clipped to the 64x48 image
    assert dog.words == ("A", "dog", "runs", "across", "the", "yard", ".")
    assert [(p.start, p.end, p.box) for p in dog.phrases] == [(0, 2, (0.0, 0.0, 64.0, 48.0))]
    assert dog.meta["source"].endswith("99.txt:2")  # first non-blank line
    assert dog.image == root / "flickr30k-images" / "99.jpg"
    with Image.open(dog.image) as im:
        assert im.size == (64, 48)


def test_fake_parser_gives_trees_and_scene_parents(root):
    dog, big = read_flickr30k(root, parser=fake_parser)
    assert big.tree.heads == HEADS_1000
    assert big.tree.words == WORDS_1000
    assert big.tree.upos[-1] == "PUNCT"
    # "A man" (head man -> holds = root, no phrase) -> image; "an orange hat" (hat -> in -> man) -> "A man";
    # "two dogs" (dogs -> holds) -> image; "the lake" (no box: a node without a region) -> image;
    # entity 24 (not mentioned) -> image
    assert big.scene_parents == (-1, 0, 1, 0, 0, 0)
    assert big.scene_parents[:4] == scene_parents(big.tree, big.phrases[:3])
    assert dog.tree.heads == (0, 1, 2, 3, 4, 5, 6)
    # "A dog" heads the chain; the notvisual "the yard" (node 2, no box) walks up to it
    assert dog.scene_parents == (-1, 0, 1)
    assert dog.region_nodes == (1,)


def test_limit_keeps_first_images(root):
    assert [s.uid for s in read_flickr30k(root, limit=1, parser=fake_parser)] == ["flickr30k-99"]


@pytest.mark.parametrize("bad, what", [
    ("A man [/EN#18/people in a hat .", "unbalanced '['"),
    ("A man ] in a hat .", "unbalanced ']'"),
    ("[/EN#18/people A [/EN#19/clothing hat] ]", "nested '['"),
    ("[EN18 A man] runs .", "not '/EN#<id>/<type>'"),
    ("[/EN#x/people A man] runs .", "not '/EN#<id>/<type>'"),
    ("[/EN#18/people ] runs .", "has no words"),
])
def test_malformed_markup_names_file_and_line(tmp_path, bad, what):
    root = write_root(tmp_path / "r", captions_1000="\n\n" + bad + "\n")
    with pytest.raises(DataError) as info:
        read_flickr30k(root, parser=fake_parser)
    assert info.value.path == str(root / "Sentences" / "1000.txt")
    assert info.value.line == 3
    assert what in str(info.value)
    assert "1000.txt:3: " in str(info.value)


def test_malformed_xml_names_file_and_line(tmp_path):
    root = write_root(tmp_path / "r", xml_1000="<annotation>\n<size><width>5</width></size>\n<object>\n</annotation>")
    with pytest.raises(DataError, match="malformed XML") as info:
        read_flickr30k(root, parser=fake_parser)
    assert info.value.path == str(root / "Annotations" / "1000.xml")
    assert info.value.line == 4


@pytest.mark.parametrize("bndbox, what", [
    ("<xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>", "has no <ymax>"),
    ("<xmin>a</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>", "not a number"),
    ("<xmin>9</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>", "xmax < xmin"),
])
def test_bad_bndbox(tmp_path, bndbox, what):
    xml = f"<annotation><object><name>18</name><bndbox>{bndbox}</bndbox></object></annotation>"
    root = write_root(tmp_path / "r", xml_1000=xml)
    with pytest.raises(DataError, match=what) as info:
        read_flickr30k(root, parser=fake_parser)
    assert info.value.path == str(root / "Annotations" / "1000.xml")


def test_missing_annotation_file(root):
    (root / "Annotations" / "1000.xml").unlink()
    with pytest.raises(DataError, match="annotation file is missing") as info:
        read_flickr30k(root, parser=fake_parser)
    assert info.value.path == str(root / "Annotations" / "1000.xml")


def test_not_a_root_and_empty_inputs(tmp_path, root):
    with pytest.raises(DataError, match="not a Flickr30k Entities root"):
        read_flickr30k(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    (empty / "Sentences").mkdir(parents=True)
    (empty / "Annotations").mkdir()
    with pytest.raises(DataError, match="no <image_id>.txt"):
        read_flickr30k(empty)
    (root / "Sentences" / "99.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no caption") as info:
        read_flickr30k(root, parser=fake_parser)
    assert info.value.path == str(root / "Sentences" / "99.txt")


def test_parser_output_is_validated(root):
    with pytest.raises(ValueError, match="not a tree"):
        read_flickr30k(root, parser=lambda w: ([0] * len(w), ["X"] * len(w)))
    with pytest.raises(ValueError, match="heads and"):
        read_flickr30k(root, parser=lambda w: ([0], ["X"]))


def test_without_spacy_trees_are_none(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # `import spacy` now raises ImportError
    assert spacy_parser() is None
    samples = read_flickr30k(root)
    assert all(s.tree is None and s.scene_parents == () for s in samples)
    assert [len(s.phrases) for s in samples] == [1, 5]  # phrases (one per box) do not need a parser
    assert "pip install spacy" in SPACY_MISSING and "en_core_web_sm" in SPACY_MISSING


def test_spacy_model_missing_gives_none(monkeypatch):
    fake = types.ModuleType("spacy")

    def load(name):
        raise OSError(f"[E050] Can't find model '{name}'")

    fake.load = load
    tokens = types.ModuleType("spacy.tokens")
    tokens.Doc = object
    monkeypatch.setitem(sys.modules, "spacy", fake)
    monkeypatch.setitem(sys.modules, "spacy.tokens", tokens)
    assert spacy_parser() is None


def _fake_spacy(monkeypatch, sent_heads):
    """A stand-in spaCy whose only pipe sets token heads to ``sent_heads`` (0-based, self = sentence root)."""
    class Tok:
        def __init__(self, doc, i, text):
            self.doc, self.i, self.text, self.pos_ = doc, i, text, "PUNCT" if text == "." else "NOUN"

        @property
        def head(self):
            return self.doc.toks[self.doc.heads[self.i]]

    class Doc:
        def __init__(self, vocab, words):
            self.toks = [Tok(self, i, w) for i, w in enumerate(words)]
            self.heads = list(range(len(words)))

        def __iter__(self):
            return iter(self.toks)

    calls = []

    def parser_pipe(doc):
        calls.append([t.text for t in doc])
        doc.heads = list(sent_heads)
        return doc

    nlp = types.SimpleNamespace(vocab=object(), pipeline=[("tagger", lambda d: d), ("parser", parser_pipe)])
    fake = types.ModuleType("spacy")
    fake.load = lambda name: nlp
    tokens = types.ModuleType("spacy.tokens")
    tokens.Doc = Doc
    monkeypatch.setitem(sys.modules, "spacy", fake)
    monkeypatch.setitem(sys.modules, "spacy.tokens", tokens)
    return calls


def test_spacy_conversion_joins_sentence_roots(monkeypatch):
    # two spaCy sentences: "dogs run ." (root 1) and "cats sleep ." (root 4)
    calls = _fake_spacy(monkeypatch, [1, 1, 1, 4, 4, 4])
    parse = spacy_parser()
    heads, upos, xpos = parse(["dogs", "run", ".", "cats", "sleep", "."])
    assert xpos == ["_"] * 6  # this stand-in sets no tag_
    assert calls == [["dogs", "run", ".", "cats", "sleep", "."]]  # the given words, not re-tokenised
    assert heads == [2, 0, 2, 5, 2, 5]  # later root "sleep" attached to the first root "run"
    validate_heads(heads)
    assert upos == ["NOUN", "NOUN", "PUNCT", "NOUN", "NOUN", "PUNCT"]


def test_read_uses_spacy_when_available(root, monkeypatch):
    _fake_spacy(monkeypatch, [6, 6, 6, 6, 6, 6, 6])  # 7 words of the dog caption all under "."
    dog = read_flickr30k(root, limit=1)[0]
    assert dog.tree.heads == (7, 7, 7, 7, 7, 7, 0)
    assert dog.scene_parents == (-1, 0, 0)


def test_real_spacy_if_installed(root):
    if spacy_parser() is None:
        pytest.skip(SPACY_MISSING)
    for s in read_flickr30k(root):
        validate_heads(s.tree.heads)
        assert len(s.tree) == len(s.words)
        assert len(s.scene_parents) >= 1 + max(s.region_nodes, default=0)


def test_read_annotation_direct(root):
    size, boxes = read_annotation(root / "Annotations" / "1000.xml")
    assert size == (500, 400)
    assert boxes["24"] == [(100.0, 200.0, 150.0, 250.0)]  # an object naming two entities boxes both
    assert len(boxes["20"]) == 2 and "21" not in boxes


_word = st.text(alphabet="abcdefgh,;!?'-", min_size=1, max_size=6).filter(lambda w: w[-1] not in ",;!?")
_segment = st.tuples(st.booleans(), st.lists(_word, min_size=1, max_size=4), st.integers(0, 999),
                     st.lists(st.sampled_from(["people", "clothing", "other", "scene"]), min_size=1, max_size=2))


@settings(max_examples=40, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=6), st.sampled_from([" ", "  ", "\t"]))
def test_markup_round_trip(segments, sep):
    """Building a marked-up caption from known words and spans and parsing it back gives them again."""
    parts, words, spans = [], [], []
    for is_phrase, ws, ent, typs in segments:
        if is_phrase:
            parts.append(f"[/EN#{ent}/{'/'.join(typs)} {sep.join(ws)}]")
            spans.append((len(words), len(words) + len(ws), str(ent), tuple(typs)))
        else:
            parts.append(sep.join(ws))
        words.extend(ws)
    got_words, got_marks = parse_caption(sep.join(parts))
    assert got_words == words
    assert got_marks == spans


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=5),
       st.lists(st.sampled_from(list(",;:!?")), max_size=3), st.booleans())
def test_glued_punctuation_is_split(ws, punct, final_dot):
    tail = "".join(punct) + ("." if final_dot else "")
    line = " ".join(ws) + tail
    got, _ = parse_caption(line)
    assert got == ws + list(tail)
    assert parse_caption(" ".join(got))[0] == got  # already tokenised text is kept as is
