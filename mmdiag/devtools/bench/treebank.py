"""Synthetic CoNLL-U treebanks of any size, for scale benchmarks of the text probes (and their tests).

Each sentence has 4-14 words drawn from a small vocabulary of common English
words (so any tokenizer keeps them whole) and a random (not necessarily projective) tree:
word ``i``'s head is a uniformly drawn earlier word or the root. The trees mean
nothing; what the bench measures (time and peak memory of the word-state
store and of probe fitting as the treebank grows) does not depend on them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["synthetic_conllu", "write_synthetic_conllu"]

VOCAB = ("the", "a", "red", "blue", "cube", "ball", "dog", "cat", "sits", "on", "under", "big", "small", "man",
         "woman", "runs", "sees", "green", "near", "table", "car", "tree", "house", "and", "with", "is")


def synthetic_conllu(n: int, seed: int = 0, min_words: int = 4, max_words: int = 14) -> str:
    """``n`` sentences in CoNLL-U: random words, heads drawn so that every sentence is one tree."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    for s in range(n):
        m = int(rng.integers(min_words, max_words + 1))
        root = int(rng.integers(m))
        order = rng.permutation(m)
        order = np.concatenate([[root], order[order != root]])  # the root first, every later word below one before
        heads = np.zeros(m, dtype=int)
        for pos in range(1, m):
            heads[order[pos]] = order[int(rng.integers(pos))] + 1
        words = rng.choice(len(VOCAB), m)
        lines.append(f"# sent_id = synthetic-{s}")
        for i in range(m):
            rel = "root" if i == root else "dep"
            lines.append("\t".join([str(i + 1), VOCAB[words[i]], VOCAB[words[i]], "NOUN", "_", "_",
                                    str(int(heads[i])), rel, "_", "_"]))
        lines.append("")
    return "\n".join(lines) + "\n"


def write_synthetic_conllu(path: Union[str, Path], n: int, seed: int = 0) -> Path:
    """Write :func:`synthetic_conllu` to ``path``; return the path."""
    out = Path(path)
    out.write_text(synthetic_conllu(n, seed), encoding="utf-8")
    return out
