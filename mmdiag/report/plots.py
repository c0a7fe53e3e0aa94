"""Inline-SVG plots for the self-contained HTML report.

Each public function takes one entry of a results.json ``series`` mapping
(DESIGN.md section 5) and returns an ``<svg ...>...</svg>`` string ready to be
inlined in HTML, or ``None`` when the entry is missing or holds nothing that can
be drawn.  Inputs are untrusted JSON: missing keys, ``null`` values (also used
for NaN), ragged lists and wrong types are tolerated; a value that cannot be
read as a number is drawn as a gap.

The plots are drawn with matplotlib's object API (``matplotlib.figure.Figure``,
no pyplot, so no global backend is selected or changed) and saved as SVG with
``svg.fonttype = "none"`` (text stays text: no embedded glyphs).  The XML
prolog, DOCTYPE, metadata and namespace declarations are stripped (the HTML
parser does not need them), and every ``id`` is prefixed with the plot's own
prefix so that several inline SVGs never collide in one document.  Text from the
data (legend labels, panel titles, tree words) is XML-escaped: by matplotlib's
SVG writer for the figures and by :func:`markupsafe.escape` for the tree.
"""
from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Optional

import numpy as np
from markupsafe import escape
from matplotlib import rc_context
from matplotlib.figure import Figure

__all__ = [
    "MAX_POINTS",
    "attention_image_svg",
    "attention_plot",
    "cone_plot",
    "embedding_plot",
    "hidden_plot",
    "probe_plot",
    "shift_plot",
    "tree_svg",
]

#: Most points drawn per modality in a scatter plot (evenly subsampled beyond).
MAX_POINTS = 300
#: Most points per modality in each hidden-state panel.
MAX_POINTS_PANEL = 120
#: Most hidden-state panels (layers are evenly subsampled beyond).
MAX_PANELS = 12
#: Most words drawn in the example tree.
MAX_TREE_WORDS = 60

MODALITY_COLORS = {"image": "#1f77b4", "text": "#ff7f0e"}
_FALLBACK_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_CONTROL_COLORS = ["#555555", "#9a9a9a", "#2ca02c", "#9467bd", "#8c564b"]
_PROBE_METRICS = [("nspr", "NSpr"), ("dspr", "DSpr"), ("uuas", "UUAS"), ("root_acc", "root acc")]
_PROBE_STYLES = {"nspr": "o-", "dspr": "s-", "uuas": "^-", "root_acc": "D-"}

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "mmdiag",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "lines.markersize": 3.5,
    "path.simplify": True,
    "text.usetex": False,
}
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


# --------------------------------------------------------------------------
# reading untrusted series values
# --------------------------------------------------------------------------

def _num(value: Any) -> float:
    """A finite-or-NaN float from a JSON scalar; anything unreadable is NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan if value is None else float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def _floats(values: Any) -> Optional[np.ndarray]:
    """A 1-D float array from a JSON list (``null`` -> NaN), or None if not a list."""
    if not isinstance(values, (list, tuple)) or not values:
        return None
    return np.array([_num(v) for v in values], dtype=float)


def _has_data(arr: Optional[np.ndarray]) -> bool:
    return arr is not None and arr.size > 0 and bool(np.isfinite(arr).any())


def _xy(x: Optional[np.ndarray], y: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pair an x axis with y values; a missing or short x axis falls back to 0..n-1."""
    assert y is not None
    if x is None or x.size < y.size or not np.isfinite(x[: y.size]).all():
        return np.arange(y.size, dtype=float), y
    return x[: y.size], y


def _points(values: Any) -> Optional[np.ndarray]:
    """An (n, 2) float array of finite points from ``[[x, y], ...]``; None if empty."""
    if not isinstance(values, (list, tuple)):
        return None
    rows = []
    for item in values:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            p = (_num(item[0]), _num(item[1]))
            if math.isfinite(p[0]) and math.isfinite(p[1]):
                rows.append(p)
    if not rows:
        return None
    return np.array(rows, dtype=float)


