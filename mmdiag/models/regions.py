"""Image regions as patch sets: where a phrase's box lands among the model's patch tokens.

Milewski et al. (2022) probe scene trees over region states; for patch-based
models a region's state is the mean of the patch tokens whose patch overlaps
the (preprocessed) box, and the image root is the model's pooled image state.
:func:`phrase_query_mask` and :func:`place_key_masks` place a batch's phrases
(their words' tokens, their boxes' keys) in a stream's token sequence, the
:class:`~mmdiag.models.base.PhraseMasks` an adapter puts in an
:class:`~mmdiag.models.base.AttentionStream`'s ``grounding``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

Box = tuple[float, float, float, float]


def preprocess_geometry(processor: Any) -> tuple[str, tuple[int, int]]:
    """How an image processor maps an image to its input: ``("crop", (h, w))``, ``("resize", (h, w))`` or
    ``("pad", (h, w))``.

    ``crop``: the short side is resized to the crop size and the centre is cut
    out (CLIP); ``resize``: both axes are scaled to the target (SigLIP, ViLT here);
    ``pad``: the long side is resized to the target and the image centred on a
    padded canvas (open_clip's ``resize_mode="longest"``, a processor whose
    ``resize_mode`` says so).
    """
    size = getattr(processor, "size", None) or {}
    if getattr(processor, "resize_mode", None) == "longest" and "height" in size:
        return "pad", (int(size["height"]), int(size["width"]))
    crop = getattr(processor, "crop_size", None) or {}
    if getattr(processor, "do_center_crop", False) and crop:
        return "crop", (int(crop["height"]), int(crop["width"]))
    if "height" in size and "width" in size:
        return "resize", (int(size["height"]), int(size["width"]))
    edge = int(size.get("shortest_edge", 224))
    return "resize", (edge, edge)


def map_box(box: Box, image_wh: tuple[int, int], geometry: tuple[str, tuple[int, int]]) -> Box:
    """The box in the preprocessed image's pixel coordinates (clipped to it)."""
    mode, (out_h, out_w) = geometry
    width, height = image_wh
    x0, y0, x1, y1 = box
    if mode == "crop":
        scale = max(out_h, out_w) / min(width, height)
        new_w, new_h = width * scale, height * scale
        off_x, off_y = (new_w - out_w) / 2, (new_h - out_h) / 2
        x0, x1 = x0 * scale - off_x, x1 * scale - off_x
        y0, y1 = y0 * scale - off_y, y1 * scale - off_y
    elif mode == "pad":
        scale = min(out_h, out_w) / max(width, height)
        off_x, off_y = (out_w - width * scale) / 2, (out_h - height * scale) / 2
        x0, x1 = x0 * scale + off_x, x1 * scale + off_x
        y0, y1 = y0 * scale + off_y, y1 * scale + off_y
    else:
        sx, sy = out_w / width, out_h / height
        x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
    clip = lambda v, hi: min(max(v, 0.0), float(hi))  # noqa: E731
    return clip(x0, out_w), clip(y0, out_h), clip(x1, out_w), clip(y1, out_h)


def patch_mask(box: Box, grid: tuple[int, int], input_hw: tuple[int, int]) -> torch.Tensor:
    """``(rows * cols,)`` bool: patches whose area overlaps the box (row-major, like ViT tokens)."""
    rows, cols = grid
    ph, pw = input_hw[0] / rows, input_hw[1] / cols
    x0, y0, x1, y1 = box
    r = torch.arange(rows, dtype=torch.float64)
    c = torch.arange(cols, dtype=torch.float64)
    row_hit = (r * ph < y1) & ((r + 1) * ph > y0)
    col_hit = (c * pw < x1) & ((c + 1) * pw > x0)
    return (row_hit[:, None] & col_hit[None, :]).reshape(-1)


def region_masks(samples: Sequence[Any], grid: tuple[int, int], input_hw: tuple[int, int],
                 geometry: tuple[str, tuple[int, int]]) -> list[Optional[torch.Tensor]]:
    """Per sample, a ``(n_phrases, rows*cols)`` mask of each phrase's patches (None without phrases)."""
    out: list[Optional[torch.Tensor]] = []
    for s in samples:
        if not s.phrases or s.image is None or not hasattr(s.image, "size"):
            out.append(None)
            continue
        masks = [patch_mask(map_box(p.box, s.image.size, geometry), grid, input_hw) for p in s.phrases]
        out.append(torch.stack(masks))
    return out


@dataclass
class RegionMasks:
    """One batch's phrase→patch masks stacked for a batched matmul (built once, used for every layer)."""

    weights: torch.Tensor      # (B, R, P) float: 1 on a phrase's patches (all patches for an empty box)
    nodes: torch.Tensor        # (B, 1 + R) bool: which [root, phrase...] nodes exist
    counts: list[int]          # nodes per sample (0 for a sample without phrases)
    n_patches: int


