"""The explorer's data: every layer's and head's attention of a few examples, from the one forward pass.

VL-InterpreT (Aflalo et al. 2022, arXiv:2203.17247) lets a reader pick an example, a layer and a head
and see where each token attends. This collector keeps, for the first ``k`` samples of the run and for
each attention stream the trace has (``joint``/``cross`` for single-stream and cross-attention models,
``text`` and ``image`` for dual encoders), the attention among *display tokens*:

- caption words (sub-word queries averaged, sub-word keys summed; at most :data:`MAX_WORDS`),
- image patches sum-pooled in f×f blocks to at most :data:`MAX_SIDE`² cells (queries averaged),
- special tokens (CLS, BOS, EOS, ...), each on its own up to :data:`MAX_SPECIALS`, the rest as one.

With R (D×T) averaging the query rows of a display token and C (T×D) summing its key columns, the
stored matrix of block l and head h is ``R · attn[l, h] · C`` (rows still sum to the attention mass on
the kept tokens, ≤ 1). Size: each row is quantised to uint8 relative to its peak, ``q = round(255 a / max)``,
and the peaks are kept as float32, both base64-encoded: L·H·D² bytes per stream and example (ViT-B/32
CLIP: 12·12·50² = 360 kB for the image tower).

Series key ``series["explore"]``: ``{"examples": [{"uid", "caption", "thumbnail", "streams": {name:
{"tokens": [labels], "kinds": ["word"|"patch"|"special"], "grid": [rows, cols] | None, "layers": L,
"heads": H, "q": base64 uint8 (L, H, D, D), "peak": base64 float32 (L, H, D)}}}], "skipped": [...]}``.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmdiag.tokens import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT

__all__ = ["SERIES_KEY", "Explorer", "display_tokens", "reduce_attention", "MAX_WORDS", "MAX_SIDE", "MAX_SPECIALS"]

SERIES_KEY = "explore"
MAX_WORDS = 24
MAX_SIDE = 8
MAX_SPECIALS = 4


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def display_tokens(groups: torch.Tensor, word_ids: Optional[torch.Tensor], words: Sequence[str],
                   grid: Optional[tuple[int, int]]) -> tuple[list[str], list[str], torch.Tensor, Optional[list]]:
    """(labels, kinds, assignment (T,) of each position to a display token or -1, pooled grid).

    ``groups`` ``(T,)`` one sample's stream groups; ``word_ids`` the word of each stream position (-1
    elsewhere) or None (every TEXT token on its own); ``grid`` the patch grid (the last rows·cols IMAGE
    tokens) or None (image tokens in a strip).
    """
    t = groups.shape[0]
    assign = torch.full((t,), -1, dtype=torch.long)
    labels: list[str] = []
    kinds: list[str] = []
    g = groups.cpu()
    specials = torch.nonzero(g == GROUP_SPECIAL).flatten().tolist()
    for i, pos in enumerate(specials):
        if i < MAX_SPECIALS:
            labels.append("[CLS]" if pos == 0 and bool((g == GROUP_IMAGE).any()) and not bool((g == GROUP_TEXT).any())
                          else f"[special {pos}]")
            kinds.append("special")
        elif i == MAX_SPECIALS:
            labels.append("[other specials]")
            kinds.append("special")
        assign[pos] = min(i, MAX_SPECIALS)
    base = len(labels)
    text_pos = torch.nonzero(g == GROUP_TEXT).flatten()
    if text_pos.numel():
        if word_ids is not None:
            wid = word_ids.cpu()[text_pos]
        else:
            wid = torch.arange(text_pos.numel())
        n_words = min(int(wid.max()) + 1, MAX_WORDS) if wid.numel() else 0
        for w in range(n_words):
            labels.append(words[w] if w < len(words) else f"t{w}")
            kinds.append("word")
        keep = (wid >= 0) & (wid < n_words)
        assign[text_pos[keep]] = base + wid[keep]
    base = len(labels)
    image_pos = torch.nonzero(g == GROUP_IMAGE).flatten()
    pooled = None
    if image_pos.numel():
        if grid is not None and image_pos.numel() >= grid[0] * grid[1]:
            rows, cols = grid
            cells = image_pos[image_pos.numel() - rows * cols:]
            f = max(1, math.ceil(max(rows, cols) / MAX_SIDE))
            pr, pc = math.ceil(rows / f), math.ceil(cols / f)
            r = torch.arange(rows * cols) // cols // f
            c = torch.arange(rows * cols) % cols // f
            assign[cells] = base + r * pc + c
            pooled = [pr, pc]
            n_cells = pr * pc
        else:
            cells = image_pos[:MAX_SIDE * MAX_SIDE]
            assign[cells] = base + torch.arange(cells.numel())
            n_cells = cells.numel()
            pooled = [1, n_cells]
        for k in range(n_cells):
            labels.append(f"patch {k}")
            kinds.append("patch")
    return labels, kinds, assign, pooled


def reduce_attention(attn: torch.Tensor, assign: torch.Tensor, d: int) -> torch.Tensor:
    """``(H, T, T)`` attention -> ``(H, D, D)``: query rows averaged and key columns summed per display token."""
    valid = assign >= 0
    idx = assign[valid].to(attn.device)
    onehot = torch.zeros((int(valid.sum()), d), dtype=torch.float32, device=attn.device)
    onehot[torch.arange(idx.numel(), device=attn.device), idx] = 1.0
    counts = onehot.sum(dim=0).clamp(min=1.0)
    a = attn.float()[:, valid][:, :, valid]
    summed = torch.einsum("td,hts,se->hde", onehot, a, onehot)
    return summed / counts.view(1, d, 1)


def quantise(mats: torch.Tensor) -> tuple[str, str]:
    """(base64 uint8 rows relative to their peak, base64 float32 peaks) of ``(..., D, D)`` matrices."""
    m = torch.nan_to_num(mats.float(), nan=0.0).clamp(min=0.0).cpu().numpy()
    peak = m.max(axis=-1)
    scale = np.where(peak > 0, peak, 1.0)[..., None]
    q = np.round(255.0 * m / scale).astype(np.uint8)
    return _b64(q), _b64(peak.astype("<f4"))


class Explorer:
    """Collects the explorer's attention for the first ``k`` samples (see the module doc)."""

    def __init__(self, k: int = 2) -> None:
        self.k = int(k)
        self.examples: list[dict] = []
        self.skipped: list[str] = []

    @property
    def full(self) -> bool:
        return len(self.examples) >= self.k

    def update(self, trace: Any, samples: Sequence[Any], base: Any) -> None:
        """Add examples of one batch; ``base(trace, stream, sample, grid)`` gives uid, caption and thumbnail."""
        from mmdiag.analyses.word_attention import joint_word_ids
        from mmdiag.models.dual import caption_words

        if self.full or not trace.attention:
            return
        for b, sample in enumerate(samples):
            if self.full:
                break
            words = caption_words(sample) if isinstance(getattr(sample, "caption", None), str) else []
            streams: dict[str, dict] = {}
            thumb_grid = None
            for name, stream in trace.attention.items():
                if not stream.maps or stream.groups is None:
                    continue
                groups = stream.groups[b]
                wids = None
                if trace.word_ids is not None and bool((groups == GROUP_TEXT).any()):
                    try:
                        wids = joint_word_ids(groups, trace.word_ids[b])
                    except ValueError:
                        wids = None
                grid = tuple(int(v) for v in trace.patch_grid) if trace.patch_grid else None
                labels, kinds, assign, pooled = display_tokens(groups, wids, words, grid)
                if not labels or bool((groups == GROUP_PAD).all()):
                    continue
                mats = torch.stack([reduce_attention(layer[b], assign.to(layer.device), len(labels))
                                    for layer in stream.maps])
                q, peak = quantise(mats)
                streams[name] = {"tokens": labels, "kinds": kinds, "grid": pooled, "layers": int(mats.shape[0]),
                                 "heads": int(mats.shape[1]), "q": q, "peak": peak}
                if pooled is not None and pooled[0] > 1:
                    thumb_grid = grid
            if not streams:
                self.skipped.append(f"{getattr(sample, 'uid', b)}: no attention stream to explore")
                continue
            example = base(trace, next(iter(streams)), sample, thumb_grid)
            self.examples.append({"uid": example.get("uid"), "caption": example.get("caption"),
                                  "thumbnail": example.get("thumbnail"), "streams": streams})

    def result(self) -> dict:
        return {"examples": list(self.examples), "skipped": list(self.skipped)}
