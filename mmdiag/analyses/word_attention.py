"""One sample's attention over the image, reduced to what the report draws.

The per-sample reductions behind :class:`mmdiag.analyses.attention_maps.ExampleMaps`
(see that module for what is kept and why): align a joint stream's text tokens
with caption words (:func:`joint_word_ids`), average a block's attention from
each word (:func:`word_to_patch`) or from a vision tower's CLS or all queries
(:func:`cls_to_patch`) over the image tokens, pool large patch grids
(:func:`pool_grid`), and choose the blocks (:func:`pick_layers`) and words
(:func:`select_words`) to keep. Token groups are ``AttentionStream.groups``'s ids
(``GROUP_*`` of :mod:`mmdiag.models.base`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from mmdiag.models.base import GROUP_IMAGE, GROUP_PAD, GROUP_TEXT

__all__ = [
    "CONTENT_UPOS",
    "STOP_WORDS",
    "cls_to_patch",
    "joint_word_ids",
    "pick_layers",
    "pool_grid",
    "select_words",
    "word_to_patch",
]

CONTENT_UPOS = frozenset({"NOUN", "PROPN", "ADJ", "VERB", "NUM"})
STOP_WORDS = frozenset(
    "a an the and or but of to in on at by for with from into onto over under above below next near "
    "is are was were be been being it its this that these those there here which who whom whose "
    "as than then so not no yes do does did has have had i you he she we they him her them his "
    "their our your my me us , . ; : ! ? - ' \"".split())


def joint_word_ids(groups: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
    """Word ids at the joint-stream positions: ``(T,)`` long, -1 off the caption's tokens.

    ``groups`` ``(T,)`` are one sample's stream groups, ``word_ids`` ``(T_text,)``
    the adapter's word ids of its text slice. The TEXT positions of the stream,
    in order, get the ``word_ids >= 0`` entries, in order. Raises ValueError when
    their counts differ (the alignment assumption of the module doc fails).
    """
    text_pos = torch.nonzero(groups == GROUP_TEXT).flatten()
    words = word_ids[word_ids >= 0].to(groups.device)
    if text_pos.numel() != words.numel():
        raise ValueError(f"{text_pos.numel()} TEXT tokens in the stream but {words.numel()} word-aligned "
                         f"text tokens: cannot align words")
    out = torch.full(groups.shape, -1, dtype=torch.long, device=groups.device)
    out[text_pos] = words.long()
    return out


def _grid_keys(groups: torch.Tensor, grid: Optional[tuple[int, int]]) -> torch.Tensor:
    """Positions of the image tokens forming ``grid`` (row-major); the last ``rows*cols`` IMAGE tokens."""
    image_pos = torch.nonzero(groups == GROUP_IMAGE).flatten()
    if grid is None:
        return image_pos
    cells = int(grid[0]) * int(grid[1])
    if image_pos.numel() < cells:
        raise ValueError(f"{image_pos.numel()} image tokens cannot fill a {grid[0]}x{grid[1]} patch grid")
    return image_pos[image_pos.numel() - cells:]


def word_to_patch(attn: torch.Tensor, groups: torch.Tensor, word_ids_joint: torch.Tensor,
                  grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Attention from each caption word to each image token, averaged over heads and sub-words.

    ``attn`` ``(H, T, T)`` one sample's attention of one block (rows: queries),
    ``groups`` ``(T,)`` its token groups, ``word_ids_joint`` ``(T,)`` the word of
    each position (-1 elsewhere; :func:`joint_word_ids`), ``grid`` ``(rows, cols)``
    of the patch tokens (the last ``rows*cols`` IMAGE tokens) or None (every
    IMAGE token, in order). Returns ``(n_words, n_keys)`` float32 with
    ``n_words = max(word_ids_joint) + 1``::

        out[w, p] = mean_h mean_{q: word(q) = w} attn[h, q, key_p]

    Raw weights (no renormalisation): a row sums to the share of the word's
    attention that lands on the image, ``<= 1``. A word without tokens is NaN.
    """
    if attn.dim() != 3 or attn.shape[1] != attn.shape[2] or attn.shape[1] != groups.shape[0]:
        raise ValueError(f"attention {tuple(attn.shape)} does not match {groups.shape[0]} tokens")
    keys = _grid_keys(groups, grid)
    valid = word_ids_joint >= 0
    n_words = int(word_ids_joint.max().item()) + 1 if bool(valid.any()) else 0
    mean = attn.float().mean(dim=0)
    rows = mean[valid][:, keys]
    index = word_ids_joint[valid].long()
    sums = torch.zeros((n_words, keys.numel()), dtype=torch.float32, device=attn.device)
    sums.index_add_(0, index, rows)
    counts = torch.bincount(index, minlength=n_words).to(torch.float32)
    counts = torch.where(counts > 0, counts, torch.full_like(counts, float("nan")))
    return sums / counts.unsqueeze(1)


