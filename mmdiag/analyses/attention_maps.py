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
  (:func:`mmdiag.region_features.sample_boxes`: whole image, then phrase boxes)
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

import base64
import io
import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from mmdiag.metrics.attention import IMAGE as G_IMAGE, PAD, TEXT as G_TEXT

__all__ = [
    "SERIES_KEY",
    "ExampleMaps",
    "cls_to_patch",
    "example_maps",
    "joint_word_ids",
    "pick_layers",
    "pool_grid",
    "select_words",
    "thumbnail_uri",
    "word_to_patch",
]

#: the results.json ``series`` key of :meth:`ExampleMaps.result`
SERIES_KEY = "attention_image"
CONTENT_UPOS = frozenset({"NOUN", "PROPN", "ADJ", "VERB", "NUM"})
STOP_WORDS = frozenset(
    "a an the and or but of to in on at by for with from into onto over under above below next near "
    "is are was were be been being it its this that these those there here which who whom whose "
    "as than then so not no yes do does did has have had i you he she we they him her them his "
    "their our your my me us , . ; : ! ? - ' \"".split())


# --------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------

def joint_word_ids(groups: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
    """Word ids at the joint-stream positions: ``(T,)`` long, -1 off the caption's tokens.

    ``groups`` ``(T,)`` are one sample's stream groups, ``word_ids`` ``(T_text,)``
    the adapter's word ids of its text slice. The TEXT positions of the stream,
    in order, get the ``word_ids >= 0`` entries, in order. Raises ValueError when
    their counts differ (the alignment assumption of the module doc fails).
    """
    text_pos = torch.nonzero(groups == G_TEXT).flatten()
    words = word_ids[word_ids >= 0].to(groups.device)
    if text_pos.numel() != words.numel():
        raise ValueError(f"{text_pos.numel()} TEXT tokens in the stream but {words.numel()} word-aligned "
                         f"text tokens: cannot align words")
    out = torch.full(groups.shape, -1, dtype=torch.long, device=groups.device)
    out[text_pos] = words.long()
    return out


def _grid_keys(groups: torch.Tensor, grid: Optional[tuple[int, int]]) -> torch.Tensor:
    """Positions of the image tokens forming ``grid`` (row-major); the last ``rows*cols`` IMAGE tokens."""
    image_pos = torch.nonzero(groups == G_IMAGE).flatten()
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
    kind ``"cls->patch"``; without one (SigLIP) the mean over valid (non-PAD)
    queries of the attention each patch receives, kind ``"mean->patch"``.
    """
    if attn.dim() != 3 or attn.shape[1] != attn.shape[2] or attn.shape[1] != groups.shape[0]:
        raise ValueError(f"attention {tuple(attn.shape)} does not match {groups.shape[0]} tokens")
    keys = _grid_keys(groups, grid)
    mean = attn.float().mean(dim=0)
    if int(groups[0]) != G_IMAGE and int(groups[0]) != PAD:
        return mean[0, keys], "cls->patch"
    queries = groups != PAD
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


def _centre_crop(image: Any, aspect: float) -> Any:
    """The largest centred part of ``image`` with ``aspect`` (width / height)."""
    width, height = image.size
    if width / height > aspect:  # too wide: cut the sides
        new_w = height * aspect
        left = (width - new_w) / 2
        return image.crop((round(left), 0, round(left + new_w), height))
    new_h = width / aspect
    top = (height - new_h) / 2
    return image.crop((0, round(top), width, round(top + new_h)))


def thumbnail_uri(image: Any, px: int = 96, geometry: Optional[tuple[str, tuple[int, int]]] = None,
                  aspect: Optional[float] = None) -> Optional[str]:
    """A PNG data URI of ``image`` as the model sees it, at most ``px`` pixels on the long side.

    ``geometry`` is :func:`mmdiag.regions.preprocess_geometry`'s ``(mode, (h, w))``:
    ``crop`` cuts the centre to the input's aspect, ``resize`` stretches to it;
    ``aspect`` (width / height) overrides the output aspect; None keeps the
    image's own. Returns None for something that is not a PIL image.
    """
    if image is None or not hasattr(image, "convert") or not hasattr(image, "size"):
        return None
    from PIL import Image

    img = image.convert("RGB")
    if aspect is None:
        aspect = (geometry[1][1] / geometry[1][0]) if geometry is not None else img.size[0] / img.size[1]
    if geometry is not None and geometry[0] == "crop":
        img = _centre_crop(img, aspect)
    if aspect >= 1:
        size = (px, max(1, round(px / aspect)))
    else:
        size = (max(1, round(px * aspect)), px)
    img = img.resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
    (:func:`mmdiag.regions.preprocess_geometry`) for the thumbnail; None uses the
    input's aspect (``trace.image_size``) with a plain resize.
    """

    def __init__(self, k: int = 3, head: Optional[int] = None,
                 geometry: Optional[tuple[str, tuple[int, int]]] = None, max_words: int = 8,
                 max_layers: int = 3, max_cells: int = 256, thumb_px: int = 96) -> None:
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

    @classmethod
    def for_adapter(cls, adapter: Any, **kwargs: Any) -> "ExampleMaps":
        """An instance with the thumbnail geometry of ``adapter``'s image processor (if it has one)."""
        processor = getattr(adapter, "image_processor", None)
        if processor is not None and "geometry" not in kwargs:
            from mmdiag.regions import preprocess_geometry

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
            groups = trace.groups.get(stream)
            if (trace.attentions.get(stream) and groups is not None and trace.word_ids is not None
                    and bool((groups == G_IMAGE).any()) and bool((groups == G_TEXT).any())):
                return stream, "word"
        if trace.attentions.get("image") and trace.groups.get("image") is not None and trace.patch_grid:
            return "image", "cls"
        return None

    def update(self, trace: Any, samples: Sequence[Any]) -> None:
        """Add examples from one batch: ``samples`` are the batch's samples, in the trace's row order."""
        if self.full:
            return
        choice = self.choose_stream(trace)
        if choice is None:
            return
        stream, mode = choice
        maps = trace.attentions[stream]
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
        return {"examples": list(self.examples), "head": self.head, "skipped": list(self.skipped)}

    # -- per sample ------------------------------------------------------------
    def _grid(self, trace: Any, groups: torch.Tensor) -> Optional[tuple[int, int]]:
        """The patch grid if the IMAGE tokens can fill it, else None (a strip of every image token)."""
        grid = trace.patch_grid
        if grid is None:
            return None
        n_image = int((groups == G_IMAGE).sum())
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
        from mmdiag.models.dual import caption_words

        groups = trace.groups[stream][b]
        wids = joint_word_ids(groups, trace.word_ids[b])
        grid = self._grid(trace, groups)
        n_keys = int(grid[0] * grid[1]) if grid else int((groups == G_IMAGE).sum())
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
        layers = pick_layers(len(trace.attentions[stream]), self.max_layers)
        in_grid = out_grid = grid or (1, n_keys)
        maps, head_maps = {}, {}
        for layer in layers:
            attn = trace.attentions[stream][layer - 1][b]
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
        from mmdiag.region_features import normalized_boxes, sample_boxes

        boxes = sample_boxes(sample)
        if len(boxes) != n_regions:
            return None
        return [[round(float(v), 4) for v in row] for row in normalized_boxes(boxes, image.size).tolist()]

    def _cls_example(self, trace: Any, stream: str, b: int, sample: Any) -> dict:
        groups = trace.groups[stream][b]
        grid = self._grid(trace, groups)
        if grid is None:
            raise ValueError("the image tower's tokens do not fill the patch grid")
        layers = pick_layers(len(trace.attentions[stream]), self.max_layers)
        maps, head_maps, kind, out_grid = {}, {}, "cls->patch", grid
        for layer in layers:
            attn = trace.attentions[stream][layer - 1][b]
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
    from mmdiag.data.images import open_image
    from mmdiag.record import _with_image

    collector = ExampleMaps.for_adapter(adapter, k=k, head=head)
    chosen = [_with_image(s, open_image) for s in list(samples)[:k]]
    if not chosen:
        return collector.result()
    before = getattr(adapter, "output_attentions", False)
    adapter.output_attentions = True
    try:
        collector.update(adapter.forward(adapter.prepare(chosen)), chosen)
    finally:
        adapter.output_attentions = before
    return collector.result()
