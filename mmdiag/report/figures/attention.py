"""The attention figures: the modality share per layer and head, and attention over the image.

The share heatmaps summarise how much a query of one modality attends to keys of
the other (DESIGN.md section 1.3, after VL-InterpreT, arXiv:2203.17247).  The
over-image view makes the same weights concrete for a few example pairs: per
caption word and layer, where on the thumbnail the attention lands.  It is
hand-written SVG (thumbnail, heat overlay as a tiny PNG or region boxes, and the
mass on the image); words, captions and thumbnails from the document are escaped
or dropped, so nothing is ever fetched.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from markupsafe import escape
from matplotlib.figure import Figure

from mmdiag.report.figures.coerce import floats, int_pair, is_int, matrix
from mmdiag.report.figures.png import png_size, png_uri
from mmdiag.report.figures.style import grid as subplot_grid, label, style
from mmdiag.report.figures.svg import to_svg

__all__ = ["ATTN_MAX_CELLS", "ATTN_MAX_EXAMPLES", "ATTN_MAX_LAYERS", "ATTN_MAX_WORDS",
           "attention_image_svg", "attention_plot"]


def attention_plot(att: Any) -> Optional[str]:
    """Attention mass share heatmaps (layer × head), one panel per direction.

    ``att`` is ``series["attention.share"]``: ``{"layers": [...], "heads": H,
    "directions": {"text->image": [[share per head] per layer], ...}}``; the
    share is the row-normalised attention mass a query of modality A puts on
    keys of modality B (DESIGN.md section 1.3, after VL-InterpreT,
    arXiv:2203.17247).  All panels share one colour scale from 0 (one colour bar);
    the directions are the document's, whatever they are.  Panels of one query
    modality (``text->image``, ``text->text``, ``text->special``) share a row:
    their shares add up to 1 cell by cell.
    """
    if not isinstance(att, Mapping) or not isinstance(att.get("directions"), Mapping):
        return None
    panels = [(str(k), matrix(v)) for k, v in att["directions"].items()]
    panels = [(k, m) for k, m in panels if m is not None]
    if not panels:
        return None
    layers = floats(att.get("layers"))
    query = [k.split("->")[0] for k, _ in panels]  # panels grouped by query modality, one row each
    order = list(dict.fromkeys(query))
    panels = [p for _, p in sorted(zip(query, panels), key=lambda qp: order.index(qp[0]))]
    rows, cols = subplot_grid(len(panels), min(4, max(query.count(q) for q in order)))
    with style():
        fig = Figure(figsize=(3.1 * cols, 2.9 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        vmax = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for _, m in panels)
        vmax = vmax if vmax > 0 else 1.0
        im = None
        for ax, (name, mat) in zip(axes.flat, panels):
            im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", interpolation="none",
                           cmap="viridis", vmin=0.0, vmax=vmax)
            ax.grid(False)
            ax.set_title(label(f"{name} (mean {np.nanmean(mat):.2f})"))
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            n_layers, n_heads = mat.shape
            ystep = max(1, math.ceil(n_layers / 7))
            yt = np.arange(0, n_layers, ystep)
            ax.set_yticks(yt)
            if layers is not None and layers.size == n_layers and np.isfinite(layers).all():
                ax.set_yticklabels([f"{layers[i]:g}" for i in yt])
            ax.set_xticks(np.arange(0, n_heads, max(1, math.ceil(n_heads / 7))))
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85, label="attention share (one scale for all panels)")
        return to_svg(fig, "attention-share")


#: Most examples, words per example and layers drawn in the attention-over-image view.
ATTN_MAX_EXAMPLES = 6
ATTN_MAX_WORDS = 12
ATTN_MAX_LAYERS = 4
#: Most cells of one map (a larger grid is not drawn).
ATTN_MAX_CELLS = 4096
_ATTN_PANEL = 112  # panel height in px
_ATTN_GAP = 6
_ATTN_LABEL_W = 58
_DATA_IMAGE_RE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")
_KIND_TEXT = {
    "word->patch": "attention from each caption word (mean over its sub-word tokens and over heads) "
                   "to the image patches",
    "word->region": "attention from each caption word (mean over its sub-word tokens and over heads) "
                    "to the image regions",
    "cls->patch": "attention of the vision tower's CLS token to the patches (mean over heads)",
    "mean->patch": "attention each patch receives in the vision tower, mean over queries and heads "
                   "(the tower has no CLS token)",
}


def _heat_rgba(v: np.ndarray) -> np.ndarray:
    """``v`` in [0, 1] (NaN: transparent) -> uint8 RGBA: red (low) to yellow (high), alpha 0.8·v."""
    finite = np.isfinite(v)
    x = np.where(finite, np.clip(v, 0.0, 1.0), 0.0)
    rgba = np.zeros(v.shape + (4,), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.round(230 * x).astype(np.uint8)
    rgba[..., 2] = np.round(40 * x).astype(np.uint8)
    rgba[..., 3] = np.where(finite, np.round(255 * 0.8 * x), 0).astype(np.uint8)
    return rgba


#: The heat scale, shared by every panel: a cell at this many times the uniform share is drawn at full heat.
HEAT_FULL_RATIO = 4.0


def _contrast(vec: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] on one scale for every panel: the cell's attention relative to uniform.

    ``v = clip((x / mean − 1) / (R − 1), 0, 1)`` with ``R`` = :data:`HEAT_FULL_RATIO`: uniform attention
    (every cell at the mean) shows no heat, a cell at R times the uniform share or more shows full heat,
    so two panels' colours compare directly (the legend under each example shows the scale).
    """
    finite = np.isfinite(vec)
    if not finite.any():
        return np.full(vec.shape, np.nan)
    mean = float(np.mean(vec[finite]))
    if not mean > 0:
        return np.where(finite, 0.0, np.nan)
    return np.where(finite, np.clip((vec / mean - 1.0) / (HEAT_FULL_RATIO - 1.0), 0.0, 1.0), np.nan)


