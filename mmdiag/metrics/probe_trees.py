"""Gold structure for structural probes: tree depths and distances from dependency heads.

The probes of Hewitt & Manning (NAACL 2019, john-hewitt/structural-probes) are
trained and scored against two targets derived from a dependency tree: each
word's depth (edges to the root) and each pair's tree distance (edges between
them).  Heads follow the CoNLL-U convention (1-based, 0 = root).  Kept apart
from the metrics because both the metric modules (:mod:`.probe_scores`,
:mod:`.probe_recovery`) and probe training (:mod:`mmdiag.probing`) read it.

Also here: the punctuation filter that root accuracy and UUAS share. Hewitt's
code (structural-probes ``reporter.py``, and Milewski's ``dist_matrix_to_edges``
in multimodal-probes ``probing_project/utils.py``) leaves out words whose PTB
XPOS is one of seven tags, :data:`PTB_PUNCT`; the UD alternative is UPOS
``PUNCT``, which also covers e.g. EWT's ``HYPH`` and ``NFP``
(``--mm-probe-punctuation=ptb|upos``, default ``ptb``: :func:`punctuation_tags`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["PUNCT", "PTB_PUNCT", "PUNCT_TAGS", "PUNCTUATION", "check_heads", "keep_mask", "punctuation_tags",
           "tree_depths", "tree_distances"]

#: UPOS tag of the words excluded from root accuracy and UUAS under ``--mm-probe-punctuation=upos``.
PUNCT = "PUNCT"
#: Hewitt's seven PTB punctuation tags (structural-probes reporter.py; Milewski's utils.dist_matrix_to_edges)
PTB_PUNCT = frozenset({"''", ",", ".", ":", "``", "-LRB-", "-RRB-"})
#: every tag :func:`keep_mask` treats as punctuation: a UPOS list or a PTB XPOS list can be passed alike
#: (no UPOS tag is a PTB punctuation tag and no PTB tag is ``PUNCT``)
PUNCT_TAGS = PTB_PUNCT | {PUNCT}
#: the punctuation conventions, the default first: ``ptb`` (Hewitt's and Milewski's code) or ``upos`` (UD)
PUNCTUATION = ("ptb", "upos")


def _tagged(tags: Sequence[str], n: int) -> bool:
    """One tag per word and not all of them blank (``_`` / empty: the column is unannotated)."""
    return n > 0 and len(tags) == n and not all(str(t) in ("", "_") for t in tags)


def punctuation_tags(upos: Sequence[str], xpos: Sequence[str], n: int, convention: str = "ptb"
                     ) -> tuple[Optional[tuple[str, ...]], str]:
    """The tags one sentence's punctuation is read from, and which they are: ``(tags, "ptb"|"upos"|"none")``.

    ``convention="ptb"``: the XPOS tags (punctuation = :data:`PTB_PUNCT`), or the UPOS tags when the sentence
    has no XPOS; ``"upos"``: the UPOS tags (punctuation = ``PUNCT``), or the XPOS tags when it has no UPOS.
    A sentence with neither gives ``(None, "none")``: no word of it is excluded. Decided per sentence, so one
    untagged tree never switches the exclusion off for a whole corpus.
    """
    if convention not in PUNCTUATION:
        raise ValueError(f"punctuation convention {convention!r}: accepted: {', '.join(PUNCTUATION)}")
    order = (("ptb", xpos), ("upos", upos)) if convention == "ptb" else (("upos", upos), ("ptb", xpos))
    for name, tags in order:
        if _tagged(tags, n):
            return tuple(str(t) for t in tags), name
    return None, "none"


def check_heads(heads: Sequence[int]) -> np.ndarray:
    """``heads`` as an int64 array after checking it is 1-D, integer, in ``0..n`` with exactly one root."""
    h = np.asarray(heads)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"heads: expected a non-empty 1-D sequence, got shape {h.shape}")
    if not np.issubdtype(h.dtype, np.integer):
        if not np.all(np.equal(np.mod(h, 1), 0)):
            raise ValueError("heads: expected integers (1-based, 0 = root)")
        h = h.astype(np.int64)
    n = h.size
    if h.min() < 0 or h.max() > n:
        raise ValueError(f"heads: each head must be in 0..{n} (0 = root)")
    if int(np.sum(h == 0)) != 1:
        raise ValueError(f"heads: exactly one word must have head 0, got {int(np.sum(h == 0))}")
    return h.astype(np.int64)


def _ancestor_matrix(heads: Sequence[int]) -> np.ndarray:
    """``A[i, k] = 1`` iff word ``k`` is word ``i`` or one of its ancestors."""
    h = check_heads(heads)
    n = h.size
    anc = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        k, steps = i, 0
        while k >= 0:
            if anc[i, k]:
                raise ValueError("heads: the head relation has a cycle")
            anc[i, k] = 1
            k = h[k] - 1
            steps += 1
            if steps > n:
                raise ValueError("heads: the head relation has a cycle")
    return anc


def tree_depths(heads: Sequence[int]) -> np.ndarray:
    """Gold depth of every word: number of edges on its path to the root.

    ``heads`` is 1-based with 0 for the root (CoNLL-U HEAD column); the root has
    depth 0.  Raises ``ValueError`` unless ``heads`` is a tree.
    """
    return _ancestor_matrix(heads).sum(axis=1).astype(np.float64) - 1.0


def tree_distances(heads: Sequence[int]) -> np.ndarray:
    """Gold tree distance matrix: ``d_ij`` = number of edges between words i, j.

    Computed as ``depth_i + depth_j - 2 depth_lca(i, j)``, with
    ``depth_lca + 1`` = number of common ancestors-or-self (``A @ A.T``).
    """
    anc = _ancestor_matrix(heads)
    depth = anc.sum(axis=1) - 1
    common = anc @ anc.T
    return (depth[:, None] + depth[None, :] - 2 * (common - 1)).astype(np.float64)


def keep_mask(n: int, upos: Optional[Sequence[str]], k: int, name: str) -> np.ndarray:
    """Which of sentence ``k``'s ``n`` words are not punctuation (all of them when ``upos`` is None).

    ``upos``: the sentence's UPOS or PTB XPOS tags (:func:`punctuation_tags`); a word is punctuation when its
    tag is in :data:`PUNCT_TAGS`.
    """
    if upos is None:
        return np.ones(n, dtype=bool)
    if len(upos) != n:
        raise ValueError(f"{name}: sentence {k}: {len(upos)} POS tags for {n} words")
    return np.array([u not in PUNCT_TAGS for u in upos], dtype=bool)
