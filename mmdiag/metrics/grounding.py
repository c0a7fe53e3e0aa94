"""Attention grounding: does a phrase's attention over the image land in its own box?

For a grounded phrase (caption words ``[start, end)`` with a box) and one
attention head, take the rows of the attention map whose queries are the
phrase's text tokens and the columns of the image keys (patches, or detector
regions). Each row is renormalised over the image keys, and the **grounding
share** is the mean over the phrase's query rows of the mass inside the box::

    w_qk  = a_qk / sum_{k' in image} a_qk'              (q a query of the phrase, k an image key)
    share = (1 / |Q|) sum_{q in Q} sum_{k in box} w_qk

``share`` is in ``[0, 1]``: 1 when all of the phrase's image attention is on its
box; under attention uniform over the image keys it equals the **chance level**
``|box keys| / |image keys|`` (the fraction of image keys inside the box; for
patches that is the fraction of patches overlapping the box, slightly above the
box's area fraction because border patches count whole). Rows with no mass on
image keys (e.g. a causal query before the image) are skipped.

This is the "pointing game"-style attention evaluation used for VL attention
heads: Cao et al. 2020 ("Behind the Scene: Revealing the Secrets of Pre-trained
Vision-and-Language Models", arXiv:2005.07310) measure how often a phrase's
attention peaks on its gold Flickr30k Entities region; Li et al. 2019
(VisualBERT, arXiv:1908.03557, Sec. 5.3) report per layer the accuracy of
entity-to-region attention; VL-InterpreT (Aflalo et al. 2022, arXiv:2203.17247)
draws a token's attention over the image. mmdiag reports the mass share (a
continuous version of those accuracies) against its chance level, plus the
fraction of phrases whose share beats chance.

The batched form (:func:`phrase_grounding`) works on square ``(B, H, T, T)``
maps over one token sequence with per-phrase boolean masks of the query tokens
and of the in-box keys (:class:`PhraseMaskSet`: the adapters' trace carries
them as :class:`mmdiag.models.base.PhraseMasks`). Everything stays on the
attention's device; the streaming sums over batches are
:class:`mmdiag.recording.grounding.GroundingAccumulator`.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch

__all__ = [
    "grounding_share",
    "chance_level",
    "attention_heatmap",
    "region_heatmap",
    "PhraseMaskSet",
    "phrase_grounding",
]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x).detach()
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def grounding_share(attn_to_image: torch.Tensor, patch_boxes_mask: torch.Tensor) -> float:
    """Share of a phrase's image attention that falls in its box, ``in [0, 1]``.

    ``attn_to_image`` ``(Q, K)``: the phrase's query rows over the ``K`` image keys
    (any non-negative weights); ``patch_boxes_mask`` ``(K,)`` bool: keys inside the
    box. ``share = mean_q sum_{k in box} a_qk / sum_k a_qk`` over rows with
    positive mass (module doc; cf. Cao et al. 2020, arXiv:2005.07310). NaN when no
    row has mass or the mask is empty.
    """
    a = _as_float(attn_to_image)
    mask = torch.as_tensor(patch_boxes_mask, device=a.device).bool()
    if a.ndim == 1:
        a = a.unsqueeze(0)
    if a.ndim != 2 or mask.ndim != 1 or a.shape[1] != mask.shape[0]:
        raise ValueError(f"expected attn (Q, K) and mask (K,), got {tuple(a.shape)} and {tuple(mask.shape)}")
    if bool((a < 0).any()) or not bool(torch.isfinite(a).all()):
        raise ValueError("attention weights must be finite and non-negative")
    total = a.sum(-1)
    ok = total > 0
    if not bool(ok.any()) or not bool(mask.any()):
        return float("nan")
    inside = (a * mask.to(a.dtype)).sum(-1)
    return float((inside[ok] / total[ok]).mean())


def chance_level(mask: torch.Tensor) -> float:
    """Grounding share under uniform attention: ``|box keys| / |image keys|`` (fraction of True in ``mask``)."""
    m = torch.as_tensor(mask).bool().reshape(-1)
    if m.numel() == 0:
        return float("nan")
    return float(m.double().mean())


def attention_heatmap(attn_row: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """One query's attention over ``rows * cols`` patch keys as a ``(rows, cols)`` map summing to 1.

    Patches are row-major (as ViT tokens are). An all-zero row gives zeros.
    """
    rows, cols = int(grid[0]), int(grid[1])
    a = _as_float(attn_row).reshape(-1).double().cpu().numpy()
    if a.shape[0] != rows * cols:
        raise ValueError(f"attn_row has {a.shape[0]} keys, grid {rows}x{cols} needs {rows * cols}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("attention weights must be finite and non-negative")
    total = a.sum()
    out = a.reshape(rows, cols)
    return out / total if total > 0 else np.zeros_like(out)


def region_heatmap(weights: torch.Tensor, boxes: Sequence[tuple[float, float, float, float]],
                   image_wh: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Attention over ``R`` regions drawn over the image as an ``(h, w)`` map summing to 1.

    Region ``r`` spreads its weight ``w_r`` uniformly over its box (clipped to the
    image): cell ``(i, j)`` of the ``h x w`` grid over the ``W x H`` image gets
    ``sum_r w_r * overlap(cell, box_r) / area(box_r)``, then the map is divided by its
    sum. Boxes of zero area are dropped. An all-zero result stays zeros.
    """
    w = _as_float(weights).reshape(-1).double().cpu().numpy()
    if w.shape[0] != len(boxes):
        raise ValueError(f"{w.shape[0]} weights for {len(boxes)} boxes")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("attention weights must be finite and non-negative")
    width, height = float(image_wh[0]), float(image_wh[1])
    h, wd = int(out_hw[0]), int(out_hw[1])
    xs = np.linspace(0.0, width, wd + 1)
    ys = np.linspace(0.0, height, h + 1)
    out = np.zeros((h, wd), dtype=np.float64)
    for weight, (x0, y0, x1, y1) in zip(w, boxes):
        x0, x1 = np.clip(sorted((x0, x1)), 0.0, width)
        y0, y1 = np.clip(sorted((y0, y1)), 0.0, height)
        area = (x1 - x0) * (y1 - y0)
        if area <= 0 or weight == 0:
            continue
        ox = np.clip(np.minimum(xs[1:], x1) - np.maximum(xs[:-1], x0), 0.0, None)
        oy = np.clip(np.minimum(ys[1:], y1) - np.maximum(ys[:-1], y0), 0.0, None)
        out += weight * np.outer(oy, ox) / area
    total = out.sum()
    return out / total if total > 0 else out