def _legend(x: float, y: float) -> list[str]:
    """The shared heat scale as a small bar: 1× (uniform) to ≥R× the uniform share."""
    ramp = png_uri(_heat_rgba(np.linspace(0.0, 1.0, 64).reshape(1, 64)))
    r = HEAT_FULL_RATIO
    return [f'<g class="heat-legend" transform="translate({x:.0f},{y:.0f})">',
            f'<rect width="240" height="10" fill="#e5e7ea"/><image class="ramp" href="{ramp}" width="240" height="10" '
            'preserveAspectRatio="none"/><rect width="240" height="10" fill="none" stroke="#d0d7de"/>',
            '<text x="0" y="22" font-size="9" fill="#57606a">1× (uniform)</text>',
            f'<text x="120" y="22" font-size="9" text-anchor="middle" fill="#57606a">{(1 + r) / 2:g}×</text>',
            f'<text x="240" y="22" font-size="9" text-anchor="end" fill="#57606a">≥{r:g}×</text>',
            '<text x="250" y="9" font-size="9" fill="#57606a">attention relative to the uniform share '
            '(one scale for every panel)</text>',
            '</g>']


def _fit(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 1, 1)] + "…"


def _attention_panel(vec: Optional[np.ndarray], grid: tuple[int, int], boxes: Optional[list],
                     x: float, y: float, w: float, h: float, thumb_ref: Optional[str]) -> list[str]:
    """One small multiple: the grey thumbnail, the heat overlay and the mass on the image below."""
    out = [f'<g transform="translate({x:.1f},{y:.1f})">']
    if thumb_ref:
        out.append(f'<use href="#{thumb_ref}" filter="url(#{thumb_ref}-grey)"/>')
    else:
        out.append(f'<rect width="{w:.0f}" height="{h:.0f}" fill="#e5e7ea"/>')
    rows, cols = grid
    if vec is None or vec.size != rows * cols or not np.isfinite(vec).any():
        out.append(f'<text x="{w / 2:.1f}" y="{h / 2 + 4:.1f}" text-anchor="middle" fill="#57606a">—</text>')
    else:
        norm = _contrast(vec)
        mass = float(np.nansum(vec))
        if boxes is not None:
            order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
            for i in order:
                v = float(norm[i]) if np.isfinite(norm[i]) else 0.0
                r, g, b, _ = _heat_rgba(np.array([v]))[0]
                x0, y0, x1, y1 = boxes[i]
                out.append(f'<rect x="{x0 * w:.1f}" y="{y0 * h:.1f}" width="{max(x1 - x0, 0) * w:.1f}" '
                           f'height="{max(y1 - y0, 0) * h:.1f}" fill="rgb({r},{g},{b})" '
                           f'fill-opacity="{0.55 * v:.2f}" stroke="rgb({r},{g},{b})" '
                           f'stroke-opacity="{0.25 + 0.75 * v:.2f}" stroke-width="1.2"/>')
        elif rows == 1 and cols > 1 and thumb_ref is not None:
            # regions without boxes: a strip of cells under the picture
            out.append(f'<image href="{png_uri(_heat_rgba(norm.reshape(1, cols)))}" y="{h - 10:.0f}" '
                       f'width="{w:.0f}" height="10" preserveAspectRatio="none" '
                       'style="image-rendering:pixelated"/>')
        else:
            out.append(f'<image href="{png_uri(_heat_rgba(norm.reshape(rows, cols)))}" width="{w:.0f}" '
                       f'height="{h:.0f}" preserveAspectRatio="none" style="image-rendering:pixelated"/>')
        out.append(f'<text class="mass" x="{w / 2:.1f}" y="{h + 11:.1f}" text-anchor="middle" font-size="9" '
                   f'fill="#57606a">Σ {mass:.2f}</text>')
    out.append(f'<rect width="{w:.0f}" height="{h:.0f}" fill="none" stroke="#d0d7de"/></g>')
    return out