def cls_to_patch(attn: torch.Tensor, groups: torch.Tensor,
                 grid: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, str]:
    """A vision tower's attention over its patches, averaged over heads: ``((n_keys,), kind)``.

    With a CLS token (position 0 not an IMAGE token: CLIP) the CLS query's row,
    kind ``"cls->patch"``; without one (SigLIP) the mean over valid (non-padding)
    queries of the attention each patch receives, kind ``"mean->patch"``.
    """
    if attn.dim() != 3 or attn.shape[1] != attn.shape[2] or attn.shape[1] != groups.shape[0]:
        raise ValueError(f"attention {tuple(attn.shape)} does not match {groups.shape[0]} tokens")
    keys = _grid_keys(groups, grid)
    mean = attn.float().mean(dim=0)
    if int(groups[0]) != GROUP_IMAGE and int(groups[0]) != GROUP_PAD:
        return mean[0, keys], "cls->patch"
    queries = groups != GROUP_PAD
    return mean[queries][:, keys].mean(dim=0), "mean->patch"


def pool_grid(maps: torch.Tensor, grid: tuple[int, int], max_cells: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Sum-pool ``(..., rows*cols)`` maps in ``f x f`` blocks until at most ``max_cells`` remain.

    ``f = ceil(sqrt(rows*cols / max_cells))``; edge blocks may be partial. The
    sum over cells (the attention mass on the image) is unchanged. Returns the
    maps ``(..., rows'*cols')`` and ``(rows', cols')``.
    """
    rows, cols = int(grid[0]), int(grid[1])
    if rows * cols <= max_cells:
        return maps, (rows, cols)
    f = math.ceil(math.sqrt(rows * cols / max_cells))
    while math.ceil(rows / f) * math.ceil(cols / f) > max_cells:
        f += 1
    lead = maps.shape[:-1]
    x = maps.reshape(-1, 1, rows, cols)
    pooled = torch.nn.functional.avg_pool2d(x, f, stride=f, ceil_mode=True, divisor_override=1)
    new = (int(pooled.shape[-2]), int(pooled.shape[-1]))
    return pooled.reshape(*lead, new[0] * new[1]), new


def pick_layers(n_layers: int, max_layers: int = 3) -> list[int]:
    """1-based block numbers to keep: all when ``n_layers <= max_layers``, else evenly spaced (first and last kept)."""
    if n_layers <= 0:
        return []
    if n_layers <= max_layers or max_layers <= 0:
        return list(range(1, n_layers + 1)) if max_layers > 0 else []
    picks = np.linspace(1, n_layers, max_layers).round().astype(int)
    return sorted({int(p) for p in picks})


def select_words(words: Sequence[str], upos: Optional[Sequence[str]] = None, max_words: int = 8) -> list[int]:
    """Indices of at most ``max_words`` words to draw, in caption order.

    Content words first: UPOS in NOUN/PROPN/ADJ/VERB/NUM when ``upos`` is given
    (same length as ``words``), else words outside a short stop-word list; each
    lower-cased form once. If that leaves fewer than ``max_words``, the other
    words fill up in caption order (still each form once).
    """
    if upos is not None and len(upos) != len(words):
        upos = None
    if upos is not None:
        content = [str(u).upper() in CONTENT_UPOS for u in upos]
    else:
        content = [w.lower() not in STOP_WORDS and any(ch.isalnum() for ch in w) for w in words]
    chosen: list[int] = []
    seen: set[str] = set()
    for want in (True, False):
        for i, w in enumerate(words):
            if len(chosen) >= max_words:
                break
            key = w.lower()
            if content[i] == want and key not in seen:
                chosen.append(i)
                seen.add(key)
    return sorted(chosen)
