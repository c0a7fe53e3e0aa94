"""Control tasks for structural probes (Hewitt & Liang, EMNLP 2019, arXiv:1909.03368).

A control task gives each word *type* a random structure, fixed across the
corpus, so that selectivity = probe score - control score tells apart what the
representation encodes from what a probe can memorise about word identities:
:func:`control_depths` (a random depth per type), :func:`control_heads` (a
random attachment behaviour per type, made into a tree) and
:func:`control_distances` (the tree distances of those trees).  Each draw is a
hash of ``(seed, type)``, so it does not depend on the order or the split in
which the sentences are processed.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence, Union

import numpy as np
import torch

from mmdiag.metrics.probe_trees import tree_distances

__all__ = ["control_depths", "control_heads", "control_distances"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def _type_uniform(word: str, seed: int, salt: str) -> float:
    """A deterministic uniform number in [0, 1) for (word type, seed)."""
    h = hashlib.blake2b(f"{seed}\x00{salt}\x00{word}".encode("utf-8", "surrogatepass"),
                        digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def control_depths(words: Sequence[Sequence[str]], seed: int,
                   gold_depths: Optional[Sequence[ArrayLike]] = None,
                   max_depth: int = 10) -> list[np.ndarray]:
    """Control depth targets (after Hewitt & Liang 2019, arXiv:1909.03368).

    Each word *type* (exact form) gets one fixed random depth, the same in
    every sentence: drawn from the empirical distribution of ``gold_depths``
    (pooled over the corpus) when given, else uniformly from ``0..max_depth``.
    The draw is a hash of ``(seed, type)``, so a type gets the same depth
    whether the corpus is processed whole or split by split (as long as
    ``gold_depths`` is the same pooled sample).
    """
    pool = None
    if gold_depths is not None:
        pool = np.sort(np.concatenate([np.asarray(g, dtype=np.float64).ravel()
                                       for g in gold_depths]))
        if pool.size == 0:
            raise ValueError("control_depths: gold_depths is empty")
    out = []
    for sent in words:
        u = np.array([_type_uniform(w, seed, "depth") for w in sent])
        if pool is not None:
            out.append(pool[np.minimum((u * pool.size).astype(np.int64), pool.size - 1)])
        else:
            out.append(np.floor(u * (max_depth + 1)).astype(np.float64))
    return out


def control_heads(words: Sequence[Sequence[str]], seed: int) -> list[np.ndarray]:
    """Control trees: each word type has a fixed random attachment behaviour.

    Adapted from Hewitt & Liang's dependency control task (attach to itself,
    the first or the last word), made into a tree: the first word is the root;
    the last word attaches to the first; every other word attaches, according
    to its type's behaviour (drawn from ``(seed, type)``), to the previous
    word, the first word or the last word.  Returns 1-based heads (0 = root).
    """
    out = []
    for sent in words:
        n = len(sent)
        heads = np.zeros(n, dtype=np.int64)
        for i in range(1, n):
            if i == n - 1:
                heads[i] = 1
                continue
            b = int(_type_uniform(sent[i], seed, "attach") * 3)
            heads[i] = (i, 1, n)[b]  # 1-based: previous word, first word, last word
        out.append(heads)
    return out


def control_distances(words: Sequence[Sequence[str]], seed: int) -> list[np.ndarray]:
    """Control distance targets: tree distances of :func:`control_heads`."""
    return [tree_distances(h) for h in control_heads(words, seed)]