def _attention_example(ex: Any, index: int, head: Optional[int]) -> Optional[str]:
    """The small multiples of one example (see :func:`attention_image_svg`)."""
    if not isinstance(ex, Mapping):
        return None
    grid = int_pair(ex.get("grid"))
    maps = ex.get("maps")
    if grid is None or grid[0] * grid[1] > ATTN_MAX_CELLS or not isinstance(maps, Mapping):
        return None
    kind = str(ex.get("kind") or "")
    per_word = kind.startswith("word")
    layers = [str(layer) for layer in ex.get("layers") or [] if str(layer) in maps] \
        if isinstance(ex.get("layers"), (list, tuple)) else []
    if not layers:
        layers = [str(k) for k in maps][:ATTN_MAX_LAYERS]
    layers = layers[:ATTN_MAX_LAYERS]
    head_maps = ex.get("maps_head") if isinstance(ex.get("maps_head"), Mapping) else None
    words = ex.get("words") if isinstance(ex.get("words"), (list, tuple)) else []
    words = ["" if w is None else str(w) for w in words][:ATTN_MAX_WORDS]

    boxes = None
    raw_boxes = ex.get("boxes")
    if kind == "word->region" and isinstance(raw_boxes, (list, tuple)) and len(raw_boxes) == grid[0] * grid[1]:
        parsed = [floats(b) for b in raw_boxes]
        if all(b is not None and b.size == 4 and np.isfinite(b).all() for b in parsed):
            boxes = [np.clip(b, 0.0, 1.0).tolist() for b in parsed]  # type: ignore[union-attr]

    thumb = ex.get("thumbnail")
    thumb = thumb if isinstance(thumb, str) and _DATA_IMAGE_RE.fullmatch(thumb) else None
    size = png_size(thumb) if thumb else None
    if size is not None and (boxes is not None or grid[0] == 1):
        aspect = size[0] / size[1]
    elif grid[0] > 1:
        aspect = grid[1] / grid[0]
    else:
        aspect = 1.0
    h = float(_ATTN_PANEL)
    w = float(round(h * min(max(aspect, 0.5), 2.0)))

    # panel table: (row label, [vector per column]); columns = words, or layers for cls maps
    def vec(value: Any) -> Optional[np.ndarray]:
        return floats(value) if isinstance(value, (list, tuple)) else None

    table: list[tuple[str, list[Optional[np.ndarray]]]] = []
    if per_word:
        if not words:
            return None
        columns = words
        for layer in layers:
            sources = [("", maps)] + ([(f" h{head}", head_maps)] if head_maps is not None else [])
            for suffix, source in sources:
                rows_ = source.get(layer)
                rows_ = rows_ if isinstance(rows_, (list, tuple)) else []
                table.append((f"L{layer}{suffix}", [vec(rows_[j]) if j < len(rows_) else None
                                                    for j in range(len(words))]))
    else:
        columns = [f"L{layer}" for layer in layers]
        table.append(("mean", [vec(maps.get(layer)) for layer in layers]))
        if head_maps is not None:
            table.append((f"head {head}", [vec(head_maps.get(layer)) for layer in layers]))
    if not any(v is not None and v.size == grid[0] * grid[1] and np.isfinite(v).any()
               for _, vs in table for v in vs):
        return None

    ref = f"attention-image-{index}"
    x_thumb = 0.0
    x_label = w + 14.0
    x0 = x_label + _ATTN_LABEL_W
    col_w = max(w, 7.0 * max((len(_fit(c, 14)) for c in columns), default=1)) + _ATTN_GAP
    y_head = 44.0
    y0 = y_head + 8.0
    row_h = h + 18.0
    width = x0 + col_w * len(columns) + 4
    uid = str(ex.get("uid") or f"example {index + 1}")
    caption = str(ex.get("caption") or "")
    title = _fit(f"{uid}: {caption}" if caption else uid, 160)
    stream = str(ex.get("stream") or "")
    where = f" ({stream} stream)" if stream else ""
    note = (f"{_KIND_TEXT.get(kind, kind or 'attention map')}{where}. Heat: attention relative to uniform, "
            f"one scale for all panels (legend below); Σ: total weight on the image.")
    width = max(width, 6.2 * len(note) + 10, 6.6 * len(title) + 10)
    height = y0 + row_h * len(table) + 34
    out = [f'<svg class="plot attention-image" data-plot="attention-image" data-example="{index}" '
           f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
           f'aria-label="{escape(title)}">']
    if thumb is not None:
        out.append(f'<defs><image id="{ref}" href="{escape(thumb)}" width="{w:.0f}" height="{h:.0f}" '
                   'preserveAspectRatio="none"/>'
                   f'<filter id="{ref}-grey"><feColorMatrix type="saturate" values="0.15"/></filter></defs>')
    out.append('<g font-family="DejaVu Sans, Arial, Helvetica, sans-serif" font-size="11" fill="#1f2328">')
    out.append(f'<text x="0" y="13" font-weight="600">{escape(title)}</text>')
    out.append(f'<text x="0" y="29" font-size="10" fill="#57606a">{escape(note)}</text>')
    if thumb is not None:
        out.append(f'<use href="#{ref}" x="{x_thumb:.0f}" y="{y0:.0f}"/>')
        out.append(f'<text x="{x_thumb + w / 2:.1f}" y="{y_head:.0f}" text-anchor="middle" font-size="10" '
                   'fill="#57606a">image</text>')
    for j, c in enumerate(columns):
        out.append(f'<text class="column" x="{x0 + j * col_w + w / 2:.1f}" y="{y_head:.0f}" '
                   f'text-anchor="middle">{escape(_fit(c, 14))}</text>')
    for i, (row_label, vectors) in enumerate(table):
        y = y0 + i * row_h
        out.append(f'<text class="row" x="{x_label:.0f}" y="{y + h / 2 + 4:.1f}" font-size="10">'
                   f'{escape(row_label)}</text>')
        for j, v in enumerate(vectors):
            out.extend(_attention_panel(v, grid, boxes, x0 + j * col_w, y, w, h,
                                        ref if thumb is not None else None))
    out.extend(_legend(x0, y0 + row_h * len(table) + 2))
    out.append("</g></svg>")
    return "\n".join(out)


