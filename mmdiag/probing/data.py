"""The data a structural probe is fitted on: word states of a set of sentences and their gold structure.

:class:`ProbeData` holds the states of every layer for the words of all
sentences concatenated, the sentence lengths, and the gold targets (heads,
or depths/distances given directly, e.g. a control task's).  It checks the
shapes once at construction, so that training (:mod:`mmdiag.probing.fit`)
and scoring can index it without checks, and cuts out the sentences of a
train/dev/test split (:meth:`ProbeData.subset`).  Gold depths and distances
are derived from heads with :mod:`mmdiag.metrics.probe_trees`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from mmdiag.metrics.probe_trees import punctuation_tags, tree_depths, tree_distances
from mmdiag.probing.states import StateView

__all__ = ["ProbeData"]


@dataclass
class ProbeData:
    """Word states of a set of sentences and their gold structure.

    ``states``: (L, W, D) tensor, the states of the W words of all sentences
    concatenated in order, for each of L layers; or a :class:`~mmdiag.probing.states.StateView`
    of states kept on disk (read per minibatch).  ``lengths``: words per
    sentence (sum = W).  ``heads``: per sentence, 1-based heads (0 = root);
    gold depths/distances are derived from them unless given.  ``depths``:
    optional gold depths, a (W,) array/tensor or a list of per-sentence arrays
    (e.g. :func:`~mmdiag.probing.control.control_depths`).  ``distances``:
    optional list of per-sentence (n, n) gold distance matrices (e.g.
    :func:`~mmdiag.probing.control.control_distances`).  ``upos``: optional
    POS tags per sentence that root accuracy and UUAS read punctuation from
    (UPOS or PTB XPOS, :func:`~mmdiag.metrics.probe_trees.punctuation_tags`);
    a sentence's entry may be None (no tags: none of its words is excluded).
    ``punct_sources``: per sentence, which tags those are (``ptb``, ``upos`` or
    ``none``), set by :meth:`from_trees`.
    """

    states: "torch.Tensor | StateView"
    lengths: tuple[int, ...]
    heads: Optional[tuple[tuple[int, ...], ...]] = None
    depths: Optional[torch.Tensor] = None
    distances: Optional[list[np.ndarray]] = None
    upos: Optional[tuple[Optional[tuple[str, ...]], ...]] = None
    punct_sources: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.states, (torch.Tensor, StateView)):
            self.states = torch.as_tensor(np.asarray(self.states))
        if self.states.ndim != 3:
            raise ValueError(f"ProbeData.states: expected (L, W, D), got {tuple(self.states.shape)}")
        self.lengths = tuple(int(n) for n in self.lengths)
        if any(n < 1 for n in self.lengths):
            raise ValueError("ProbeData.lengths: every sentence needs at least one word")
        W = sum(self.lengths)
        if self.states.shape[1] != W:
            raise ValueError(f"ProbeData: states hold {self.states.shape[1]} words but the "
                             f"lengths add up to {W}")
        if self.heads is not None:
            self.heads = tuple(tuple(int(h) for h in hs) for hs in self.heads)
            if [len(h) for h in self.heads] != list(self.lengths):
                raise ValueError("ProbeData.heads: per-sentence lengths differ from lengths")
        if self.upos is not None:
            self.upos = tuple(None if u is None else tuple(u) for u in self.upos)
            if len(self.upos) != len(self.lengths) or any(
                    u is not None and len(u) != n for u, n in zip(self.upos, self.lengths)):
                raise ValueError("ProbeData.upos: per-sentence lengths differ from lengths")
        if self.depths is None and self.heads is not None:
            self.depths = np.concatenate([tree_depths(h) for h in self.heads])
        if self.depths is not None:
            d = self.depths
            if isinstance(d, (list, tuple)):
                if [len(x) for x in d] != list(self.lengths):
                    raise ValueError("ProbeData.depths: per-sentence lengths differ from lengths")
                d = np.concatenate([np.asarray(x, dtype=np.float64) for x in d])
            d = torch.as_tensor(np.asarray(d.detach().cpu() if isinstance(d, torch.Tensor) else d,
                                           dtype=np.float32))
            if d.shape != (W,):
                raise ValueError(f"ProbeData.depths: expected ({W},), got {tuple(d.shape)}")
            self.depths = d
        if self.distances is not None:
            self.distances = [np.asarray(x, dtype=np.float64) for x in self.distances]
            if [x.shape for x in self.distances] != [(n, n) for n in self.lengths]:
                raise ValueError("ProbeData.distances: expected one (n, n) matrix per sentence")

    @classmethod
    def from_trees(cls, states: torch.Tensor, trees: Sequence, punctuation: str = "ptb") -> "ProbeData":
        """Build from ``states`` (L, W, D) and :class:`~mmdiag.data.types.DepTree` s.

        Punctuation tags per tree (``punctuation``: ``ptb``, Hewitt's seven XPOS tags, or ``upos``), each
        tree falling back to the other tag set, or to no exclusion, on its own: a tree without tags never
        switches punctuation exclusion off for the rest of the corpus (``punct_sources`` counts them).
        """
        tagged = [punctuation_tags(t.upos, getattr(t, "xpos", ()), len(t.heads), punctuation) for t in trees]
        return cls(states=states, lengths=tuple(len(t.heads) for t in trees),
                   heads=tuple(tuple(t.heads) for t in trees),
                   upos=tuple(tags for tags, _ in tagged), punct_sources=tuple(src for _, src in tagged))

    def punctuation_counts(self) -> dict[str, int]:
        """How many sentences read punctuation from PTB tags, from UPOS, or from nothing (``{}`` when unknown)."""
        if self.punct_sources is None:
            return {}
        return {src: self.punct_sources.count(src) for src in ("ptb", "upos", "none")}

    @property
    def n_sentences(self) -> int:
        return len(self.lengths)

    @property
    def offsets(self) -> np.ndarray:
        """Index of each sentence's first word in W, plus W at the end."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def gold_depths(self) -> list[np.ndarray]:
        """Gold depth targets per sentence (float64)."""
        if self.depths is None:
            raise ValueError("ProbeData has neither heads nor depths")
        off = self.offsets
        d = self.depths.numpy().astype(np.float64)
        return [d[off[s]:off[s + 1]] for s in range(self.n_sentences)]

    def gold_distances(self) -> list[np.ndarray]:
        """Gold distance targets per sentence: ``distances`` or tree distances of ``heads``."""
        if self.distances is not None:
            return list(self.distances)
        if self.heads is None:
            raise ValueError("ProbeData has neither heads nor distances")
        return [tree_distances(h) for h in self.heads]

    def subset(self, indices: Sequence[int]) -> "ProbeData":
        """The sentences ``indices`` (in that order) as a new :class:`ProbeData`."""
        idx = [int(i) for i in indices]
        off = self.offsets
        words = (np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
                 if idx else np.zeros(0, dtype=np.int64))
        wt = torch.as_tensor(words, dtype=torch.long, device=self.states.device)
        pick = lambda seq: None if seq is None else tuple(seq[i] for i in idx)  # noqa: E731
        return ProbeData(
            states=self.states.index_select(1, wt),
            lengths=tuple(self.lengths[i] for i in idx),
            heads=pick(self.heads),
            depths=None if self.depths is None else self.depths[torch.as_tensor(words)],
            distances=None if self.distances is None else [self.distances[i] for i in idx],
            upos=pick(self.upos),
            punct_sources=pick(self.punct_sources),
        )
