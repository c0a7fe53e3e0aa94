"""Reader for Universal Dependencies treebanks in CoNLL-U format.

Format (https://universaldependencies.org/format.html): one word per line with
10 tab-separated columns ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS
MISC``; sentences are separated by blank lines; lines starting with ``#`` are
comments.  Multi-word token lines (ID a range such as ``3-4``) and empty nodes
(ID a decimal such as ``5.1``) are skipped: the probes score syntactic words
only.  Each sentence is validated — IDs ``1..n`` in order, HEAD an integer in
``0..n``, exactly one root (HEAD 0), no cycle — and any violation raises
:class:`~mmdiag.errors.DataError` naming ``path:line`` and what is accepted.
One-word sentences are kept (the probes skip them later).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

from mmdiag.data.files import read_regular_bytes
from mmdiag.data.types import DepTree
from mmdiag.errors import DataError

__all__ = ["read_conllu", "parse_conllu"]

_INT = re.compile(r"[0-9]+\Z")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)\Z")
_EMPTY = re.compile(r"[0-9]+\.[0-9]+\Z")


def read_conllu(path: Union[str, Path], limit: Optional[int] = None) -> list[DepTree]:
    """Read every sentence of the CoNLL-U file ``path`` (UTF-8, BOM allowed), or its first ``limit``.

    Raises :class:`DataError` when the file cannot be read or decoded, holds no
    sentence, or a sentence is malformed (see :func:`parse_conllu`).
    """
    p = Path(path)
    data = read_regular_bytes(p, "CoNLL-U file")  # a FIFO or a device is refused, never read
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError("not valid UTF-8 text; a CoNLL-U treebank must be UTF-8 encoded",
                        path=p, line=line) from None
    return parse_conllu(text, path=str(p), limit=limit)


def parse_conllu(text: str, path: str = "<string>", limit: Optional[int] = None) -> list[DepTree]:
    """Parse CoNLL-U ``text`` into one :class:`DepTree` per sentence (the first ``limit`` only, when given:
    the lines after the last one kept are neither parsed nor validated).

    ``path`` only names the source in error messages.  Lines may end in
    ``\\n`` or ``\\r\\n``; a line of only whitespace separates sentences;
    comment lines (``#`` first) are ignored.  Raises :class:`DataError` with
    ``path:line`` for a token line without exactly 10 tab-separated columns, an
    ID that is not an integer, a range ``a-b`` or a decimal ``a.b``, word IDs
    out of sequence, a HEAD that is not an integer in ``0..n``, a sentence
    without a root or with two, a cycle, a sentence of only multi-word tokens
    or empty nodes, and for text without any sentence ("no sentences").
    """
    trees: list[DepTree] = []
    block: list[tuple[int, list[str]]] = []  # (line number, columns) of words
    block_start = 0
    has_tokens = False

    def close() -> None:
        nonlocal block, has_tokens
        if block:
            trees.append(_build_tree(block, path))
        elif has_tokens:
            raise DataError("sentence has multi-word tokens or empty nodes but no "
                            "word lines (IDs 1..n)", path=path, line=block_start)
        block = []
        has_tokens = False

    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            close()
            if limit is not None and len(trees) >= limit:
                break
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataError(f"expected 10 tab-separated columns (ID FORM LEMMA UPOS XPOS "
                            f"FEATS HEAD DEPREL DEPS MISC), got {len(cols)}",
                            path=path, line=lineno)
        if not has_tokens:
            block_start = lineno
            has_tokens = True
        tok_id = cols[0]
        if _INT.match(tok_id):
            expected = len(block) + 1
            if int(tok_id) != expected:
                raise DataError(f"word ID {tok_id} out of sequence; expected {expected} "
                                f"(word IDs run 1..n in order)", path=path, line=lineno)
            block.append((lineno, cols))
        elif _RANGE.match(tok_id):
            a, b = (int(x) for x in _RANGE.match(tok_id).groups())
            if not 1 <= a < b:
                raise DataError(f"multi-word token range {tok_id!r} is not a-b with "
                                f"1 <= a < b", path=path, line=lineno)
        elif _EMPTY.match(tok_id):
            continue
        else:
            raise DataError(f"ID {tok_id!r} is not a word ID (1, 2, ...), a multi-word "
                            f"range (3-4) or an empty node (5.1)", path=path, line=lineno)
    if limit is None or len(trees) < limit:
        close()
    if not trees:
        raise DataError("no sentences", path=path)
    return trees


def _build_tree(block: list[tuple[int, list[str]]], path: str) -> DepTree:
    n = len(block)
    heads: list[int] = []
    for lineno, cols in block:
        h = cols[6]
        if not _INT.match(h) or not 0 <= int(h) <= n:
            raise DataError(f"HEAD {h!r} is not an integer in 0..{n} (0 = root, else the "
                            f"ID of a word of this sentence)", path=path, line=lineno)
        heads.append(int(h))
    roots = [k for k, h in enumerate(heads) if h == 0]
    if not roots:
        raise DataError("sentence has no root; exactly one word must have HEAD 0",
                        path=path, line=block[0][0])
    if len(roots) > 1:
        raise DataError(f"sentence has {len(roots)} roots (words {roots[0] + 1} and "
                        f"{roots[1] + 1}); exactly one word must have HEAD 0",
                        path=path, line=block[roots[1]][0])
    # cycle check: every word must reach the root within n steps
    state = [0] * n  # 0 unseen, 1 on the current path, 2 reaches the root
    for start in range(n):
        path_nodes = []
        k = start
        while k >= 0 and state[k] == 0:
            state[k] = 1
            path_nodes.append(k)
            k = heads[k] - 1
        if k >= 0 and state[k] == 1:
            raise DataError(f"HEAD relation has a cycle through word {k + 1}; heads must "
                            f"form a tree rooted at the HEAD-0 word",
                            path=path, line=block[k][0])
        for node in path_nodes:
            state[node] = 2
    return DepTree(
        words=tuple(cols[1] for _, cols in block),
        heads=tuple(heads),
        upos=tuple(cols[3] for _, cols in block),
        deprels=tuple(cols[7] for _, cols in block),
        xpos=tuple(cols[4] for _, cols in block),
    )