class PhraseMaskSet(Protocol):
    """Where the phrases sit in a stream of ``T`` tokens (``B`` samples, ``P`` phrases):
    ``queries`` ``(B, P, T)`` bool, phrase ``p``'s text tokens; ``keys`` ``(B, P, T)``
    bool, the image keys inside its box; ``image_keys`` ``(B, T)`` bool, every image key."""

    queries: torch.Tensor
    keys: torch.Tensor
    image_keys: torch.Tensor


def phrase_grounding(attn: torch.Tensor, masks: PhraseMaskSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grounding share of every (sample, head, phrase) for one layer's square attention map.

    ``attn`` ``(B, H, T, T)``. Returns ``share (B, H, P)`` (the formula in the
    module doc, NaN where undefined), ``valid (B, H, P)`` (the phrase has a query
    row with image mass and a non-empty box) and ``chance (B, P)``
    (= ``|keys_p| / |image keys|``, NaN without image keys), on ``attn``'s device.
    """
    a = _as_float(attn)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attn: expected (B, H, T, T), got {tuple(a.shape)}")
    batch, _, t, _ = a.shape
    q = masks.queries.to(a.device).bool()
    image = masks.image_keys.to(a.device).bool()
    keys = masks.keys.to(a.device).bool() & image.unsqueeze(1)
    if q.shape[0] != batch or q.shape[-1] != t or keys.shape != q.shape or tuple(image.shape) != (batch, t):
        raise ValueError(f"masks: expected queries/keys (B={batch}, P, T={t}) and image_keys (B, T), got "
                         f"{tuple(q.shape)}, {tuple(keys.shape)}, {tuple(image.shape)}")
    a = torch.nan_to_num(a, nan=0.0)  # fully masked (padding) query rows of SDPA maps
    img_mass = (a @ image.to(a.dtype).unsqueeze(-1).unsqueeze(1)).squeeze(-1)  # (B, H, T)
    inbox = a @ keys.to(a.dtype).transpose(1, 2).unsqueeze(1)  # (B, H, T, P)
    row_ok = img_mass > 0
    ratio = inbox / torch.where(row_ok, img_mass, torch.ones_like(img_mass)).unsqueeze(-1)
    rows = q.transpose(1, 2).unsqueeze(1) & row_ok.unsqueeze(-1)  # (B, H, T, P)
    n_rows = rows.sum(2)  # (B, H, P)
    total = (ratio * rows.to(ratio.dtype)).sum(2)
    n_keys = keys.sum(-1)  # (B, P)
    n_image = image.sum(-1, keepdim=True)  # (B, 1)
    valid = (n_rows > 0) & (n_keys > 0).unsqueeze(1)
    share = torch.where(valid, total / n_rows.clamp_min(1).to(total.dtype), torch.full_like(total, float("nan")))
    chance = torch.where(n_image > 0, n_keys.to(a.dtype) / n_image.clamp_min(1).to(a.dtype),
                         torch.full(n_keys.shape, float("nan"), dtype=a.dtype, device=a.device))
    return share, valid, chance