def _point(value: Any) -> Optional[np.ndarray]:
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        p = np.array([_num(value[0]), _num(value[1])])
        if np.isfinite(p).all():
            return p
    return None


def _matrix(rows: Any) -> Optional[np.ndarray]:
    """A 2-D float array from a list of lists (ragged rows padded with NaN)."""
    if not isinstance(rows, (list, tuple)) or not rows:
        return None
    parsed = [_floats(r) if isinstance(r, (list, tuple)) else None for r in rows]
    width = max((r.size for r in parsed if r is not None), default=0)
    if width == 0:
        return None
    out = np.full((len(parsed), width), np.nan)
    for i, r in enumerate(parsed):
        if r is not None:
            out[i, : r.size] = r
    return out if np.isfinite(out).any() else None


def _subsample(pts: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` rows of ``pts``, evenly spaced (deterministic)."""
    if pts.shape[0] <= k:
        return pts
    idx = np.unique(np.linspace(0, pts.shape[0] - 1, k).round().astype(int))
    return pts[idx]


def _label(value: Any) -> str:
    """A data string safe for matplotlib text: ``$`` must not start mathtext."""
    return str(value).replace("$", r"\$")


def _color(name: str, i: int) -> str:
    return MODALITY_COLORS.get(name, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])


def _modality_items(mapping: Any, skip: Sequence[str] = ()) -> list[tuple[str, Mapping]]:
    """The ``(name, dict)`` entries of a per-modality mapping, image and text first."""
    if not isinstance(mapping, Mapping):
        return []
    items = [(str(k), v) for k, v in mapping.items()
             if isinstance(v, Mapping) and str(k) not in skip]
    order = {"image": 0, "text": 1}
    return sorted(items, key=lambda kv: order.get(kv[0], 2))


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return (n + cols - 1) // cols, cols


# --------------------------------------------------------------------------
# SVG output
# --------------------------------------------------------------------------

@contextmanager
def _style() -> Iterator[None]:
    with rc_context(_RC):
        yield


_ID_RE = re.compile(r'\bid="([^"]+)"')
_REF_RE = re.compile(r'\bid="([^"]+)"|\bhref="#([^"]+)"|url\(#([^)]+)\)')


def _prefix_ids(svg: str, prefix: str) -> str:
    """Prefix every id (and every reference to it) with ``prefix``."""
    ids = set(_ID_RE.findall(svg))
    if not ids:
        return svg

    seen: Counter = Counter()

    def repl(m: re.Match) -> str:
        if m.group(1) is not None:
            # matplotlib can repeat an id (identical images): keep ids unique
            name = m.group(1)
            seen[name] += 1
            extra = "" if seen[name] == 1 else f"-{seen[name]}"
            return f'id="{prefix}-{name}{extra}"'
        for group, fmt in ((2, 'href="#{}"'), (3, "url(#{})")):
            name = m.group(group)
            if name is not None:
                return fmt.format(f"{prefix}-{name}") if name in ids else m.group(0)
        return m.group(0)  # pragma: no cover - one group always matches

    return _REF_RE.sub(repl, svg)


def _svg(fig: Figure, prefix: str) -> str:
    """Serialise ``fig`` as an inline-ready SVG string (see module docstring)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", svg)
    svg = re.sub(r"\n\s*", "\n", svg)  # indentation is a few % of the bytes
    svg = _prefix_ids(svg, prefix)
    return svg.replace("<svg ", f'<svg class="plot" data-plot="{prefix}" ', 1).strip()


# --------------------------------------------------------------------------
# the plots
# --------------------------------------------------------------------------

def cone_plot(cone: Any) -> Optional[str]:
    """Cone effect per layer, one panel per modality.

    ``cone`` is ``series["cone.layer"]``: ``{modality: {"layers": [...],
    "values": [...], "mean_tokens": [...], "controls": {name: [...]}}}``.
    ``values`` is drawn solid, ``mean_tokens`` dash-dotted, each control dashed.
    """
    panels = []
    for name, entry in _modality_items(cone):
        layers = _floats(entry.get("layers"))
        lines = []
        values = _floats(entry.get("values"))
        if _has_data(values):
            lines.append(("pooled", values, "-", _color(name, 0), "o"))
        tokens = _floats(entry.get("mean_tokens"))
        if _has_data(tokens):
            lines.append(("mean over tokens", tokens, "-.", _color(name, 0), None))
        controls = entry.get("controls")
        if isinstance(controls, Mapping):
            for i, (cname, cvals) in enumerate(controls.items()):
                arr = _floats(cvals)
                if _has_data(arr):
                    lines.append((f"control: {cname}", arr, "--",
                                  _CONTROL_COLORS[i % len(_CONTROL_COLORS)], None))
        if lines:
            panels.append((name, layers, lines))
    if not panels:
        return None
    with _style():
        fig = Figure(figsize=(4.2 * len(panels), 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        lo = 0.0
        for ax, (name, layers, lines) in zip(axes, panels):
            for label, y, ls, color, marker in lines:
                x, y = _xy(layers, y)
                ax.plot(x, y, ls, color=color, marker=marker, label=_label(label))
                lo = min(lo, float(np.nanmin(y)))
            ax.set_title(_label(f"{name}: mean pairwise cosine"))
            ax.set_xlabel("layer")
            ax.legend(loc="best")
        axes[0].set_ylabel("cone (mean cosine)")
        axes[0].set_ylim(lo - 0.02 if lo < 0 else 0.0, 1.02)
        return _svg(fig, "cone-layer")


def embedding_plot(emb: Any) -> Optional[str]:
    """2-D projection of the final image and text embeddings with the gap arrow.

    ``emb`` is ``series["embedding_2d"]``: ``{"image": [[x, y], ...], "text":
    [...], "centroids": {"image": [x, y], "text": [x, y]}}`` (``"method"`` is
    shown in the title when present).  The arrow goes from the text centroid to
    the image centroid, i.e. it is the projected gap vector
    Δ = mean(image) − mean(text) (Liang et al. 2022, arXiv:2203.02053).
    Centroids missing from the series are computed from all the points.
    """
    if not isinstance(emb, Mapping):
        return None
    clouds = [(name, _points(emb.get(name))) for name in ("image", "text")]
    clouds = [(n, p) for n, p in clouds if p is not None]
    if not clouds:
        return None
    given = emb.get("centroids") if isinstance(emb.get("centroids"), Mapping) else {}
    centroids = {}
    for name, pts in clouds:
        c = _point(given.get(name))
        centroids[name] = c if c is not None else pts.mean(axis=0)
    with _style():
        fig = Figure(figsize=(4.6, 3.7), layout="constrained")
        ax = fig.add_subplot()
        for i, (name, pts) in enumerate(clouds):
            sub = _subsample(pts, MAX_POINTS)
            ax.scatter(sub[:, 0], sub[:, 1], s=9, alpha=0.55, linewidths=0,
                       color=_color(name, i), label=f"{name} (n={pts.shape[0]})")
        for i, (name, _pts) in enumerate(clouds):
            c = centroids[name]
            ax.scatter([c[0]], [c[1]], s=90, marker="X", color=_color(name, i),
                       edgecolors="black", linewidths=1.0, zorder=3)
        if "image" in centroids and "text" in centroids:
            ti, im = centroids["text"], centroids["image"]
            ax.annotate("", xy=(im[0], im[1]), xytext=(ti[0], ti[1]), zorder=4,
                        arrowprops={"arrowstyle": "-|>", "lw": 1.8, "color": "black",
                                    "shrinkA": 4, "shrinkB": 4})
            mid = (ti + im) / 2
            ax.annotate("gap Δ", xy=(mid[0], mid[1]), xytext=(6, 6),
                        textcoords="offset points", fontsize=9, fontweight="bold")
        method = emb.get("method")
        title = "final embeddings"
        if isinstance(method, str) and method:
            title += f" ({_label(method)})"
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="best", markerscale=1.5)
        return _svg(fig, "embedding-2d")


def shift_plot(shift: Any) -> Optional[str]:
    """Contrastive loss and recall@1 as a function of the gap shift λ.

    ``shift`` is ``series["gap.shift"]``: ``{"lambda": [...], "loss": [...],
    "recall_i2t": [...], "recall_t2i": [...], "optimum": λ*}`` where the
    embeddings are shifted as x' = normalize(x − λΔ), y' = normalize(y + λΔ)
    (Liang et al. 2022, arXiv:2203.02053, section 4).  λ = 0 (the model as
    trained) and the optimum are marked with vertical lines.
    """
    if not isinstance(shift, Mapping):
        return None
    lam = _floats(shift.get("lambda"))
    if lam is None or not np.isfinite(lam).any():
        return None
    loss = _floats(shift.get("loss"))
    recalls = [(label, _floats(shift.get(key)))
               for key, label in (("recall_i2t", "image→text"), ("recall_t2i", "text→image"))]
    recalls = [(label, r) for label, r in recalls if _has_data(r)]
    panels: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    if _has_data(loss):
        panels.append(("loss", [("symmetric contrastive loss", loss)]))
    if recalls:
        panels.append(("recall@1", recalls))
    if not panels:
        return None
    opt = _num(shift.get("optimum"))
    with _style():
        fig = Figure(figsize=(4.0 * len(panels), 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (ylabel, lines) in zip(axes, panels):
            for i, (label, y) in enumerate(lines):
                n = min(lam.size, y.size)
                order = np.argsort(lam[:n], kind="stable")
                color = ["#333333", "#1f77b4", "#ff7f0e"][i % 3] if ylabel != "loss" else "#333333"
                ax.plot(lam[:n][order], y[:n][order], "o-", color=color, label=label,
                        markersize=2.5)
            ax.axvline(0.0, color="#888888", ls=":", lw=1.2, label="λ = 0 (model)")
            if math.isfinite(opt):
                ax.axvline(opt, color="#d62728", ls="--", lw=1.2, label=f"optimum λ = {opt:.3g}")
            ax.set_xlabel("shift λ")
            ax.set_ylabel(ylabel)
            ax.legend(loc="best")
        if math.isfinite(opt) and _has_data(loss):
            n = min(lam.size, loss.size)
            ok = np.isfinite(lam[:n]) & np.isfinite(loss[:n])
            if ok.any():
                at = float(np.interp(opt, np.sort(lam[:n][ok]),
                                     loss[:n][ok][np.argsort(lam[:n][ok], kind="stable")]))
                axes[0].plot([opt], [at], marker="*", markersize=11, color="#d62728",
                             linestyle="none")
        return _svg(fig, "gap-shift")


def probe_plot(probe: Any) -> Optional[str]:
    """Structural-probe scores per layer (NSpr, DSpr, UUAS, root acc) per modality.

    ``probe`` is ``series["probe"]``: ``{modality: {"layers": [...], "nspr":
    [...], "dspr": [...], "uuas": [...], "root_acc": [...]}, "example": ...}``
    (metrics of Hewitt & Manning, NAACL 2019; scene trees of Milewski et al.
    2022, arXiv:2203.09306).
    """
    panels = []
    for name, entry in _modality_items(probe, skip=("example",)):
        layers = _floats(entry.get("layers"))
        lines = [(key, label, _floats(entry.get(key))) for key, label in _PROBE_METRICS]
        lines = [(k, label, y) for k, label, y in lines if _has_data(y)]
        if lines:
            panels.append((name, layers, lines))
    if not panels:
        return None
    with _style():
        fig = Figure(figsize=(4.2 * len(panels), 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        lo = 0.0
        for ax, (name, layers, lines) in zip(axes, panels):
            for key, label, y in lines:
                x, y = _xy(layers, y)
                ax.plot(x, y, _PROBE_STYLES[key], label=label)
                lo = min(lo, float(np.nanmin(y)))
            ax.set_title(_label(f"{name} probe"))
            ax.set_xlabel("layer")
            ax.legend(loc="best", ncols=2)
        axes[0].set_ylabel("score")
        axes[0].set_ylim(lo - 0.02 if lo < 0 else 0.0, 1.02)
        return _svg(fig, "probe-layers")


def attention_plot(att: Any) -> Optional[str]:
    """Attention mass share heatmaps (layer × head), one panel per direction.

    ``att`` is ``series["attention.share"]``: ``{"layers": [...], "heads": H,
    "directions": {"text->image": [[share per head] per layer], ...}}``; the
    share is the row-normalised attention mass a query of modality A puts on
    keys of modality B (DESIGN.md section 1.3, after VL-InterpreT,
    arXiv:2203.17247).  Each panel has its own colour scale from 0.
    """
    if not isinstance(att, Mapping) or not isinstance(att.get("directions"), Mapping):
        return None
    panels = [(str(k), _matrix(v)) for k, v in att["directions"].items()]
    panels = [(k, m) for k, m in panels if m is not None]
    if not panels:
        return None
    layers = _floats(att.get("layers"))
    rows, cols = _grid(len(panels), 4)
    with _style():
        fig = Figure(figsize=(3.1 * cols, 2.9 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, (name, mat) in zip(axes.flat, panels):
            vmax = float(np.nanmax(mat))
            im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", interpolation="none",
                           cmap="viridis", vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
            ax.grid(False)
            ax.set_title(_label(f"{name} (mean {np.nanmean(mat):.2f})"))
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            n_layers, n_heads = mat.shape
            ystep = max(1, math.ceil(n_layers / 7))
            yt = np.arange(0, n_layers, ystep)
            ax.set_yticks(yt)
            if layers is not None and layers.size == n_layers and np.isfinite(layers).all():
                ax.set_yticklabels([f"{layers[i]:g}" for i in yt])
            ax.set_xticks(np.arange(0, n_heads, max(1, math.ceil(n_heads / 7))))
            fig.colorbar(im, ax=ax, shrink=0.85, label="share")
        return _svg(fig, "attention-share")


def hidden_plot(hidden: Any) -> Optional[str]:
    """Hidden states per layer in 2-D, small multiples coloured by modality.

    ``hidden`` is ``series["hidden_2d"]``: ``{"layers": [...], "points":
    {"<layer>": {"image": [[x, y], ...], "text": [...]}}}`` (layer keys may be
    strings, as JSON makes them, or ints).  At most ``MAX_PANELS`` layers are
    drawn (evenly chosen), each with at most ``MAX_POINTS_PANEL`` points per
    modality.
    """
    if not isinstance(hidden, Mapping) or not isinstance(hidden.get("points"), Mapping):
        return None
    points = hidden["points"]
    keys: list[Any] = []
    layers = hidden.get("layers")
    if isinstance(layers, (list, tuple)) and layers:
        for layer in layers:
            for k in (str(layer), layer):
                if isinstance(k, (str, int)) and k in points:
                    keys.append(k)
                    break
    else:
        def order(k: Any) -> tuple[int, float, str]:
            try:
                return (0, float(k), "")
            except (TypeError, ValueError):
                return (1, 0.0, str(k))
        keys = sorted(points, key=order)
    panels = []
    for k in keys:
        entry = points.get(k)
        clouds = [(name, _points(v)) for name, v in _modality_items_raw(entry)]
        clouds = [(n, p) for n, p in clouds if p is not None]
        if clouds:
            panels.append((str(k), clouds))
    if not panels:
        return None
    if len(panels) > MAX_PANELS:
        idx = np.unique(np.linspace(0, len(panels) - 1, MAX_PANELS).round().astype(int))
        panels = [panels[i] for i in idx]
    rows, cols = _grid(len(panels), 4)
    with _style():
        fig = Figure(figsize=(2.5 * cols, 2.4 * rows + 0.3), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        seen: dict[str, Any] = {}
        for ax, (layer, clouds) in zip(axes.flat, panels):
            for i, (name, pts) in enumerate(clouds):
                sub = _subsample(pts, MAX_POINTS_PANEL)
                h = ax.scatter(sub[:, 0], sub[:, 1], s=6, alpha=0.6, linewidths=0,
                               color=_color(name, i))
                seen.setdefault(name, h)
            ax.set_title(_label(f"layer {layer}"))
            ax.set_xticks([])
            ax.set_yticks([])
        fig.legend(list(seen.values()), [_label(n) for n in seen], loc="outside lower center",
                   ncols=max(1, len(seen)), markerscale=2.0)
        method = hidden.get("method")
        if isinstance(method, str) and method:
            fig.suptitle(_label(f"hidden states per layer ({method})"), fontsize=10)
        return _svg(fig, "hidden-2d")


def _modality_items_raw(entry: Any) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs of a per-modality mapping, image and text first."""
    if not isinstance(entry, Mapping):
        return []
    order = {"image": 0, "text": 1}
    return sorted(((str(k), v) for k, v in entry.items()), key=lambda kv: order.get(kv[0], 2))


# --------------------------------------------------------------------------
# the example tree (hand-written SVG: words on a line, arcs above and below)
# --------------------------------------------------------------------------

_TREE_FONT = 13
_CHAR_W = 7.4  # average advance of a 13px sans-serif character, for the layout only
_GOLD = "#444444"
_OK = "#2ca02c"
_BAD = "#d62728"


def _arc(x1: float, x2: float, y: float, h: float) -> str:
    """A cubic Bézier from (x1, y) to (x2, y) whose peak is ``h`` away (h<0: above)."""
    c = y + h * 4.0 / 3.0
    return f"M{x1:.1f} {y:.1f}C{x1:.1f} {c:.1f} {x2:.1f} {c:.1f} {x2:.1f} {y:.1f}"


def tree_svg(example: Any) -> Optional[str]:
    """An example sentence with its gold tree above and predicted tree below.

    ``example`` is ``series["probe"]["example"]``: ``{"words": [...],
    "gold_heads": [...] (1-based, 0 = root, as in DepTree), "pred_edges":
    [[i, j], ...] (0-based word indices, undirected: the minimum spanning tree
    of the probe's predicted distances)}``.  Gold arcs point from head to
    dependent; a predicted edge is green when it is a gold edge (either
    direction) and red and dashed when it is not.  Out-of-range indices are
    ignored.  Returns None without words.
    """
    if not isinstance(example, Mapping):
        return None
    words = example.get("words")
    if not isinstance(words, (list, tuple)) or not words:
        return None
    words = ["" if w is None else str(w) for w in words[:MAX_TREE_WORDS]]
    n = len(words)

    gold: list[tuple[int, int]] = []  # (head, dependent), 0-based
    root: Optional[int] = None
    heads = example.get("gold_heads")
    if isinstance(heads, (list, tuple)):
        for dep, head in enumerate(heads[:n]):
            h = _num(head)
            if not math.isfinite(h) or h != int(h):
                continue
            h = int(h)
            if h == 0 and root is None:
                root = dep
            elif 1 <= h <= n and h - 1 != dep:
                gold.append((h - 1, dep))
    gold_set = {frozenset(e) for e in gold}

    pred: list[tuple[int, int]] = []
    edges = example.get("pred_edges")
    if isinstance(edges, (list, tuple)):
        for e in edges:
            if isinstance(e, (list, tuple)) and len(e) == 2:
                a, b = _num(e[0]), _num(e[1])
                if (math.isfinite(a) and math.isfinite(b) and a == int(a) and b == int(b)
                        and 0 <= a < n and 0 <= b < n and a != b):
                    pred.append((int(a), int(b)))

    widths = [max(28.0, _CHAR_W * len(w) + 14.0) for w in words]
    xs, x = [], 10.0
    for w in widths:
        xs.append(x + w / 2)
        x += w
    width = x + 10.0

    def height(i: int, j: int) -> float:
        return min(150.0, 10.0 + 11.0 * abs(i - j))

    up = max([height(a, b) for a, b in gold] + ([26.0] if root is not None else [0.0])) + 18
    down = max([height(a, b) for a, b in pred] + [0.0]) + 8
    y_gold = up + 4
    y_text = y_gold + _TREE_FONT + 2
    y_pred = y_text + 6
    legend_y = y_pred + down + 14
    total_h = legend_y + 8
    n_ok = sum(frozenset(e) in gold_set for e in pred)
    summary = (f"above: gold tree (head → dependent) · below: predicted tree; "
               f"green = gold edge, red dashed = not a gold edge · {n_ok}/{len(pred)} correct")
    width = max(width, 6.4 * len(summary) + 20.0)

    out = [f'<svg class="tree" data-plot="probe-tree" width="{width:.0f}" height="{total_h:.0f}" '
           f'viewBox="0 0 {width:.0f} {total_h:.0f}" role="img" '
           f'aria-label="gold tree above the words, predicted tree below">',
           '<defs><marker id="probe-tree-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
           'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           f'<path d="M0 0L10 5L0 10z" fill="{_GOLD}"/></marker></defs>',
           f'<g font-family="DejaVu Sans, Arial, Helvetica, sans-serif" font-size="{_TREE_FONT}">']
    for head, dep in gold:
        # leave the head a little towards the dependent so arcs sharing a word part
        x_head = xs[head] + (5.0 if dep > head else -5.0)
        out.append(f'<path class="gold" d="{_arc(x_head, xs[dep], y_gold, -height(head, dep))}" '
                   f'fill="none" stroke="{_GOLD}" stroke-width="1.3" '
                   'marker-end="url(#probe-tree-arrow)"/>')
    if root is not None:
        top = y_gold - up + 6
        out.append(f'<path class="gold root" d="M{xs[root]:.1f} {top:.1f}V{y_gold:.1f}" '
                   f'stroke="{_GOLD}" stroke-width="1.3" stroke-dasharray="2 2" '
                   'marker-end="url(#probe-tree-arrow)"/>')
        out.append(f'<text x="{xs[root] + 5:.1f}" y="{top + 8:.1f}" '
                   f'font-size="10" fill="{_GOLD}">ROOT</text>')
    for i, w in enumerate(words):
        out.append(f'<text class="word" x="{xs[i]:.1f}" y="{y_text:.1f}" '
                   f'text-anchor="middle">{escape(w)}</text>')
    for a, b in pred:
        ok = frozenset((a, b)) in gold_set
        style = f'stroke="{_OK}"' if ok else f'stroke="{_BAD}" stroke-dasharray="4 3"'
        out.append(f'<path class="pred {"ok" if ok else "bad"}" '
                   f'd="{_arc(xs[a], xs[b], y_pred, height(a, b))}" fill="none" {style} '
                   'stroke-width="1.5"/>')
    out.append(f'<text x="10" y="{legend_y:.1f}" font-size="11" fill="#555">{escape(summary)}</text>')
    out.append("</g></svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------
# attention drawn over the image (series["attention_image"])
# --------------------------------------------------------------------------

#: Most examples, words per example and layers drawn in the attention-over-image view.
ATTN_MAX_EXAMPLES = 6
ATTN_MAX_WORDS = 12
ATTN_MAX_LAYERS = 4
#: Most cells of one map (a larger grid is not drawn).
ATTN_MAX_CELLS = 4096
_ATTN_PANEL = 64  # panel height in px
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


def _contrast(vec: np.ndarray) -> np.ndarray:
    """Heat in [0, 1]: the excess over the map's mean, over max(peak excess, mean).

    ``v = clip((x - mean) / max(max(x) - mean, mean), 0, 1)``: uniform attention
    shows no heat, a one-hot map shows heat on its one cell only, and a cell
    needs at least twice the mean to reach full heat.
    """
    finite = np.isfinite(vec)
    if not finite.any():
        return np.full(vec.shape, np.nan)
    mean = float(np.mean(vec[finite]))
    scale = max(float(np.max(vec[finite])) - mean, mean)
    if not scale > 0:
        return np.where(finite, 0.0, np.nan)
    return np.where(finite, np.clip((vec - mean) / scale, 0.0, 1.0), np.nan)


def _png_uri(rgba: np.ndarray) -> str:
    """A PNG data URI of an ``(h, w, 4)`` uint8 array."""
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_size(uri: str) -> Optional[tuple[int, int]]:
    """(width, height) from a PNG data URI's IHDR chunk, or None."""
    import base64
    import binascii

    if not uri.startswith("data:image/png;base64,"):
        return None
    try:
        head = base64.b64decode(uri[22:22 + 44])
    except (binascii.Error, ValueError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return (w, h) if w > 0 and h > 0 else None


def _int_pair(value: Any) -> Optional[tuple[int, int]]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        a, b = _num(value[0]), _num(value[1])
        if math.isfinite(a) and math.isfinite(b) and a == int(a) and b == int(b) and a >= 1 and b >= 1:
            return int(a), int(b)
    return None


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
            out.append(f'<image href="{_png_uri(_heat_rgba(norm.reshape(1, cols)))}" y="{h - 10:.0f}" '
                       f'width="{w:.0f}" height="10" preserveAspectRatio="none" '
                       'style="image-rendering:pixelated"/>')
        else:
            out.append(f'<image href="{_png_uri(_heat_rgba(norm.reshape(rows, cols)))}" width="{w:.0f}" '
                       f'height="{h:.0f}" preserveAspectRatio="none" style="image-rendering:pixelated"/>')
        out.append(f'<text class="mass" x="{w / 2:.1f}" y="{h + 11:.1f}" text-anchor="middle" font-size="9" '
                   f'fill="#57606a">Σ {mass:.2f}</text>')
    out.append(f'<rect width="{w:.0f}" height="{h:.0f}" fill="none" stroke="#d0d7de"/></g>')
    return out


def _attention_example(ex: Any, index: int, head: Optional[int]) -> Optional[str]:
    """The small multiples of one example (see :func:`attention_image_svg`)."""
    if not isinstance(ex, Mapping):
        return None
    grid = _int_pair(ex.get("grid"))
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
        parsed = [_floats(b) for b in raw_boxes]
        if all(b is not None and b.size == 4 and np.isfinite(b).all() for b in parsed):
            boxes = [np.clip(b, 0.0, 1.0).tolist() for b in parsed]  # type: ignore[union-attr]

    thumb = ex.get("thumbnail")
    thumb = thumb if isinstance(thumb, str) and _DATA_IMAGE_RE.fullmatch(thumb) else None
    size = _png_size(thumb) if thumb else None
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
        return _floats(value) if isinstance(value, (list, tuple)) else None

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
    note = (f"{_KIND_TEXT.get(kind, kind or 'attention map')}{where}. Heat: attention above the panel's mean "
            f"(full at 2× the mean or the peak); Σ: total weight on the image.")
    width = max(width, 6.2 * len(note) + 10, 6.6 * len(title) + 10)
    height = y0 + row_h * len(table) + 4
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
    for i, (label, vectors) in enumerate(table):
        y = y0 + i * row_h
        out.append(f'<text class="row" x="{x_label:.0f}" y="{y + h / 2 + 4:.1f}" font-size="10">'
                   f'{escape(label)}</text>')
        for j, v in enumerate(vectors):
            out.extend(_attention_panel(v, grid, boxes, x0 + j * col_w, y, w, h,
                                        ref if thumb is not None else None))
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
    (red to yellow, alpha 0.8 × :func:`_contrast`, the excess over the panel's
    mean) stretched over it with
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
    head = int(head) if _is_int(head) else None
    blocks = [svg for i, ex in enumerate(entry["examples"][:ATTN_MAX_EXAMPLES])
              if (svg := _attention_example(ex, i, head)) is not None]
    if not blocks:
        return None
    return '<div id="attention-over-image" class="attention-image">\n' + "\n".join(blocks) + "\n</div>"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
