"""Attention drawn over the image: per caption word, where on the image it looks.

For a few example pairs (the first ``k`` samples of the run) this module keeps,
per selected transformer block, the attention from each caption word to the
image tokens, small enough to be drawn as a heatmap over a thumbnail of the
image in the HTML report (VL-InterpreT's per-token attention view, Aflalo et al.
2022, arXiv:2203.17247; here as static small multiples).

What is kept, per example (``kind``):

- ``"word->patch"``: single-stream models whose joint sequence holds text and
  patch tokens (ViLT, LLaVA-style; stream ``"joint"``). For word ``w`` with
  sub-word query tokens ``Q_w`` and the patch keys ``P`` (row-major over
  ``patch_grid``)::

      map[w, p] = (1 / (H |Q_w|)) * sum_h sum_{q in Q_w} attn[h, q, p]

  i.e. the raw attention weight (not renormalised), averaged over the word's
  sub-word queries and over heads. ``sum_p map[w, p] <= 1`` is the share of the
  word's attention that goes to the image.
- ``"word->region"``: the same over region tokens (VisualBERT's ``"joint"``,
  LXMERT's ``"cross"`` stream: text rows hold the text->image cross-attention).
  When the number of region tokens equals the sample's regions
  (:func:`mmdiag.models.region_features.sample_boxes`: whole image, then phrase boxes)
  their boxes are stored (normalised to ``[0, 1]``) and drawn; otherwise the
  regions are a 1-D strip.
- ``"cls->patch"``: dual encoders without cross-attention (CLIP): the vision
  tower's CLS query (position 0) over the patches, per block.
- ``"mean->patch"``: a vision tower without a CLS token (SigLIP pools with an
  attention head outside the tower): the mean attention each patch receives
  from the tower's valid queries.

Word alignment (an assumption, checked per sample): ``trace.word_ids`` indexes
the text tokens of the model's text slice; in the joint/cross stream the text
tokens are the positions with group TEXT, and they appear in the same order as
the text slice's tokens with ``word_ids >= 0``. This holds for ViLT and
VisualBERT (text slice first, groups TEXT exactly where ``word_ids >= 0``),
LLaVA (``word_ids`` is the caption slice; BOS and image tokens are not TEXT) and
LXMERT's cross layout ``[text | regions]``. The counts are compared per sample;
a mismatch skips that sample (listed under ``"skipped"``), never the run.

Image tokens: the positions with group IMAGE. When there are more of them than
``rows * cols`` the *last* ``rows * cols`` are the grid (an image CLS kept as an
IMAGE token sits first: LLaVA's ``full`` feature strategy); fewer (padded
patches) falls back to a 1-D strip.

Size (the result goes into results.json and the report):

- at most ``max_layers`` blocks (default 3: first, middle, last, evenly spaced
  when the model has more);
- at most ``max_words`` words per caption (default 8): content words first
  (UPOS NOUN/PROPN/ADJ/VERB/NUM when the sample has a gold tree, else words not
  in a short stop-word list), each word form once, in caption order;
- grids above ``max_cells`` (default 256 = 16x16) are sum-pooled in ``f x f``
  blocks (mass preserved; e.g. LLaVA-1.5's 24x24 -> 12x12), and the stored
  ``grid`` is the pooled one;
- values are rounded to float16 and written with 3 significant digits; NaN
  (a word with no token left after truncation) is ``null``;
- the thumbnail is the image *as the model sees it* (centre crop or resize,
  from the processor's geometry), at most 96 px, PNG, as a data URI.

Three examples of a 12-layer model with a 12x12 grid (ViLT-B/32 at 384 px) and
8 words come to about 110 KB of JSON (about 200 KB with a selected head) and
80 KB of HTML; the thumbnails (~10 KB each) dominate for the tiny presets.

Series key: ``series["attention_image"]`` (:data:`SERIES_KEY`) holds
:meth:`ExampleMaps.result`::

    {"examples": [{"uid", "caption", "words": [...], "word_index": [...],
                   "thumbnail": "data:image/png;base64,..." | None,
                   "grid": [rows, cols], "kind": "word->patch" | "word->region"
                   | "cls->patch" | "mean->patch", "stream": "joint" | ...,
                   "layers": [1-based block numbers], "maps": {"<layer>": [[...
                   rows*cols per word]] | [rows*cols]}, "maps_head": {...}
                   (only when a head is selected), "boxes": [[x0, y0, x1, y1]]
                   (word->region with known boxes)}],
     "head": None | int, "skipped": ["uid: reason", ...]}
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmdiag.analyses.thumbnails import thumbnail_uri
from mmdiag.analyses.word_attention import (cls_to_patch, joint_word_ids, pick_layers, pool_grid, select_words,
                                            word_to_patch)
from mmdiag.data.images import open_image
from mmdiag.models.base import GROUP_IMAGE, GROUP_TEXT, optional
from mmdiag.models.dual import caption_words
from mmdiag.models.region_features import normalized_boxes, sample_boxes
from mmdiag.models.regions import preprocess_geometry
from mmdiag.record import with_opened_image

__all__ = [
    "SERIES_KEY",
    "ExampleMaps",
    "example_maps",
]

#: the results.json ``series`` key of :meth:`ExampleMaps.result`
SERIES_KEY = "attention_image"


def _compact(values: torch.Tensor) -> list:
    """float16-rounded, 3 significant digits, NaN -> None; nested lists like the tensor."""
    arr = values.detach().to("cpu", torch.float32).numpy().astype(np.float16).astype(np.float64)

    def one(v: float) -> Optional[float]:
        return None if not math.isfinite(v) else float(f"{v:.3g}")

    if arr.ndim == 1:
        return [one(v) for v in arr.tolist()]
    return [[one(v) for v in row] for row in arr.tolist()]


# --------------------------------------------------------------------------
# the collector
# --------------------------------------------------------------------------

class ExampleMaps:
    """Collects word->image attention maps of the first ``k`` samples (see the module doc).

    ``head``: also keep that head's maps (``maps_head``); None keeps only the
    mean over heads. ``geometry``: the image processor's geometry
    (:func:`mmdiag.models.regions.preprocess_geometry`) for the thumbnail; None uses the
    input's aspect (``trace.image_size``) with a plain resize.
    """

    def __init__(self, k: int = 3, head: Optional[int] = None,
                 geometry: Optional[tuple[str, tuple[int, int]]] = None, max_words: int = 8,
                 max_layers: int = 3, max_cells: int = 256, thumb_px: int = 96, explore: int = 0) -> None:
        from mmdiag.recording.explore import Explorer

        if head is not None and head < 0:
            raise ValueError(f"head must be >= 0, got {head}")
        self.k = int(k)
        self.head = head
        self.geometry = geometry
        self.max_words = int(max_words)
        self.max_layers = int(max_layers)
        self.max_cells = int(max_cells)
        self.thumb_px = int(thumb_px)
        self.examples: list[dict] = []
        self.skipped: list[str] = []
        #: every layer's and head's attention of the first ``explore`` samples, for the report's explorer
        self.explorer = Explorer(explore) if explore > 0 else None

    @classmethod
    def for_adapter(cls, adapter: Any, **kwargs: Any) -> "ExampleMaps":
        """An instance with the thumbnail geometry of ``adapter``'s image processor (if it has one)."""
        processor = optional(adapter, "image_processor")
        if processor is not None and "geometry" not in kwargs:
            try:
                kwargs["geometry"] = preprocess_geometry(processor)
            except (KeyError, TypeError, ValueError):
                pass
        return cls(**kwargs)

    @property
    def full(self) -> bool:
        return len(self.examples) >= self.k

    @staticmethod
    def choose_stream(trace: Any) -> Optional[tuple[str, str]]:
        """``(stream, "word"|"cls")``: joint > cross (word maps) > the image tower (cls maps); None if none."""
        for stream in ("joint", "cross"):
            found = trace.attention.get(stream)
            if (found is not None and found.maps and found.groups is not None and trace.word_ids is not None
                    and bool((found.groups == GROUP_IMAGE).any()) and bool((found.groups == GROUP_TEXT).any())):
                return stream, "word"
        image = trace.attention.get("image")
        if image is not None and image.maps and image.groups is not None and trace.patch_grid:
            return "image", "cls"
        return None

    def update(self, trace: Any, samples: Sequence[Any]) -> None:
        """Add examples from one batch: ``samples`` are the batch's samples, in the trace's row order."""
        if self.explorer is not None and not self.explorer.full:
            self.explorer.update(trace, samples, self._base)
        if self.full:
            return
        choice = self.choose_stream(trace)
        if choice is None:
            return
        stream, mode = choice
        maps = trace.attention[stream].maps
        if self.head is not None and self.head >= maps[0].shape[1]:
            raise ValueError(f"head {self.head} does not exist: the {stream} stream has {maps[0].shape[1]} heads")
        for b, sample in enumerate(samples):
            if self.full:
                break
            try:
                example = (self._word_example if mode == "word" else self._cls_example)(trace, stream, b, sample)
            except ValueError as exc:
                self.skipped.append(f"{getattr(sample, 'uid', b)}: {exc}")
                continue
            self.examples.append(example)

    def result(self) -> dict:
        """The JSON-able series entry (``series["attention_image"]``)."""
        out = {"examples": list(self.examples), "head": self.head, "skipped": list(self.skipped)}
        if self.explorer is not None:
            out["explore"] = self.explorer.result()
        return out

    # -- per sample ------------------------------------------------------------
    def _grid(self, trace: Any, groups: torch.Tensor) -> Optional[tuple[int, int]]:
        """The patch grid if the IMAGE tokens can fill it, else None (a strip of every image token)."""
        grid = trace.patch_grid
        if grid is None:
            return None
        n_image = int((groups == GROUP_IMAGE).sum())
        return (int(grid[0]), int(grid[1])) if n_image >= int(grid[0]) * int(grid[1]) else None

    def _base(self, trace: Any, stream: str, sample: Any, grid: Optional[tuple[int, int]]) -> dict:
        if grid is not None:
            aspect = None
            if trace.image_size is not None and self.geometry is None:
                aspect = trace.image_size[1] / trace.image_size[0]
            thumb = thumbnail_uri(getattr(sample, "image", None), self.thumb_px, self.geometry, aspect)
        else:
            thumb = thumbnail_uri(getattr(sample, "image", None), self.thumb_px)
        return {"uid": str(getattr(sample, "uid", "")), "caption": str(getattr(sample, "caption", "") or ""),
                "thumbnail": thumb, "stream": stream}

    def _pool(self, maps: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if grid[0] == 1 or grid[1] == 1:
            return maps, grid
        return pool_grid(maps, grid, self.max_cells)

    def _word_example(self, trace: Any, stream: str, b: int, sample: Any) -> dict:
        groups = trace.attention[stream].groups[b]
        wids = joint_word_ids(groups, trace.word_ids[b])
        grid = self._grid(trace, groups)
        n_keys = int(grid[0] * grid[1]) if grid else int((groups == GROUP_IMAGE).sum())
        if n_keys == 0:
            raise ValueError("no image token in the stream")
        n_words = int(wids.max()) + 1 if bool((wids >= 0).any()) else 0
        if n_words == 0:
            raise ValueError("no caption word in the stream")
        words = caption_words(sample) if (getattr(sample, "words", None) is not None
                                          or isinstance(getattr(sample, "caption", None), str)) else []
        labels = [words[i] if i < len(words) else f"w{i}" for i in range(n_words)]
        tree = getattr(sample, "tree", None)
        upos = list(tree.upos) if tree is not None and len(tree.upos) == len(words) else None
        chosen = select_words(labels, upos[:n_words] if upos else None, self.max_words)
        index = torch.tensor(chosen, dtype=torch.long, device=groups.device)
        layers = pick_layers(len(trace.attention[stream].maps), self.max_layers)
        in_grid = out_grid = grid or (1, n_keys)
        maps, head_maps = {}, {}
        for layer in layers:
            attn = trace.attention[stream].maps[layer - 1][b]
            m, out_grid = self._pool(word_to_patch(attn, groups, wids, grid)[index], in_grid)
            maps[str(layer)] = _compact(m)
            if self.head is not None:
                h, _ = self._pool(word_to_patch(attn[self.head:self.head + 1], groups, wids, grid)[index], in_grid)
                head_maps[str(layer)] = _compact(h)
        example = self._base(trace, stream, sample, grid)
        kind = "word->patch" if grid is not None else "word->region"
        example.update({"words": [labels[i] for i in chosen], "word_index": chosen, "grid": list(out_grid),
                        "kind": kind, "layers": layers, "maps": maps})
        if self.head is not None:
            example["maps_head"] = head_maps
        if grid is None:
            boxes = self._boxes(sample, n_keys)
            if boxes is not None:
                example["boxes"] = boxes
        return example

    @staticmethod
    def _boxes(sample: Any, n_regions: int) -> Optional[list]:
        """The sample's region boxes normalised to [0, 1] when they match the region tokens."""
        image = getattr(sample, "image", None)
        if image is None or not hasattr(image, "size"):
            return None
        boxes = sample_boxes(sample)
        if len(boxes) != n_regions:
            return None
        return [[round(float(v), 4) for v in row] for row in normalized_boxes(boxes, image.size).tolist()]

    def _cls_example(self, trace: Any, stream: str, b: int, sample: Any) -> dict:
        groups = trace.attention[stream].groups[b]
        grid = self._grid(trace, groups)
        if grid is None:
            raise ValueError("the image tower's tokens do not fill the patch grid")
        layers = pick_layers(len(trace.attention[stream].maps), self.max_layers)
        maps, head_maps, kind, out_grid = {}, {}, "cls->patch", grid
        for layer in layers:
            attn = trace.attention[stream].maps[layer - 1][b]
            m, kind = cls_to_patch(attn, groups, grid)
            m, out_grid = self._pool(m, grid)
            maps[str(layer)] = _compact(m)
            if self.head is not None:
                h, _ = cls_to_patch(attn[self.head:self.head + 1], groups, grid)
                head_maps[str(layer)] = _compact(self._pool(h, grid)[0])
        example = self._base(trace, stream, sample, grid)
        example.update({"words": [], "word_index": [], "grid": list(out_grid), "kind": kind,
                        "layers": layers, "maps": maps})
        if self.head is not None:
            example["maps_head"] = head_maps
        return example


def example_maps(adapter: Any, samples: Sequence[Any], k: int = 3, head: Optional[int] = None) -> dict:
    """One extra forward pass over the first ``k`` samples with attentions on; returns the series entry.

    For runs whose activations came from the cache (no traces to read), or as a
    stand-alone helper. Restores the adapter's ``output_attentions`` afterwards.
    """
    collector = ExampleMaps.for_adapter(adapter, k=k, head=head)
    chosen = [with_opened_image(s, open_image) for s in list(samples)[:k]]
    if not chosen:
        return collector.result()
    before = optional(adapter, "output_attentions")
    adapter.output_attentions = True
    try:
        collector.update(adapter.forward(adapter.prepare(chosen)), chosen)
    finally:
        adapter.output_attentions = before
    return collector.result()