def stack_region_masks(masks: list[Optional[torch.Tensor]], device: torch.device) -> Optional[RegionMasks]:
    """Pad the per-sample ``(n_phrases, P_i)`` masks into one ``(B, R, P)`` tensor; None when no sample has phrases.

    A phrase whose box covers no patch (a box outside the crop) gets the mean of
    all patches, so the region count stays aligned with the scene tree.
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    n_regions, n_patches = max(m.shape[0] for m in present), max(m.shape[1] for m in present)
    weights = torch.zeros(len(masks), n_regions, n_patches)
    nodes = torch.zeros(len(masks), 1 + n_regions, dtype=torch.bool)
    for b, mask in enumerate(masks):
        if mask is not None:
            rows, cols = mask.shape
            block = mask.float()
            block[block.sum(-1) == 0] = 1.0  # this sample's own patches only
            weights[b, :rows, :cols] = block
            nodes[b, :1 + rows] = True
    weights[~nodes[:, 1:]] = 1.0  # padding rows: any finite value, dropped by ``nodes``
    counts = [0 if m is None else 1 + m.shape[0] for m in masks]
    return RegionMasks(weights.to(device), nodes.to(device), counts, n_patches)


def stacked_region_states(hidden: torch.Tensor, pooled: torch.Tensor, stacked: RegionMasks,
                          patch_offset: int) -> torch.Tensor:
    """``(sum R_i, D)``: per sample its pooled root then the mean of each phrase's patches, in one batched matmul."""
    patches = hidden[:, patch_offset:patch_offset + stacked.n_patches].float()
    regions = torch.bmm(stacked.weights, patches) / stacked.weights.sum(-1, keepdim=True)
    return torch.cat([pooled.float().unsqueeze(1), regions], dim=1)[stacked.nodes]


def region_states(hidden: torch.Tensor, pooled: torch.Tensor, masks: list[Optional[torch.Tensor]],
                  patch_offset: int) -> tuple[torch.Tensor, list[int]]:
    """States of [image root, phrase regions...] per sample, concatenated: ``(sum R_i, D)`` and the R_i.

    A phrase whose box covers no patch gets the mean of all patches (see :func:`stack_region_masks`).
    """
    stacked = stack_region_masks(masks, hidden.device)
    if stacked is None:
        return hidden.new_zeros((0, hidden.shape[-1]), dtype=torch.float32), [0] * len(masks)
    return stacked_region_states(hidden, pooled, stacked, patch_offset), stacked.counts


def phrase_query_mask(word_ids: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]],
                      offset: int = 0, total: Optional[int] = None, n_phrases: Optional[int] = None
                      ) -> torch.Tensor:
    """``(B, P, T)`` bool: the text tokens whose word is in phrase ``p``'s span ``[start, end)``.

    ``word_ids`` ``(B, T_text)`` (-1 for special/padding tokens) sits at positions
    ``offset .. offset + T_text`` of a stream of length ``total`` (default
    ``offset + T_text``); ``spans[b]`` lists sample ``b``'s phrase spans.
    """
    wid = torch.as_tensor(word_ids).long()
    batch, t_text = wid.shape
    total = offset + t_text if total is None else int(total)
    n = max((len(s) for s in spans), default=0) if n_phrases is None else int(n_phrases)
    out = torch.zeros((batch, n, total), dtype=torch.bool, device=wid.device)
    for b, sample_spans in enumerate(spans):
        for p, (start, end) in enumerate(sample_spans):
            out[b, p, offset:offset + t_text] = (wid[b] >= int(start)) & (wid[b] < int(end))
    return out


def place_key_masks(masks: Sequence[Optional[torch.Tensor]], offset: int, total: int,
                    n_phrases: Optional[int] = None) -> torch.Tensor:
    """``(B, P, T)`` bool from per-sample ``(P_b, N_b)`` key masks placed at positions ``offset..offset+N_b``.

    For patch models pass :func:`region_masks` output with the
    stream's first patch position as ``offset``; for region models each phrase's
    own region token (see the LXMERT/VisualBERT adapters). ``None`` = no phrases.
    """
    n = max((m.shape[0] for m in masks if m is not None), default=0) if n_phrases is None else int(n_phrases)
    out = torch.zeros((len(masks), n, int(total)), dtype=torch.bool)
    for b, m in enumerate(masks):
        if m is None or m.numel() == 0:
            continue
        m = torch.as_tensor(m).bool().cpu()
        out[b, :m.shape[0], offset:offset + m.shape[1]] = m
    return out
