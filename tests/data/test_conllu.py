"""Tests of the CoNLL-U reader mmdiag.data.conllu."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mmdiag.data.conllu import parse_conllu, read_conllu
from mmdiag.data.types import DepTree
from mmdiag.errors import DataError


def row(i, form, upos, head, rel="dep"):
    return "\t".join([str(i), form, form.lower(), upos, "_", "_", str(head), rel, "_", "_"])


GOOD = "\n".join([
    "# sent_id = 1",
    "# text = Vámonos al mar.",
    "1-2\tVámonos\t_\t_\t_\t_\t_\t_\t_\t_",
    row(1, "Vamos", "VERB", 0, "root"),
    row(2, "nos", "PRON", 1, "obj"),
    "3-4\tal\t_\t_\t_\t_\t_\t_\t_\t_",
    row(3, "a", "ADP", 5, "case"),
    row(4, "el", "DET", 5, "det"),
    row(5, "mar", "NOUN", 1, "obl"),
    "5.1\tfue\tir\tVERB\t_\t_\t_\t_\t1:conj\t_",
    row(6, ".", "PUNCT", 1, "punct"),
    "",
    "# sent_id = 2",
    row(1, "Hola", "INTJ", 0, "root"),
    "",
    "",
])


def test_multiword_tokens_and_empty_nodes_are_skipped(tmp_path):
    p = tmp_path / "good.conllu"
    p.write_text(GOOD, encoding="utf-8")
    trees = read_conllu(p)
    assert len(trees) == 2
    t = trees[0]
    assert isinstance(t, DepTree)
    assert t.words == ("Vamos", "nos", "a", "el", "mar", ".")
    assert t.heads == (0, 1, 5, 5, 1, 1)
    assert t.upos == ("VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT")
    assert t.deprels == ("root", "obj", "case", "det", "obl", "punct")
    assert trees[1] == DepTree(("Hola",), (0,), ("INTJ",), ("root",), ("_",))  # one word kept; XPOS "_" as written


def test_crlf_bom_and_no_trailing_blank_line(tmp_path):
    p = tmp_path / "crlf.conllu"
    text = "\r\n".join([row(1, "a", "X", 2), row(2, "b", "X", 0)])
    p.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (t,) = read_conllu(p)
    assert t.heads == (2, 0) and t.words == ("a", "b")


def _lines(*rows):
    return "\n".join(["# c", *rows, ""])


@pytest.mark.parametrize("text, line, fragment", [
    (_lines(row(1, "a", "X", 0), "2\tb\tb\tX\t_\t_\t1\tdep\t_"), 3, "10 tab-separated"),
    (_lines(row(1, "a", "X", 0), "2 b b X _ _ 1 dep _ _"), 3, "10 tab-separated"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", "x")), 3, "HEAD 'x'"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", "_")), 3, "HEAD '_'"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", 3)), 3, "0..2"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", -1)), 3, "HEAD '-1'"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", 3), row(3, "c", "X", 2)), 3, "cycle"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", 2)), 3, "cycle"),
    (_lines(row(1, "a", "X", 0), row(2, "b", "X", 0)), 3, "2 roots"),
    (_lines(row(1, "a", "X", 2), row(2, "b", "X", 1)), 2, "no root"),
    (_lines(row(1, "a", "X", 0), row(3, "b", "X", 1)), 3, "out of sequence"),
    (_lines(row(2, "a", "X", 0)), 2, "expected 1"),
    (_lines(row(1, "a", "X", 0), row("x", "b", "X", 1)), 3, "is not a word ID"),
    (_lines(row(1, "a", "X", 0), row("3-2", "b", "X", 1)), 3, "range"),
    (_lines("1-2\tab\t_\t_\t_\t_\t_\t_\t_\t_"), 2, "no word lines"),
])
def test_malformed_sentences_name_the_line(tmp_path, text, line, fragment):
    p = tmp_path / "bad.conllu"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_conllu(p)
    assert exc.value.line == line
    assert exc.value.path == str(p)
    assert f"{p}:{line}: " in str(exc.value)
    assert fragment in str(exc.value)


def test_errors_in_later_sentence_use_file_line_numbers():
    text = "\n".join([row(1, "a", "X", 0), "", "# x", row(1, "b", "X", 0), row(2, "c", "X", 9)])
    with pytest.raises(DataError) as exc:
        parse_conllu(text, path="mem")
    assert exc.value.line == 5 and str(exc.value).startswith("mem:5: ")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "  \n\t\n"])
def test_no_sentences(text, tmp_path):
    p = tmp_path / "empty.conllu"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="no sentences"):
        read_conllu(p)


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_conllu(tmp_path / "missing.conllu")
    p = tmp_path / "latin1.conllu"
    p.write_bytes(row(1, "a", "X", 0).encode() + b"\n" + row(2, "\xe9", "X", 1).encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8") as exc:
        read_conllu(p)
    assert exc.value.line == 2


# ---------------------------------------------------------------- fuzzing

@st.composite
def conllu_like(draw):
    """Mostly well-formed CoNLL-U with random corruptions, or arbitrary text."""
    if draw(st.booleans()):
        return draw(st.text(max_size=200))
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        n = draw(st.integers(1, 5))
        for i in range(1, n + 1):
            head = draw(st.one_of(st.integers(-1, n + 1),
                                  st.sampled_from(["_", "x", "1.5", ""])))
            ident = draw(st.one_of(st.just(str(i)),
                                   st.sampled_from([f"{i}-{i + 1}", f"{i}.1", "0", "a"])))
            cols = [ident, draw(st.text(max_size=4)), "_", "NOUN", "_", "_", str(head),
                    "dep", "_", "_"]
            if draw(st.integers(0, 9)) == 0:
                cols = cols[:draw(st.integers(0, 9))]
            lines.append("\t".join(cols))
        lines.append(draw(st.sampled_from(["", "# c", " "])))
    return "\n".join(lines)


@settings(max_examples=50, deadline=None)
@given(conllu_like())
def test_fuzz_returns_trees_or_data_error(text):
    try:
        trees = parse_conllu(text)
    except DataError as exc:
        assert exc.path == "<string>"
        return
    assert trees and all(isinstance(t, DepTree) for t in trees)
    for t in trees:
        n = len(t.words)
        assert len(t.heads) == len(t.upos) == len(t.deprels) == n
        assert sum(h == 0 for h in t.heads) == 1
        assert all(0 <= h <= n for h in t.heads)