def attention_image_svg(entry: Any) -> Optional[str]:
    """Attention drawn over the image, one block of small multiples per example.

    ``entry`` is ``series["attention_image"]``
    (:meth:`mmdiag.analyses.attention_maps.ExampleMaps.result`): ``{"examples":
    [{"uid", "caption", "words", "thumbnail" (a data URI), "grid": [rows, cols],
    "kind", "stream", "layers", "maps": {layer: [[rows*cols] per word] or
    [rows*cols]}, "maps_head"?, "boxes"?}], "head"}``.  Per word (columns) and
    layer (rows; plus the selected head's rows when present) the thumbnail is
    drawn desaturated with the map on top: an RGBA PNG of ``rows x cols`` pixels
    (red to yellow, alpha 0.8 × :func:`_contrast`, the ratio to uniform attention
    on one scale for all panels) stretched over it with
    pixelated scaling, or, for region maps with boxes, one translucent rectangle
    per region.  Under each panel: the map's sum (the weight on the image).
    For CLS maps the columns are the layers.  Returns an HTML fragment (a
    ``<div>`` of inline SVGs) or None when nothing can be drawn.  Thumbnails
    that are not ``data:image/...;base64`` URIs are dropped, so nothing is ever
    fetched; words and captions are escaped.
    """
    if not isinstance(entry, Mapping) or not isinstance(entry.get("examples"), (list, tuple)):
        return None
    head = entry.get("head")
    head = int(head) if is_int(head) else None
    blocks = [svg for i, ex in enumerate(entry["examples"][:ATTN_MAX_EXAMPLES])
              if (svg := _attention_example(ex, i, head)) is not None]
    if not blocks:
        return None
    return '<div id="attention-over-image" class="attention-image">\n' + "\n".join(blocks) + "\n</div>"
