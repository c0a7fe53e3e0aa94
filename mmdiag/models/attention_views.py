"""Attention maps handed over in the layout the model returns them, shown in the layout a stream promises.

An :class:`~mmdiag.models.base.AttentionStream` promises one square ``(B, H, T, T)``
map per layer over the stream's ``T`` tokens. Two kinds of model return something
else, and building the promised squares for every batch costs more than the
reductions that read them:

- a **cross-attention** layer returns ``(B, H, Q, N)``: ``Q`` queries over ``N`` keys
  of another sequence. The square ``[queries | keys]`` layout (LXMERT's, with the key
  rows and the query columns zero) has ``(Q + N)^2`` entries per head: for Llama 3.2
  Vision's 4 tiles of 1,601 tokens, 41 M per head and text row block, against
  ``Q * N``. :class:`CrossMaps` keeps the rectangles;
- a tower that pads its sequence (Mllama's vision tower pads every tile to a
  multiple of 8 tokens) returns maps over the padded positions. :class:`GatheredMaps`
  keeps them with the index of the stream's tokens.

Both are sequences of the promised squares: indexing one builds that layer's square
(once; the explorer and the example maps read a few). The recorder reads ``rects`` /
``raw`` instead (:meth:`mmdiag.recording.attention.ShareAccumulator.update_cross`, and
the padded maps with the padding as ``GROUP_PAD``), which gives the sums the squares
would (tests/recording/test_attention_views.py).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from mmdiag.tokens import GROUP_PAD

__all__ = ["CrossMaps", "GatheredMaps", "square_of"]


def square_of(rect: torch.Tensor) -> torch.Tensor:
    """A ``(B, H, Q, N)`` query->key map in the square ``[queries | keys]`` layout ``(B, H, Q+N, Q+N)``: query
    rows over the key columns, key rows and query columns zero."""
    batch, heads, q, n = rect.shape
    square = rect.new_zeros((batch, heads, q + n, q + n))
    square[:, :, :q, q:] = rect
    return square


class _LazySquares(Sequence):
    """A sequence of per-layer squares built on first access (and kept for the trace's lifetime)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._built: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self._count

    def _build(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: Union[int, slice]):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"layer {index} out of range for {len(self)} layers")
        if i not in self._built:
            self._built[i] = self._build(i)
        return self._built[i]


class CrossMaps(_LazySquares):
    """Cross-attention layers' ``(B, H, Q, N)`` maps, read as the square ``[queries | keys]`` layout.

    ``rects``: the maps as the model returned them (the stream's first ``Q`` tokens
    are the queries, the next ``N`` the keys).
    """

    def __init__(self, rects: Sequence[torch.Tensor]) -> None:
        self.rects = list(rects)
        if self.rects and len({tuple(r.shape) for r in self.rects}) != 1:
            raise ValueError(f"cross-attention maps of different shapes: {[tuple(r.shape) for r in self.rects]}")
        super().__init__(len(self.rects))

    @property
    def n_queries(self) -> int:
        return int(self.rects[0].shape[2]) if self.rects else 0

    def _build(self, index: int) -> torch.Tensor:
        return square_of(self.rects[index])


class GatheredMaps(_LazySquares):
    """Maps over a padded sequence ``(B, H, T', T')``, read at the stream's tokens ``keep`` (``(T,)`` positions).

    ``blocks = (count, padded, kept)``: ``keep`` is the first ``kept`` positions of
    each of ``count`` blocks of ``padded`` (Mllama's tiles), gathered by strided
    slicing (5x faster than indexing with ``keep``).
    """

    #: the recorder reduces the padded maps (no copy) while they are at most this much larger than the gathered
    #: ones, else the gathered squares (a copy costs less than reducing many padding weights)
    PADDED_AT_MOST = 1.1

    def __init__(self, raw: Sequence[torch.Tensor], keep: torch.Tensor,
                 blocks: Optional[tuple[int, int, int]] = None) -> None:
        self.raw = list(raw)
        self.keep = keep
        self.blocks = blocks
        if blocks is not None and blocks[0] * blocks[2] != keep.numel():
            raise ValueError(f"blocks {blocks} do not hold the {keep.numel()} kept positions")
        super().__init__(len(self.raw))

    def _build(self, index: int) -> torch.Tensor:
        a = self.raw[index]
        if self.blocks is not None:
            count, padded, kept = self.blocks
            batch, heads = a.shape[:2]
            grid = a.reshape(batch, heads, count, padded, count, padded)[:, :, :, :kept, :, :kept]
            return grid.reshape(batch, heads, count * kept, count * kept)
        keep = self.keep.to(a.device)
        return a[:, :, keep[:, None], keep[None, :]]

    def padded_groups(self, groups: torch.Tensor) -> torch.Tensor:
        """The stream's ``(B, T)`` groups spread over the padded positions, ``GROUP_PAD`` elsewhere."""
        width = int(self.raw[0].shape[-1])
        out = torch.full((groups.shape[0], width), GROUP_PAD, dtype=groups.dtype, device=groups.device)
        out[:, self.keep.to(groups.device)] = groups
        return out

    def for_reduction(self, groups: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(maps, groups) the recorder reduces: the padded maps with the padding as PAD when they are at most
        :attr:`PADDED_AT_MOST` times the gathered ones' size, else the gathered squares with ``groups``."""
        if not self.raw or (self.raw[0].shape[-1] / max(1, self.keep.numel())) ** 2 <= self.PADDED_AT_MOST:
            return self.raw, self.padded_groups(groups) if self.raw else groups
        return [self[i] for i in range(len(self))], groups
